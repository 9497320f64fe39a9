#!/usr/bin/env python3
"""Shutdown budget under stress (issue 7, SPEC §4 "Shutdown budget").

Each trial starts flowinit as PID 1 of a fresh PID namespace
(`unshare -pf --mount-proc`) with 30 units: 5 that ignore SIGTERM
(`trap '' TERM`, stop_timeout 60s; two of them in a `requires` chain), more
`requires` chains, 3 units flooding numbered log lines as fast as they can,
a router unit with a python3 backend, and plain services with tcp/exec/http
readiness probes. Once `flowinit status --json` shows every unit
ready/running, a load thread hits the router and flowinit gets SIGTERM.

Per trial it asserts:
  * flowinit (i.e. the namespace's init, seen through unshare) exits within
    the budget + slack (default 3 s + 1 s), with exit code 0;
  * nothing survives: no process is left in the trial's PID namespace, and
    no host process has the trial's temp dir in its cmdline or cwd;
  * the log names every SIGTERM-ignoring unit as one that used up the budget
    ("shutdown budget of … spent; still stopping: a, b; not yet signalled
    (waiting for dependents): c" or "unit X: sending SIGKILL … the shutdown
    budget left it 1.2s (stop_timeout 1m)", its share of the budget);
  * no unit is restarted after the SIGTERM ("…, restarting in …");
  * no panic in flowinit's output ("panicked", its panic hook's "internal
    error (a bug)", "supervisor crashed").

    nice -n 10 python3 bench/shutdown_stress.py --trials 50

Needs root (unshare -p). Stdlib only. See docs/soak.md.
"""

import argparse, http.client, os, re, shutil, signal, statistics, sys, tempfile, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak"))
import harness  # noqa: E402

STUBBORN = ["stubborn-1", "stubborn-2", "stubborn-3", "chain-db", "chain-web"]


def q(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def write_units(d, bindir, ports):
    """30 units; returns their names."""
    units = {}
    wd = "working_dir = %s\n" % q(d)
    py = "python3"

    def svc(name, body, unit="", extra=""):
        units[name] = ("[unit]\n" + unit + "\n[service]\n" + wd + body + "\n" + extra)

    stubborn_shell = "trap '' TERM; while :; do sleep 1; done"
    for n in ("stubborn-1", "stubborn-2", "stubborn-3"):
        svc(n, 'shell = %s\nstop_timeout = "60s"\n' % q(stubborn_shell))
    # chain-db (ignores TERM) <- chain-app <- chain-web (ignores TERM)
    svc("chain-db", 'shell = %s\nstop_timeout = "60s"\n' % q("trap '' TERM; exec %s %s/svc.py tcp %d" % (py, bindir, ports["chain-db"])),
        extra='[readiness]\ntcp = "127.0.0.1:%d"\ninterval = "100ms"\n' % ports["chain-db"])
    svc("chain-app", 'command = ["%s", "%s/svc.py", "file", "%s/chain-app.ready"]\n' % (py, bindir, d),
        unit='requires = ["chain-db"]\n',
        extra='[readiness]\nexec = ["test", "-e", "%s/chain-app.ready"]\ninterval = "100ms"\n' % d)
    svc("chain-web", 'shell = %s\nstop_timeout = "60s"\n' % q(stubborn_shell), unit='requires = ["chain-app"]\n')
    # a well-behaved chain
    svc("c2-a", 'command = ["%s", "%s/svc.py", "tcp", "%d"]\n' % (py, bindir, ports["c2-a"]),
        extra='[readiness]\ntcp = "127.0.0.1:%d"\ninterval = "100ms"\n' % ports["c2-a"])
    svc("c2-b", 'command = ["sleep", "100000"]\n', unit='requires = ["c2-a"]\n')
    svc("c2-c", 'command = ["sleep", "100000"]\n', unit='requires = ["c2-b"]\nwants = ["c2-a"]\n')
    for i in (1, 2, 3):
        svc("flood-%d" % i, 'command = ["%s", "%s/flood.py", "flood-%d"]\n' % (py, bindir, i))
    # The router's drain shares the budget with the units behind it in
    # proportion to their stop_timeouts (docs/operations.md, "Shutdown
    # budget and the router's drain"): router 2 s + backend 1 s fit the 3 s
    # budget, so the 1 s request in flight at SIGTERM gets its whole drain.
    # With the backend's default 10 s the router would get 3 x 2/12 = 0.5 s.
    svc("backend", 'command = ["%s", "%s/svc.py", "http", "%d"]\nstop_timeout = "1s"\n' % (py, bindir, ports["backend"]),
        extra='[readiness]\nhttp = "http://127.0.0.1:%d/ping"\ninterval = "100ms"\n' % ports["backend"])
    units["router"] = ('[router]\nlisten = "127.0.0.1:%d"\nstop_timeout = "2s"\naccess_log = false\n'
                       '[[router.routes]]\nprefix = "/"\nupstream = "http://127.0.0.1:%d"\nunit = "backend"\n'
                       % (ports["router"], ports["backend"]))
    # plain services, some with probes and wants
    for i in range(1, 17):
        name = "svc-%02d" % i
        if i % 4 == 1:
            svc(name, 'command = ["%s", "%s/svc.py", "file", "%s/%s.ready"]\n' % (py, bindir, d, name),
                extra='[readiness]\nexec = ["test", "-e", "%s/%s.ready"]\ninterval = "200ms"\n' % (d, name))
        elif i % 4 == 2:
            svc(name, 'shell = "exec sleep 100000"\nstop_timeout = "5s"\n', unit='wants = ["c2-a"]\n')
        else:
            svc(name, 'command = ["sleep", "100000"]\n', unit='after = ["svc-01"]\n' if i > 1 else "")
    assert len(units) == 30, len(units)
    ud = os.path.join(d, "units")
    shutil.rmtree(ud, ignore_errors=True)
    os.makedirs(ud)
    for name, text in units.items():
        with open(os.path.join(ud, name + ".toml"), "w") as f:
            f.write(text)
    return sorted(units)


class Drain(threading.Thread):
    """Reads flowinit's stdout (the floods) so the pipe never stalls; counts lines."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd, self.lines, self.bytes = fd, 0, 0

    def run(self):
        while True:
            b = os.read(self.fd, 1 << 20)
            if not b:
                break
            self.lines += b.count(b"\n")
            self.bytes += len(b)
        os.close(self.fd)


class Load(threading.Thread):
    """GETs through the router on keep-alive connections until stopped."""

    def __init__(self, port, stop):
        super().__init__(daemon=True)
        self.port, self.stop, self.counts = port, stop, {}

    def count(self, k):
        self.counts[k] = self.counts.get(k, 0) + 1

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/load")
                r = conn.getresponse()
                r.read()
                self.count(str(r.status))
                if r.will_close:
                    conn.close()
                    conn = None
            except ConnectionRefusedError:
                self.count("refused")
                conn = None
                time.sleep(0.01)
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                self.count(type(e).__name__)
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.01)


def trial(n, args, binary, base):
    d = os.path.join(base, "t%02d" % n)
    os.makedirs(d)
    bindir = os.path.join(d, "bin")
    shutil.copytree(harness.HERE, bindir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ports = {k: harness.free_port() for k in ("chain-db", "c2-a", "backend", "router")}
    names = write_units(d, bindir, ports)
    res = {"n": n, "ok": False, "time": None, "code": None, "problems": [], "named": [], "load": {}}
    rfd, wfd = os.pipe()
    errf = open(os.path.join(d, "flowinit.err"), "wb")
    f = None
    drain = Drain(rfd)
    try:
        f = harness.Flowinit(binary, os.path.join(d, "units"), os.path.join(d, "ctl.sock"),
                             args=["--shutdown-timeout", "%gs" % args.budget], stdout=wfd, stderr=errf)
        os.close(wfd)
        wfd = None
        drain.start()
        deadline = time.monotonic() + args.start_timeout
        units = None
        while time.monotonic() < deadline:
            units = f.status()
            if units and len(units) == 30 and all(u["state"] in ("ready", "running") for u in units):
                break
            if not f.alive():
                break
            time.sleep(0.1)
        else:
            pass
        if not units or not all(u["state"] in ("ready", "running") for u in units):
            bad = [(u["name"], u["state"], u["reason"]) for u in (units or []) if u["state"] not in ("ready", "running")]
            res["problems"].append("not all units up after %ss: %s" % (args.start_timeout, bad or "no status"))
            return res
        ns = f.ns
        stop = threading.Event()
        loads = [Load(ports["router"], stop) for _ in range(args.load_threads)]
        for t in loads:
            t.start()
        slow = {}

        def in_flight():
            # sent before the signal, answered after it: must not be cut
            try:
                c = http.client.HTTPConnection("127.0.0.1", ports["router"], timeout=args.budget + 5)
                c.request("GET", "/slow?ms=%d" % args.slow_ms)
                r = c.getresponse()
                slow["status"] = r.status
                slow["body"] = r.read()[:100]
                slow["at"] = time.monotonic()
            except Exception as e:  # noqa: BLE001 - reported as the outcome
                slow["status"] = type(e).__name__
        slow_t = threading.Thread(target=in_flight, daemon=True)
        slow_t.start()
        time.sleep(args.pre_load)
        t0 = time.monotonic()
        f.signal(signal.SIGTERM)
        code = f.wait(args.budget + 30)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in loads:
            t.join(5)
            for k, v in t.counts.items():
                res["load"][k] = res["load"].get(k, 0) + v
        res["time"], res["code"] = elapsed, code
        slow_t.join(args.budget + 6)
        res["slow"] = slow.get("status")
        if slow.get("status") != 200:
            res["problems"].append("request in flight at SIGTERM (GET /slow?ms=%d through the router) got %s, not 200"
                                   % (args.slow_ms, slow.get("status")))
        if code is None:
            res["problems"].append("flowinit did not exit within %ss of SIGTERM" % (args.budget + 30))
            return res
        if code != 0:
            res["problems"].append("exit code %s, expected 0" % code)
        if elapsed > args.budget + args.slack:
            res["problems"].append("exit took %.2fs > budget %gs + slack %gs" % (elapsed, args.budget, args.slack))
        # nothing left: the namespace (by its inode) and the temp dir
        left_ns = [p for p in harness.all_pids() if harness.pid_ns(p) == ns]
        if left_ns:
            res["problems"].append("processes left in the namespace: %s" % left_ns)
        left = harness.leftovers_by_path(d)
        if left:
            res["problems"].append("host processes still using %s: %s" % (d, left))
        drain.join(5)
        errf.flush()
        err = harness.read(os.path.join(d, "flowinit.err"))
        res["flood_lines"] = drain.lines
        if harness.panicked(err):
            res["problems"].append("flowinit panicked: %s" % harness.panic_excerpt(err))
        named = set()
        for m in re.finditer(r"shutdown budget of \S+ spent; still stopping: ([^;\n]*)"
                             r"(?:; not yet signalled \(waiting for dependents\): ([^;\n]*))?", err):
            for g in m.groups():
                named.update(x.strip() for x in (g or "").split(",") if x.strip())
        for m in re.finditer(r"unit (\S+): sending SIGKILL to process group \d+: the shutdown budget left it ", err):
            named.add(m.group(1))
        after_term = err.split("SIGTERM received", 1)[1] if "SIGTERM received" in err else ""
        restarts = re.findall(r"unit (\S+) [^\n]*, restarting in ", after_term)
        if restarts:
            res["problems"].append("units restarted during the shutdown: %s" % sorted(set(restarts)))
        res["named"] = sorted(named)
        res["budget_line"] = bool(re.search(r"shutdown budget of \S+ spent", err))
        missing = [u for u in STUBBORN if u not in named]
        if missing:
            res["problems"].append("log does not name %s as using up the budget" % missing)
        res["innocent"] = sorted(named - set(STUBBORN) - {"none"})
        res["ok"] = not res["problems"]
        return res
    except Exception as e:  # a harness failure is a failed trial, not a crash of the run
        res["problems"].append("harness error: %r" % e)
        return res
    finally:
        if wfd is not None:
            os.close(wfd)
        if f is not None and f.alive():
            f.kill()
        errf.close()
        if res["ok"] and not args.keep:
            harness.rmtree(d)
        else:
            # keep only the log of a failed trial
            for x in os.listdir(d):
                if x != "flowinit.err":
                    p = os.path.join(d, x)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--budget", type=float, default=3.0, help="--shutdown-timeout in seconds (default 3)")
    ap.add_argument("--slack", type=float, default=1.0, help="allowed beyond the budget (default 1 s)")
    ap.add_argument("--load-threads", type=int, default=4)
    ap.add_argument("--pre-load", type=float, default=0.3, help="seconds of router load before SIGTERM")
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--slow-ms", type=int, default=1000,
                    help="a request in flight at SIGTERM takes this long at the backend (default 1000)")
    ap.add_argument("--flowinit", help="binary (default $FLOWINIT, /tmp/soak-target/release/flowinit, target/release)")
    ap.add_argument("--keep", action="store_true", help="keep every trial's temp dir")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (unshare -p)")
    # `timeout` / kill: unwind through the finally blocks that kill flowinit
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    binary = harness.find_flowinit(args.flowinit)
    base = tempfile.mkdtemp(prefix="flowinit-stress-")
    print("flowinit %s; %d trials; budget %gs + %gs slack; temp %s" % (binary, args.trials, args.budget, args.slack, base))
    results = []
    t_start = time.time()
    try:
        for n in range(1, args.trials + 1):
            r = trial(n, args, binary, base)
            results.append(r)
            load = " ".join("%s:%d" % kv for kv in sorted(r["load"].items()))
            print("trial %2d: %s exit=%s time=%s named=[%s]%s load={%s} in_flight=%s flood_lines=%s%s" % (
                n, "PASS" if r["ok"] else "FAIL", r["code"],
                "%.2fs" % r["time"] if r["time"] is not None else "-",
                ", ".join(r["named"]),
                " (not SIGTERM-ignoring: %s)" % ", ".join(r["innocent"]) if r.get("innocent") else "",
                load, r.get("slow", "-"), r.get("flood_lines", "-"),
                "".join("\n    - " + p for p in r["problems"])), flush=True)
    except KeyboardInterrupt:
        print("interrupted")
    times = [r["time"] for r in results if r["time"] is not None]
    passed = sum(r["ok"] for r in results)
    print("\n%d trials in %.0fs: %d passed, %d failed" % (len(results), time.time() - t_start, passed, len(results) - passed))
    if times:
        print("exit time after SIGTERM: median %.2fs, min %.2fs, max %.2fs (budget %gs, limit %gs)" % (
            statistics.median(times), min(times), max(times), args.budget, args.budget + args.slack))
    innocent = sorted({u for r in results for u in r.get("innocent", [])})
    if innocent:
        print("also named in the budget line (waiting behind a SIGTERM-ignoring dependent, never signalled): %s"
              % ", ".join(innocent))
    fails = [r for r in results if not r["ok"]]
    if not fails and not args.keep:
        harness.rmtree(base)
    else:
        print("kept under %s (%s)" % (base, "--keep" if args.keep else "flowinit.err of the failed trials"))
    sys.exit(0 if results and not fails else 1)


if __name__ == "__main__":
    main()
