#!/usr/bin/env python3
"""Chaos soak (issue 7): flowinit as PID 1 of a PID namespace, 30 units, and a
driver that for --seconds (default 300) randomly

  * SIGKILLs services' main processes and their children (pids come from
    `flowinit status --json`, namespace pids mapped to host pids through
    the NSpid lines of /proc/PID/status, checked again right before the kill);
  * floods the log (a unit writes 100k lines at full speed on a trigger);
  * starts orphan storms (a unit forks 200 double-forked children on a
    trigger, half of them setsid, plus 2 long-lived setsid sleepers);
  * reloads with valid edits (change/add/remove units) and invalid ones
    (TOML syntax, unknown key, unknown dependency, cycle, missing program,
    bad file name), alternately by SIGHUP and by `flowinit reload`;
  * sends bursts of requests through the router (on top of a steady stream);

while a `numbered` unit writes numbered lines and flowinit's RSS is sampled.

Afterwards it asserts:
  * flowinit never exited early and never panicked (no "panicked", no "internal error (a bug)" from its panic hook, no "supervisor crashed" in its stderr);
  * every unit is up again, none failed;
  * zero zombies left in the namespace (Z-state processes of the trial's
    PID namespace seen in three samples over two seconds);
  * every SIGKILL that hit a unit's main process (verified as the main pid of
    the unit in status at kill time), and every kill of a child of a
    fail-fast worker, is matched by a restart: per unit the `restarts`
    counter of status --json grew by at least the number of distinct runs
    hit, and flowinit's log shows, for each killed pid, "unit X started (pid
    P)" followed by a "restarting in" line of that unit;
  * no numbered line lost or duplicated: within each run of the writer the
    sequence is consecutive from 0, and reaches at least what the writer
    recorded as written (so a lost tail is caught too); no line is mangled;
  * invalid reloads are refused naming the bad file, and leave every running
    unit alone; valid ones apply and leave unchanged units alone;
  * flowinit's RSS after the warm-up stays under --rss-factor (2) times the
    peak of the warm-up;
  * SIGTERM then makes flowinit exit 0 within the budget (+1 s slack), and no
    process of the run is left on the host.

    nice -n 10 python3 bench/soak.py --seconds 300

Needs root (unshare -p). Stdlib only. See docs/soak.md.
"""

import argparse, http.client, json, os, random, re, shutil, signal, sys, tempfile, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak"))
import harness  # noqa: E402

RESTART = ('restart = "on-failure"\nrestart_delay = "100ms"\nrestart_delay_max = "1s"\n'
           'start_limit_burst = 500\nstart_limit_interval = "1m"\nstop_timeout = "3s"\n')
UP = ("ready", "running")


def q(s):
    return json.dumps(s)


class Soak:
    def __init__(self, args, binary):
        self.args, self.binary = args, binary
        self.rng = random.Random(args.seed)
        self.d = tempfile.mkdtemp(prefix="flowinit-soak-")
        self.bindir = os.path.join(self.d, "bin")
        shutil.copytree(harness.HERE, self.bindir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.ud = os.path.join(self.d, "units")
        os.makedirs(self.ud)
        self.ports = {k: harness.free_port() for k in ("db", "backend", "router", "api-1", "api-2", "cache")}
        self.problems = []
        self.notes = []
        self.stats = dict(kills_main=0, kills_child_failfast=0, kills_child_respawn=0, kill_misses=0, floods=0,
                          storms=0, orphans=0, reload_ok=0, reload_refused=0, bursts=0)
        self.hits = {}          # unit -> set of main ns pids whose run was hit
        self.main_kills = []    # (unit, ns pid, reason expected)
        self.extra_n = 0
        self.extras = []
        self.gen = {}
        self.rss = []           # (t, kib)
        self.zombie_max = 0
        self.stop_evt = threading.Event()
        self.router_counts = {}
        self.router_max_gap = 0.0
        self.err_path = os.path.join(self.d, "flowinit.err")
        self.err_off = 0

    # ---------------------------------------------------------------- units
    def unit(self, name, text):
        with open(os.path.join(self.ud, name + ".toml"), "w") as f:
            f.write(text)

    def write_units(self):
        d, b, p = self.d, self.bindir, self.ports
        wd = "working_dir = %s\n" % q(d)

        def svc(name, cmd, unit="", extra="", restart=RESTART):
            self.unit(name, "[unit]\n%s\n[service]\ncommand = %s\n%s%s\n%s" % (unit, q(cmd), wd, restart, extra))

        py = "python3"
        svc("db", [py, b + "/svc.py", "tcp", str(p["db"])],
            extra='[readiness]\ntcp = "127.0.0.1:%d"\ninterval = "100ms"\n'
                  '[liveness]\ntcp = "127.0.0.1:%d"\ninterval = "2s"\ntimeout = "3s"\nfailures = 3\n' % (p["db"], p["db"]))
        svc("backend", [py, b + "/svc.py", "http", str(p["backend"])], unit='requires = ["db"]\n',
            extra='[readiness]\nhttp = "http://127.0.0.1:%d/ping"\ninterval = "100ms"\n'
                  '[liveness]\nhttp = "http://127.0.0.1:%d/ping"\ninterval = "2s"\ntimeout = "3s"\nfailures = 3\n'
                  % (p["backend"], p["backend"]))
        self.unit("router", '[unit]\ndescription = "soak router"\n[router]\nlisten = "127.0.0.1:%d"\nstop_timeout = "2s"\n'
                  '[[router.routes]]\nprefix = "/api/"\nupstream = "http://127.0.0.1:%d"\nunit = "api-1"\n'
                  '[[router.routes]]\nprefix = "/"\nupstream = "http://127.0.0.1:%d"\nunit = "backend"\n'
                  % (p["router"], p["api-1"], p["backend"]))
        svc("api-1", [py, b + "/svc.py", "http", str(p["api-1"])], unit='requires = ["db"]\n',
            extra='[readiness]\nhttp = "http://127.0.0.1:%d/"\ninterval = "100ms"\n' % p["api-1"])
        svc("api-2", [py, b + "/svc.py", "http", str(p["api-2"])], unit='requires = ["api-1"]\nwants = ["cache"]\n',
            extra='[readiness]\nhttp = "http://127.0.0.1:%d/"\ninterval = "100ms"\n' % p["api-2"])
        svc("cache", [py, b + "/svc.py", "tcp", str(p["cache"])],
            extra='[readiness]\ntcp = "127.0.0.1:%d"\ninterval = "100ms"\n' % p["cache"])
        svc("queue", [py, b + "/svc.py", "file", d + "/queue.ready"], unit='requires = ["cache"]\n',
            extra='[readiness]\nexec = ["test", "-e", %s]\ninterval = "100ms"\n'
                  '[liveness]\nexec = ["test", "-e", %s]\ninterval = "2s"\nfailures = 3\n'
                  % (q(d + "/queue.ready"), q(d + "/queue.ready")))
        svc("numbered", [py, b + "/numbered.py", d + "/progress", "50", "0.01"])
        svc("flood", [py, b + "/flood.py", "flood", d + "/flood.trigger", "100000"])
        svc("orphans", ["sh", b + "/orphans.sh", d + "/orphans.trigger", "200", "2"])
        for i in (1, 2, 3):
            svc("wk-ff-%d" % i, [py, b + "/svc.py", "workers", "3", "failfast"], unit='wants = ["queue"]\n')
            svc("wk-rs-%d" % i, [py, b + "/svc.py", "workers", "3", "respawn"], unit='wants = ["cache"]\n')
        for i in (1, 2, 3):
            self.gen["reload-%d" % i] = 0
            self.write_reload_unit("reload-%d" % i)
        for i in range(1, 12):
            name = "plain-%02d" % i
            if i % 3 == 0:
                svc(name, [py, b + "/svc.py", "file", "%s/%s.ready" % (d, name)], unit='wants = ["db"]\n',
                    extra='[readiness]\nexec = ["test", "-e", %s]\ninterval = "200ms"\n' % q("%s/%s.ready" % (d, name)))
            elif i % 3 == 1:
                svc(name, ["sleep", "100000"], unit='requires = ["queue"]\n' if i == 4 else "")
            else:
                self.unit(name, "[unit]\nafter = [\"cache\"]\n[service]\nshell = \"exec sleep 100000\"\n%s%s" % (wd, RESTART))
        n = len([x for x in os.listdir(self.ud) if x.endswith(".toml")])
        assert n == 30, n

    def write_reload_unit(self, name, extra_service=""):
        self.unit(name, '[service]\ncommand = ["sleep", "100000"]\nworking_dir = %s\nenv = { GEN = "%d" }\n%s'
                  % (q(self.d), self.gen[name], extra_service))

    # ------------------------------------------------------------ plumbing
    def start(self):
        rfd, wfd = os.pipe()
        self.errf = open(self.err_path, "wb")
        self.f = harness.Flowinit(self.binary, self.ud, os.path.join(self.d, "ctl.sock"),
                                  args=["--shutdown-timeout", "%gs" % self.args.budget], stdout=wfd, stderr=self.errf)
        os.close(wfd)
        self.reader = threading.Thread(target=self.read_stdout, args=(rfd,), daemon=True)
        self.reader.start()

    def read_stdout(self, fd):
        """Checks the numbered lines as they come; counts the others."""
        pat = re.compile(rb"numbered run=([0-9a-f]+) seq=(\d+) pad=x{40}")
        self.runs = {}        # run -> [next expected, lines, first seq]
        self.num_lines = self.other_lines = 0
        self.num_bad = []     # (kind, detail)
        with os.fdopen(fd, "rb", buffering=1 << 20) as f:
            for line in f:
                if not line.startswith(b"numbered "):
                    self.other_lines += 1
                    continue
                head, sep, msg = line.rstrip(b"\n").partition(b" | ")
                if not sep or head.strip() != b"numbered":
                    self.other_lines += 1
                    continue
                m = pat.fullmatch(msg)
                if not m:
                    if len(self.num_bad) < 20:
                        self.num_bad.append(("mangled", msg[:200]))
                    continue
                self.num_lines += 1
                run, seq = m.group(1).decode(), int(m.group(2))
                r = self.runs.get(run)
                if r is None:
                    r = self.runs[run] = [0, 0, seq]
                    if seq != 0:
                        self.num_bad.append(("run %s starts at seq %d" % (run, seq), b""))
                if seq != r[0] and len(self.num_bad) < 20:
                    self.num_bad.append(("run %s: expected seq %d, got %d (%s)" % (
                        run, r[0], seq, "gap" if seq > r[0] else "duplicate/reorder"), b""))
                r[0] = max(r[0], seq + 1)
                r[1] += 1

    def new_stderr(self):
        self.errf.flush()
        with open(self.err_path, "rb") as f:
            f.seek(self.err_off)
            data = f.read()
        self.err_off += len(data)
        return data.decode("utf-8", "replace")

    def stderr_all(self):
        return harness.read(self.err_path)

    def status(self):
        for _ in range(3):
            s = self.f.status()
            if s is not None:
                return {u["name"]: u for u in s}
            time.sleep(0.2)
        self.problems.append("status --json did not answer (t=%.0fs)" % (time.monotonic() - self.t0))
        return {}

    def check_alive(self):
        if not self.f.alive():
            raise RuntimeError("flowinit exited during the soak (code %s)" % self.f.outer.returncode)

    def wait_all_up(self, timeout):
        deadline = time.monotonic() + timeout
        st = {}
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.status()
            if st and all(u["state"] in UP for u in st.values()):
                return st, []
            time.sleep(0.25)
        return st, [(n, u["state"], u["reason"]) for n, u in st.items() if u["state"] not in UP]

    # ---------------------------------------------------------- samplers
    def sampler(self):
        while not self.stop_evt.wait(self.args.rss_every):
            k = harness.rss_kib(self.f.pid)
            if k is not None:
                self.rss.append((time.monotonic() - self.t0, k))
            procs = self.f.ns_processes()
            z = sum(1 for v in procs.values() if v[1] == "Z")
            self.zombie_max = max(self.zombie_max, z)
            self.nprocs_max = max(getattr(self, "nprocs_max", 0), len(procs))

    def http_get(self, conn, path):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r

    def traffic(self):
        conn, last_ok, rng = None, time.monotonic(), random.Random(self.args.seed + 1)
        while not self.stop_evt.is_set():
            key = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.ports["router"], timeout=5)
                r = self.http_get(conn, rng.choice(["/", "/api/x", "/ping", "/deep/path?q=1"]))
                key = str(r.status)
                last_ok = time.monotonic()
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                key = type(e).__name__
                if conn:
                    conn.close()
                conn = None
                self.router_max_gap = max(self.router_max_gap, time.monotonic() - last_ok)
            self.router_counts[key] = self.router_counts.get(key, 0) + 1
            time.sleep(0.05)

    # ------------------------------------------------------------ actions
    def ns_map(self):
        procs = self.f.ns_processes()
        return {v[0]: h for h, v in procs.items() if v[1] not in ("Z", "X")}, procs

    def verified(self, host, nspid):
        nsp = harness.ns_pids(host)
        st = harness.stat_fields(host)
        return nsp and nsp[-1] == nspid and harness.pid_ns(host) == self.f.ns and st and st[0] not in ("Z", "X")

    KILLABLE = ("db", "backend", "api-1", "api-2", "cache", "queue", "numbered", "flood", "orphans",
                "wk-ff-1", "wk-ff-2", "wk-ff-3", "wk-rs-1", "wk-rs-2", "wk-rs-3") + tuple(
                    "plain-%02d" % i for i in range(1, 12))

    def act_kill_main(self):
        st = self.status()
        cands = [n for n in self.KILLABLE if n in st and st[n]["pid"] and st[n]["state"] in ("ready", "running", "starting")]
        if not cands:
            return
        name = self.rng.choice(cands)
        nspid = st[name]["pid"]
        m, _ = self.ns_map()
        host = m.get(nspid)
        if host is None or not self.verified(host, nspid):
            self.stats["kill_misses"] += 1
            return
        try:
            os.kill(host, signal.SIGKILL)
        except ProcessLookupError:
            self.stats["kill_misses"] += 1
            return
        self.stats["kills_main"] += 1
        self.hits.setdefault(name, set()).add(nspid)
        self.main_kills.append((name, nspid, "killed by SIGKILL"))

    def act_kill_child(self):
        st = self.status()
        cands = [n for n in self.KILLABLE if n.startswith("wk-") and n in st and st[n]["pid"]]
        if not cands:
            return
        name = self.rng.choice(cands)
        nspid = st[name]["pid"]
        m, procs = self.ns_map()
        host = m.get(nspid)
        if host is None or not self.verified(host, nspid):
            self.stats["kill_misses"] += 1
            return
        kids = [c for c in harness.children(host) if procs.get(c, (0, "Z"))[1] not in ("Z", "X")]
        if not kids:
            self.stats["kill_misses"] += 1
            return
        victim = self.rng.choice(kids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            self.stats["kill_misses"] += 1
            return
        if name.startswith("wk-ff-"):
            self.stats["kills_child_failfast"] += 1
            if nspid not in self.hits.setdefault(name, set()):
                self.hits[name].add(nspid)
                self.main_kills.append((name, nspid, "exited 1"))
        else:
            self.stats["kills_child_respawn"] += 1

    def act_flood(self):
        open(os.path.join(self.d, "flood.trigger"), "w").close()
        self.stats["floods"] += 1

    def act_storm(self):
        open(os.path.join(self.d, "orphans.trigger"), "w").close()
        self.stats["storms"] += 1
        self.stats["orphans"] += 202

    def act_burst(self):
        def one():
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.ports["router"], timeout=5)
                for _ in range(50):
                    self.http_get(c, "/burst")
                c.close()
            except (OSError, http.client.HTTPException):
                pass
        ts = [threading.Thread(target=one, daemon=True) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.stats["bursts"] += 1

    # reloads -----------------------------------------------------------
    def reload(self, how):
        """Returns (ok, text) of one reload by socket or SIGHUP."""
        if how == "socket":
            code, out, err = self.f.ctl("reload", timeout=60)
            return code == 0, out + err
        self.new_stderr()
        self.f.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        buf = ""
        while time.monotonic() < deadline:
            buf += self.new_stderr()
            m = re.search(r"reload done: ([^\n]*)", buf)
            if m:
                return True, m.group(1)
            if "reload refused" in buf or "reload failed" in buf:
                time.sleep(0.3)  # one error line per bad file: let the others arrive
                return False, buf + self.new_stderr()
            time.sleep(0.1)
        return None, buf

    def compare(self, before, after, edited, what):
        for n, u in before.items():
            if n in edited or n not in after:
                continue
            a = after[n]
            if a["restarts"] < u["restarts"]:
                self.problems.append("%s: restarts of %s went back from %d to %d" % (what, n, u["restarts"], a["restarts"]))
            if u["pid"] and a["pid"] and u["pid"] != a["pid"] and a["restarts"] == u["restarts"] and n != "router":
                self.problems.append("%s: unchanged unit %s got a new process (pid %s -> %s) without a restart"
                                     % (what, n, u["pid"], a["pid"]))

    def act_reload_valid(self):
        how = self.rng.choice(["socket", "sighup"])
        kind = self.rng.choice(["change", "add", "remove"] if self.extras else ["change", "add"])
        before = self.status()
        if kind == "change":
            name = self.rng.choice(sorted(self.gen))
            self.gen[name] += 1
            self.write_reload_unit(name)
            expect = "changed: %s" % name
        elif kind == "add":
            self.extra_n += 1
            name = "extra-%d" % self.extra_n
            self.unit(name, '[unit]\nwants = ["db"]\n[service]\ncommand = ["sleep", "100000"]\nworking_dir = %s\n' % q(self.d))
            self.extras.append(name)
            expect = "added: %s" % name
        else:
            name = self.extras.pop(self.rng.randrange(len(self.extras)))
            os.unlink(os.path.join(self.ud, name + ".toml"))
            expect = "removed: %s" % name
        ok, text = self.reload(how)
        if ok is None:
            self.problems.append("valid reload (%s, %s %s) got no answer within 60s" % (how, kind, name))
            return
        if not ok or expect not in text:
            self.problems.append("valid reload (%s, %s %s) failed or did not say %r: %s" % (how, kind, name, expect, text[-500:]))
            return
        self.stats["reload_ok"] += 1
        # the edit lands: changed/added up with a new process, removed gone
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = self.status()
            if kind == "remove":
                if name not in after or after[name]["state"] == "stopped":
                    break
            elif name in after and after[name]["state"] in UP and (
                    kind == "add" or after[name]["pid"] != before.get(name, {}).get("pid")):
                break
            time.sleep(0.2)
        else:
            self.problems.append("reload (%s, %s %s): not applied within 20s: %s" % (how, kind, name, after.get(name)))
        self.compare(before, after, {name}, "valid reload (%s %s)" % (kind, name))

    def act_reload_invalid(self):
        how = self.rng.choice(["socket", "sighup"])
        kind = self.rng.choice(["syntax", "unknown-key", "unknown-dep", "cycle", "missing-program", "bad-name"])
        wd = "working_dir = %s\n" % q(self.d)
        made, restore = [], None
        if kind == "syntax":
            made, expect = ["zz-bad"], "zz-bad.toml"
            self.unit("zz-bad", '[service\ncommand = ["sleep", "1"]\n')
        elif kind == "unknown-key":
            name = self.rng.choice(sorted(self.gen))
            restore, expect = name, name + ".toml"
            self.write_reload_unit(name, 'comand = ["sleep"]\n')
        elif kind == "unknown-dep":
            made, expect = ["zz-bad"], "zz-bad.toml"
            self.unit("zz-bad", '[unit]\nrequires = ["no-such-unit"]\n[service]\ncommand = ["sleep", "1"]\n' + wd)
        elif kind == "cycle":
            made, expect = ["zz-cyc-a", "zz-cyc-b"], "zz-cyc-a"
            self.unit("zz-cyc-a", '[unit]\nrequires = ["zz-cyc-b"]\n[service]\ncommand = ["sleep", "1"]\n')
            self.unit("zz-cyc-b", '[unit]\nrequires = ["zz-cyc-a"]\n[service]\ncommand = ["sleep", "1"]\n')
        elif kind == "missing-program":
            made, expect = ["zz-bad"], "zz-bad.toml"
            self.unit("zz-bad", '[service]\ncommand = ["/nonexistent/soak-program"]\n')
        else:
            made, expect = ["Bad-Name"], "Bad-Name"
            self.unit("Bad-Name", '[service]\ncommand = ["sleep", "1"]\n')
        before = self.status()
        ok, text = self.reload(how)
        for n in made:
            os.unlink(os.path.join(self.ud, n + ".toml"))
        if restore:
            self.write_reload_unit(restore)
        if ok is None:
            self.problems.append("invalid reload (%s, %s) got no answer within 60s" % (how, kind))
            return
        if ok:
            self.problems.append("invalid reload (%s, %s) was accepted: %s" % (how, kind, text[-300:]))
            return
        if expect not in text:
            self.problems.append("invalid reload (%s, %s): the error does not name %s: %s" % (how, kind, expect, text[-300:]))
        self.stats["reload_refused"] += 1
        time.sleep(0.3)
        after = self.status()
        if set(after) != set(before):
            self.problems.append("invalid reload (%s, %s) changed the unit set: %s" % (how, kind, set(after) ^ set(before)))
        self.compare(before, after, set(), "invalid reload (%s)" % kind)

    # -------------------------------------------------------------- run
    def run(self):
        a = self.args
        self.write_units()
        chk = harness.subprocess.run([self.binary, "check", "--units", self.ud], capture_output=True, text=True)
        if chk.returncode != 0:
            raise RuntimeError("flowinit check refused the soak units: %s" % chk.stderr[-2000:])
        self.t0 = time.monotonic()
        self.start()
        st, bad = self.wait_all_up(120)
        if bad:
            raise RuntimeError("units not up after 120s: %s" % bad)
        self.t_up = time.monotonic() - self.t0
        base = {n: u["restarts"] for n, u in st.items()}
        threads = [threading.Thread(target=self.sampler, daemon=True), threading.Thread(target=self.traffic, daemon=True)]
        for t in threads:
            t.start()
        # warm-up: one of each, so buffers and pools exist before the RSS baseline
        warm_end = time.monotonic() + max(a.warmup, 0)
        for act in (self.act_flood, self.act_storm, self.act_burst, self.act_reload_valid, self.act_kill_main):
            if not a.only or act.__name__[4:] in a.only.split(","):
                act()
        actions = [(self.act_kill_main, 6), (self.act_kill_child, 3), (self.act_flood, 1), (self.act_storm, 1),
                   (self.act_reload_valid, 1), (self.act_reload_invalid, 1), (self.act_burst, 1)]
        if a.only:
            keep = set(a.only.split(","))
            actions = [(f, w) for f, w in actions if f.__name__[4:] in keep]
            if not actions:
                raise RuntimeError("--only: no such action (kill_main, kill_child, flood, storm, reload_valid, "
                                   "reload_invalid, burst)")
        total = sum(w for _, w in actions)
        end = self.t0 + self.t_up + a.seconds
        steps = 0
        while time.monotonic() < end:
            self.check_alive()
            r = self.rng.uniform(0, total)
            for act, w in actions:
                r -= w
                if r <= 0:
                    break
            act()
            steps += 1
            time.sleep(self.rng.uniform(0.2, 1.2))
        self.warm_until = warm_end - self.t0
        self.steps = steps
        self.driver_secs = time.monotonic() - self.t0 - self.t_up
        # settle, then the final checks
        self.stop_evt.set()
        for t in threads:
            t.join(10)
        st, bad = self.wait_all_up(60)
        if bad:
            self.problems.append("units not up again 60s after the driver stopped: %s" % bad)
        self.check_restarts(st, base)
        self.check_zombies()
        self.check_rss()
        err = self.stderr_all()
        if harness.panicked(err):
            self.problems.append("flowinit panicked: %s" % harness.panic_excerpt(err))
        self.check_alive()
        # shutdown
        t = time.monotonic()
        self.f.signal(signal.SIGTERM)
        code = self.f.wait(a.budget + 30)
        self.exit_time = time.monotonic() - t
        self.exit_code = code
        if code is None:
            self.problems.append("no exit within %gs of SIGTERM" % (a.budget + 30))
            self.f.kill()
        elif code != 0:
            self.problems.append("exit code %s after SIGTERM, expected 0" % code)
        if self.exit_time > a.budget + 1:
            self.problems.append("exit took %.2fs > budget %gs + 1s" % (self.exit_time, a.budget))
        self.reader.join(30)
        self.check_numbered()
        if harness.panicked(self.stderr_all()):
            self.problems.append("flowinit panicked during shutdown")
        left = harness.leftovers_by_path(self.d)
        if left:
            self.problems.append("processes left on the host: %s" % left[:10])

    def check_restarts(self, st, base):
        """restarts grew by at least the runs hit; each killed pid has its restart line."""
        self.restarts_seen = sum(u["restarts"] - base.get(n, 0) for n, u in st.items() if n in base)
        self.acct = []
        for n, pids in sorted(self.hits.items()):
            got = st[n]["restarts"] - base.get(n, 0) if n in st else None
            self.acct.append((n, len(pids), got))
            if got is None or got < len(pids):
                self.problems.append("unit %s: %d runs killed but restarts grew by %s" % (n, len(pids), got))
        err = self.stderr_all()
        self.log_confirmed = 0
        for n, pid, why in self.main_kills:
            m = re.search(r"unit %s started \(pid %d\)\n" % (re.escape(n), pid), err)
            if not m:
                self.problems.append("unit %s: no 'started (pid %d)' line in the log" % (n, pid))
                continue
            ev = re.compile(r"unit %s (started \(pid \d+\)|(.*), restarting in)" % re.escape(n)).search(err, m.end())
            if not ev or not ev.group(2):
                self.problems.append("unit %s: pid %d was killed but the log shows no restart after it (next: %s)"
                                     % (n, pid, ev.group(0) if ev else "nothing"))
            else:
                self.log_confirmed += 1
                if why not in ev.group(2):
                    self.notes.append("unit %s pid %d: expected %r, log says %r" % (n, pid, why, ev.group(2)))

    def check_zombies(self):
        seen = None
        for _ in range(3):
            z = {h: v for h, v in self.f.ns_processes().items() if v[1] == "Z"}
            seen = set(z) if seen is None else seen & set(z)
            time.sleep(1)
        self.zombies_left = len(seen)
        if seen:
            desc = []
            for h in sorted(seen)[:10]:
                st = harness.stat_fields(h)
                parent = st[1] if st else None
                desc.append("host pid %d (ns pid %s), parent host pid %s %r" % (
                    h, harness.ns_pids(h)[-1:], parent, harness.read("/proc/%s/cmdline" % parent).replace("\0", " ")[:80]))
            self.problems.append("%d zombie(s) left in the namespace: %s" % (len(seen), "; ".join(desc)))

    def check_rss(self):
        if not self.rss:
            self.problems.append("no RSS samples")
            return
        warm = [k for t, k in self.rss if t <= self.warm_until] or [self.rss[0][1]]
        later = [k for t, k in self.rss if t > self.warm_until]
        self.rss_first, self.rss_warm = self.rss[0][1], max(warm)
        self.rss_peak, self.rss_last = max(k for _, k in self.rss), self.rss[-1][1]
        bound = self.args.rss_factor * self.rss_warm
        if later and max(later) > bound:
            self.problems.append("RSS grew to %d KiB after warm-up, over %.1f x %d KiB" % (max(later), self.args.rss_factor, self.rss_warm))

    def check_numbered(self):
        prog = os.path.join(self.d, "progress")
        written = {}
        for r in os.listdir(prog) if os.path.isdir(prog) else []:
            if r.endswith(".tmp"):
                continue
            try:
                written[r] = int(harness.read(os.path.join(prog, r)).strip())
            except ValueError:
                pass
        for kind, detail in self.num_bad:
            self.problems.append("numbered: %s %s" % (kind, detail.decode("utf-8", "replace") if detail else ""))
        for run, last in sorted(written.items()):
            got = self.runs.get(run)
            if got is None:
                self.problems.append("numbered: run %s wrote up to seq %d, none of it reached flowinit's stdout" % (run, last))
            elif got[0] - 1 < last:
                self.problems.append("numbered: run %s wrote up to seq %d, stdout stops at %d (lost tail)" % (run, last, got[0] - 1))
        self.num_runs = len(self.runs)

    def cleanup(self):
        self.stop_evt.set()
        f = getattr(self, "f", None)
        if f is not None and f.alive():
            f.kill()
        if hasattr(self, "errf"):
            self.errf.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="driver duration (default 300)")
    ap.add_argument("--budget", type=float, default=5.0, help="--shutdown-timeout in seconds (default 5)")
    ap.add_argument("--warmup", type=float, default=30, help="seconds before the RSS baseline is fixed (default 30)")
    ap.add_argument("--rss-factor", type=float, default=2.0)
    ap.add_argument("--rss-every", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", help="comma-separated driver actions to use (kill_main, kill_child, flood, storm, "
                    "reload_valid, reload_invalid, burst); default all. For narrowing down a finding")
    ap.add_argument("--flowinit")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, units)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (unshare -p)")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    binary = harness.find_flowinit(args.flowinit)
    s = Soak(args, binary)
    print("flowinit %s; soak %gs, seed %d, budget %gs; temp %s" % (binary, args.seconds, args.seed, args.budget, s.d), flush=True)
    crashed = None
    try:
        s.run()
    except (RuntimeError, OSError, KeyboardInterrupt) as e:
        crashed = e
        s.problems.append("soak aborted: %r" % e)
    finally:
        s.cleanup()
    st = s.stats
    print("\n== soak summary ==")
    rows = [
        ("duration of the chaos", "%.0fs (%d actions, seed %d; units up after %.1fs)" % (
            getattr(s, "driver_secs", 0), getattr(s, "steps", 0), args.seed, getattr(s, "t_up", 0))),
        ("SIGKILLs of main processes", "%d" % st["kills_main"]),
        ("SIGKILLs of children", "%d of fail-fast workers, %d of respawning workers (%d picks missed: pid gone)" % (
            st["kills_child_failfast"], st["kills_child_respawn"], st["kill_misses"])),
        ("runs hit / restarts seen", "%d / %d (log confirms a restart after %d of %d killed pids)" % (
            sum(len(v) for v in s.hits.values()), getattr(s, "restarts_seen", -1), getattr(s, "log_confirmed", 0),
            len(s.main_kills))),
        ("reloads", "%d applied, %d refused (invalid)" % (st["reload_ok"], st["reload_refused"])),
        ("floods / orphan storms", "%d floods of 100k lines; %d storms, %d orphans" % (st["floods"], st["storms"], st["orphans"])),
        ("numbered lines checked", "%d in %d runs; other stdout lines %d" % (
            getattr(s, "num_lines", 0), getattr(s, "num_runs", 0), getattr(s, "other_lines", 0))),
        ("router", "%s; longest gap without an answer %.1fs; %d bursts of 200" % (
            " ".join("%s:%d" % kv for kv in sorted(s.router_counts.items())), s.router_max_gap, st["bursts"])),
        ("zombies", "left %s (max %d in one sample during the run; max %d processes in the namespace)" % (
            getattr(s, "zombies_left", "?"), s.zombie_max, getattr(s, "nprocs_max", 0))),
        ("flowinit RSS (KiB)", "first %s, warm-up peak %s, peak %s, last %s (%d samples)" % (
            getattr(s, "rss_first", "?"), getattr(s, "rss_warm", "?"), getattr(s, "rss_peak", "?"),
            getattr(s, "rss_last", "?"), len(s.rss))),
        ("exit after SIGTERM", "code %s in %s (budget %gs)" % (
            getattr(s, "exit_code", "?"), "%.2fs" % s.exit_time if hasattr(s, "exit_time") else "?", args.budget)),
    ]
    for k, v in rows:
        print("%-28s %s" % (k, v))
    if s.rss:
        n = len(s.rss)
        print("RSS over time (KiB): " + ", ".join("t=%.0fs %d" % s.rss[min(n - 1, i * n // 8)] for i in range(8))
              + ", t=%.0fs %d" % s.rss[-1])
    if getattr(s, "acct", None):
        print("per unit (runs killed / restarts grew by): " + ", ".join("%s %d/%s" % x for x in s.acct))
    for n in s.notes[:20]:
        print("note: " + n)
    if s.problems:
        print("\nFAIL: %d problem(s)" % len(s.problems))
        for p in s.problems[:50]:
            print("  - " + p)
    else:
        print("\nPASS")
    if s.problems or args.keep:
        print("kept %s (flowinit.err, units)" % s.d)
        # the stdout pipe was checked on the fly; drop bulky leftovers
        harness.rmtree(os.path.join(s.d, "bin"))
    else:
        harness.rmtree(s.d)
    sys.exit(1 if s.problems or crashed else 0)


if __name__ == "__main__":
    main()
