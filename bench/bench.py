#!/usr/bin/env python3
"""flowinit benchmark harness: flowinit side by side with supervisord and tini.

Run through bench/run.sh (which installs the peers and compiles the C
helpers); see docs/performance.md for what every row measures.

    bench.py [logs] [units] [idle] [reap] [startup] [size]   (default: all)

Environment:
    FLOWINIT          flowinit binary (default: target/release/flowinit)
    BENCH_BIN         directory holding the compiled helpers gen, orphans
    BENCH_REPS        repetitions per measurement (default 5); medians reported
    BENCH_LINES       lines for the log benchmark (default 2000000)
    BENCH_UNITS       sleep units for units/idle (default 200)
    BENCH_ORPHANS     orphans for the reaping benchmark (default 5000)
    BENCH_IDLE_SECS   idle window (default 20)
    BENCH_IDLE_REPS   idle repetitions (default 3)
    BENCH_JSON        if set, raw samples are written there as JSON
    BENCH_KEEP=1      keep the temporary directories
    SUPERVISORD       supervisord executable (default: next to this python)

Every process is started in its own session and killed by pid (or by its
own process group id) on the way out; no process is ever looked up by name.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWINIT = os.path.abspath(os.environ.get("FLOWINIT", os.path.join(ROOT, "target/release/flowinit")))
BIN = os.environ.get("BENCH_BIN", "")
REPS = int(os.environ.get("BENCH_REPS", "5"))
LINES = int(os.environ.get("BENCH_LINES", "2000000"))
UNITS = int(os.environ.get("BENCH_UNITS", "200"))
ORPHANS = int(os.environ.get("BENCH_ORPHANS", "5000"))
IDLE_SECS = float(os.environ.get("BENCH_IDLE_SECS", "20"))
IDLE_REPS = int(os.environ.get("BENCH_IDLE_REPS", "3"))
KEEP = os.environ.get("BENCH_KEEP") == "1"
TICK = os.sysconf("SC_CLK_TCK")


def find_supervisord():
    if os.environ.get("SUPERVISORD"):
        return os.environ["SUPERVISORD"]
    # Next to this interpreter: avoids pyenv's shell shim, which would add
    # 0.1-0.2 s of bash to every supervisord launch.
    cand = os.path.join(os.path.dirname(sys.executable), "supervisord")
    return cand if os.path.exists(cand) else shutil.which("supervisord")


SUPERVISORD = find_supervisord()
GEN = os.path.join(BIN, "gen")
ORPH = os.path.join(BIN, "orphans")


class Skip(Exception):
    """A half of a benchmark could not be measured (reason in the message)."""


# ---------------------------------------------------------------- processes

LIVE = {}  # pid -> Popen, everything we started and have not reaped yet
STRAYS = set()  # pids of service processes seen, checked and killed at exit


def start(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    LIVE[p.pid] = p
    return p


def wait_exit(p, timeout, on_timeout=None):
    """Block in waitpid() until p exits; True if it did within timeout.
    (Popen.wait(timeout) polls with sleeps of up to 50 ms, which would
    quantize the times measured here; a timer thread sends SIGKILL instead.)"""
    fired = []

    def kill():
        fired.append(1)
        if on_timeout:
            on_timeout()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    t = threading.Timer(timeout, kill)
    t.start()
    try:
        p.wait()
    finally:
        t.cancel()
    return not fired


def finish(p, sig=signal.SIGTERM, timeout=30.0):
    """Signal p (by pid), wait up to timeout, then SIGKILL its process group.
    Returns (seconds until it exited after the signal, exit code, killed?)."""
    t0 = time.perf_counter()
    killed = False
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        killed = not wait_exit(p, timeout)
    LIVE.pop(p.pid, None)
    return time.perf_counter() - t0, p.returncode, killed


def proc_stat(pid):
    """(comm, state, ppid, utime+stime, starttime) of a pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    i, j = s.index(b"("), s.rindex(b")")
    rest = s[j + 2:].split()
    return s[i + 1:j].decode(errors="replace"), rest[0].decode(), int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19])


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[1] != "Z"


def cpu_seconds(pid):
    """On-CPU time of all threads of pid so far (schedstat, nanoseconds)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        return None
    return total / 1e9


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def threads_of(pid):
    try:
        return {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    except OSError:
        return set()


class ChildCounter:
    """Counts processes running COMM whose parent is PARENT, by scanning /proc
    (the same method for every supervisor; /proc/PID/task/*/children does not
    exist on this kernel). Verdicts are cached so a poll only reads the stat
    files of pids it has not settled yet."""

    def __init__(self, parent, comm="sleep"):
        self.parent, self.comm = parent, comm
        self.parents = {parent}
        self.final = {}
        self.found = []

    def poll(self):
        # A multi-threaded parent's children report the thread group id as ppid.
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in self.final:
                continue
            st = proc_stat(pid)
            if st is None:
                continue
            comm, _, ppid, _, _ = st
            if comm == self.comm:
                self.final[pid] = ppid in self.parents
                if self.final[pid]:
                    self.found.append(pid)
                    STRAYS.add(pid)
            elif ppid not in self.parents:
                self.final[pid] = False
        return len(self.found)


def wait_until(pred, timeout, interval=0.002):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


class TmpDir:
    def __init__(self, tag):
        self.path = tempfile.mkdtemp(prefix=f"flowinit-bench-{tag}-")

    def __enter__(self):
        return self.path

    def __exit__(self, *a):
        if not KEEP:
            shutil.rmtree(self.path, ignore_errors=True)


def need_flowinit():
    if not os.access(FLOWINIT, os.X_OK):
        raise Skip(f"no flowinit binary at {FLOWINIT}")


# ---------------------------------------------------------------- results

RESULTS = []  # rows: dict(name, cells{col: value|str}, ratio, goal, ok)
RAW = {}
COLS = ["flowinit", "supervisord", "tini", "tini-static", "direct/plain"]


def med(xs):
    return statistics.median(xs) if xs else None


def record(key, system, value):
    RAW.setdefault(key, {}).setdefault(system, []).append(value)


def failure(key, system, why):
    RAW.setdefault(key, {}).setdefault("errors", {}).setdefault(system, []).append(why)
    print(f"    [{system}] {why}", flush=True)


def gave_up(key, system):
    """After two failed samples a system's half is not retried (bounded time)."""
    errs = RAW.get(key, {}).get("errors", {}).get(system, [])
    if len(errs) >= 2:
        print(f"    [{system}] {key}: skipped after {len(errs)} failures", flush=True)
        return True
    return False


def cell(key, system, fmt):
    d = RAW.get(key, {})
    xs = d.get(system)
    if xs:
        v = med(xs)
        return fmt(v) if callable(fmt) else fmt % v
    errs = d.get("errors", {}).get(system)
    if errs:
        return "not measured: " + errs[-1]
    return None


def row(name, key, fmts, ratio=None, goal="", ok=None, note=""):
    cells = {}
    for sysname, fmt in fmts.items():
        c = cell(key, sysname, fmt)
        if c is not None:
            cells[sysname] = c
    # A median of the good samples must not hide flowinit samples that failed.
    errs = RAW.get(key, {}).get("errors", {}).get("flowinit", [])
    if errs and RAW.get(key, {}).get("flowinit"):
        note = (note + "; " if note else "") + f"{len(errs)} flowinit sample(s) FAILED: {errs[-1]}"
        if not goal.startswith("info"):
            ok = False
    RESULTS.append(dict(name=name, cells=cells, ratio=ratio, goal=goal, ok=ok, note=note))


def ratio_of(a_key, a_sys, b_key, b_sys, invert=False):
    a = med(RAW.get(a_key, {}).get(a_sys, []))
    b = med(RAW.get(b_key, {}).get(b_sys, []))
    if a is None or b is None or (b == 0 and not invert) or (a == 0 and invert):
        return None
    return b / a if invert else a / b


def verdict(r, limit, le=True):
    if r is None:
        return None
    return r <= limit if le else r >= limit


def s3(v):
    return f"{v:.3f} s"


def ms(v):
    return f"{v * 1000:.1f} ms"


def ms3(v):
    return f"{v * 1000:.3f} ms"


def mib(v):
    return f"{v / 1024:.1f} MiB"


# ---------------------------------------------------------------- 1. logs


def tail_has(path, needle, window=8192):
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - window))
            return needle in f.read()
    except OSError:
        return False


def head_has(path, needle, window=8192):
    try:
        with open(path, "rb") as f:
            return needle in f.read(window)
    except OSError:
        return False


LINE_RE = re.compile(rb"^([A-Za-z0-9_-]+) *\| ?(.*)$")


def verify_stream(path, tag, count, unit="gen", json_format=False):
    """Check that the unit's lines of one stream are exactly tag 1..count, in
    order, each prefixed. Returns a list of problems (empty = OK)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    nums, unprefixed, foreign = [], 0, 0
    want = tag.encode() + b" "
    for ln in lines:
        if json_format:
            try:
                o = json.loads(ln)
            except ValueError:
                unprefixed += 1
                continue
            if o.get("unit") == "flowinit":
                continue
            if o.get("unit") != unit:
                unprefixed += 1
                continue
            msg = o.get("msg", "").encode()
        else:
            m = LINE_RE.match(ln)
            if not m:
                unprefixed += 1
                continue
            if m.group(1) == b"flowinit":
                continue
            if m.group(1) != unit.encode():
                unprefixed += 1
                continue
            msg = m.group(2)
        if not msg.startswith(want) or not msg[4:].isdigit():
            foreign += 1
            continue
        nums.append(int(msg[4:]))
    problems = []
    uniq = set(nums)
    lost = sum(1 for i in range(1, count + 1) if i not in uniq)
    dup = len(nums) - len(uniq)
    reord = sum(1 for a, b in zip(nums, nums[1:]) if b < a)
    for what, n in (("lost", lost), ("duplicated", dup), ("out of order", reord),
                    ("unprefixed/foreign", unprefixed), ("garbled", foreign)):
        if n:
            problems.append(f"{n} {what}")
    return problems


def gen_bytes(count):
    """Bytes gen writes for lines 1..count: tag, space, number (at least 7
    digits), newline."""
    total = 0
    for d in range(1, len(str(count)) + 1):
        lo, hi = 10 ** (d - 1), min(count, 10 ** d - 1)
        if hi >= lo:
            total += (hi - lo + 1) * (5 + max(7, d))
    return total


def logs_once(system, tmp, n, m, json_format=False):
    """One run of the log benchmark. Returns (total s, first->last s)."""
    out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    argv_gen = [GEN, str(n)] + ([str(m)] if m else [])
    env = dict(os.environ)
    if system == "flowinit":
        need_flowinit()
        units = os.path.join(tmp, "units")
        os.makedirs(units, exist_ok=True)
        with open(os.path.join(units, "gen.toml"), "w") as f:
            f.write("[service]\ncommand = %s\nrestart = \"no\"\n" % json.dumps(argv_gen))
        argv = [FLOWINIT, "up", "--units", units]
        env["FLOWINIT_SOCKET"] = os.path.join(tmp, "flowinit.sock")
        if json_format:
            env["FLOWINIT_LOG_FORMAT"] = "json"
    elif system == "supervisord":
        conf = os.path.join(tmp, "supervisord.conf")
        with open(conf, "w") as f:
            f.write(f"""[supervisord]
nodaemon=true
silent=true
user=root
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}

[program:gen]
command={' '.join(argv_gen)}
autorestart=false
startsecs=0
startretries=0
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
stderr_logfile=/dev/stderr
stderr_logfile_maxbytes=0
""")
        argv = [SUPERVISORD, "-c", conf]
    else:
        argv = argv_gen
    fo, fe = open(out, "wb"), open(err, "wb")
    t0 = time.perf_counter()
    p = start(argv, stdout=fo, stderr=fe, env=env)
    fo.close()
    fe.close()
    if system == "direct/plain":
        ok = wait_exit(p, 60)
        t = time.perf_counter() - t0
        LIVE.pop(p.pid, None)
        if not ok:
            raise Skip("direct write timed out")
        LIVE.pop(p.pid, None)
        return t, None
    first_needle = b"out 0000001"
    last_out = b"out %07d" % n
    last_err = b"err %07d" % m
    t_first = None
    deadline = t0 + 60
    try:
        while True:
            now = time.perf_counter()
            if t_first is None and head_has(out, first_needle):
                t_first = now
            if t_first is not None and tail_has(out, last_out) and (not m or tail_has(err, last_err)):
                t_end = now
                break
            if p.poll() is not None:
                raise Skip(f"{system} exited early with {p.returncode}: {tail(err)}")
            if now > deadline:
                raise Skip(f"{system}: not all lines arrived within 60 s")
            time.sleep(0.001)
    finally:
        cpu = cpu_seconds(p.pid)
        _, rc, killed = finish(p, timeout=15)
    if cpu is not None and not json_format:
        record(("logs2" if m else "logs") + "_cpu", system, cpu)
    if system == "supervisord":
        # supervisord passes raw bytes: the files must be exactly gen's output.
        for path, count in ((out, n), (err, m)):
            size = os.path.getsize(path)
            if size != gen_bytes(count):
                raise Skip(f"supervisord output {os.path.basename(path)}: {size} bytes, expected {gen_bytes(count)}")
    if system == "flowinit":
        if killed:
            raise Skip("flowinit did not exit within 15 s of SIGTERM")
        problems = verify_stream(out, "out", n, json_format=json_format)
        if m:
            problems += ["stderr: " + x for x in verify_stream(err, "err", m, json_format=json_format)]
        if problems:
            raise Skip("output check failed: " + ", ".join(problems))
    return t_end - t0, t_end - t_first


def tail(path, nbytes=300):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - nbytes))
            return f.read().decode(errors="replace").strip().replace("\n", " / ")
    except OSError:
        return ""


def bench_logs():
    half = LINES // 2
    cases = [("logs", LINES, 0), ("logs2", half, half)]
    for rep in range(REPS):
        for key, n, m in cases:
            for system in ("flowinit", "supervisord", "direct/plain"):
                if gave_up(key, system):
                    continue
                with TmpDir("logs") as tmp:
                    try:
                        total, f2l = logs_once(system, tmp, n, m)
                        record(key, system, total)
                        if f2l is not None:
                            record(key + "_f2l", system, f2l)
                        print(f"  {key} rep {rep + 1} {system}: {total:.3f} s"
                              + (f" (first->last {f2l:.3f} s)" if f2l is not None else ""), flush=True)
                    except Skip as e:
                        failure(key, system, str(e))
                        if system == "flowinit":
                            failure(key + "_f2l", system, str(e))
        if gave_up("logsjson", "flowinit"):
            continue
        with TmpDir("logs") as tmp:
            try:
                total, f2l = logs_once("flowinit", tmp, LINES, 0, json_format=True)
                record("logsjson", "flowinit", total)
                print(f"  logsjson rep {rep + 1} flowinit: {total:.3f} s", flush=True)
            except Skip as e:
                failure("logsjson", "flowinit", str(e))
    r = ratio_of("logs", "flowinit", "logs", "supervisord")
    row(f"logs: {LINES:,} stdout lines, launch -> all in file", "logs",
        {"flowinit": s3, "supervisord": s3, "direct/plain": s3},
        r, "flowinit <= 0.25x supervisord", verdict(r, 0.25))
    r = ratio_of("logs2", "flowinit", "logs2", "supervisord")
    row(f"logs: {half:,} stdout + {half:,} stderr lines, launch -> all in files", "logs2",
        {"flowinit": s3, "supervisord": s3, "direct/plain": s3},
        r, "flowinit <= 0.25x supervisord", verdict(r, 0.25))
    # throughput after the first line, relative to a direct write (higher is better)
    r = ratio_of("logs_f2l", "flowinit", "logs", "direct/plain", invert=True)
    row(f"logs: {LINES:,} stdout lines, first line -> last line", "logs_f2l",
        {"flowinit": s3, "supervisord": s3},
        r, "throughput >= 0.5x direct write (ratio = direct total / flowinit first->last)",
        verdict(r, 0.5, le=False), note="direct/plain column of the row above = direct write total")
    row(f"logs: {LINES:,} stdout lines, CPU time of the supervisor process (info)", "logs_cpu",
        {"flowinit": s3, "supervisord": s3}, ratio_of("logs_cpu", "flowinit", "logs_cpu", "supervisord"),
        "info", None)
    row(f"logs: {LINES:,} stdout lines, FLOWINIT_LOG_FORMAT=json (info)", "logsjson", {"flowinit": s3},
        ratio_of("logsjson", "flowinit", "logs", "supervisord"), "info (ratio vs supervisord text)", None)


# ---------------------------------------------------------------- 2./3. units


def unit_names(chains):
    if not chains:
        return [f"u{i:03d}" for i in range(UNITS)], {}
    names, req = [], {}
    per = 10
    for c in range((UNITS + per - 1) // per):
        for k in range(per):
            if len(names) == UNITS:
                break
            name = f"c{c:02d}-{k:02d}"
            if k:
                req[name] = f"c{c:02d}-{k - 1:02d}"
            names.append(name)
    return names, req


def write_units(system, tmp, chains):
    names, req = unit_names(chains)
    if system == "flowinit":
        units = os.path.join(tmp, "units")
        os.makedirs(units, exist_ok=True)
        for n in names:
            with open(os.path.join(units, n + ".toml"), "w") as f:
                if n in req:
                    f.write(f'[unit]\nrequires = ["{req[n]}"]\n\n')
                f.write('[service]\ncommand = ["sleep", "1000"]\n')
        return [FLOWINIT, "up", "--units", units], names
    conf = os.path.join(tmp, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(f"""[supervisord]
nodaemon=true
silent=true
user=root
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}

[unix_http_server]
file={tmp}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock
""")
        for n in names:
            # supervisord has no dependencies: chains only get start order
            # (priority = position in the chain); everything else is default.
            prio = f"priority={100 + int(n[-2:])}\n" if chains else ""
            f.write(f"\n[program:{n}]\ncommand=sleep 1000\n{prio}"
                    "stdout_logfile=NONE\nstderr_logfile=NONE\n")
    return [SUPERVISORD, "-c", conf], names


def sup_proxy(tmp):
    try:
        import xmlrpc.client
        from supervisor.xmlrpc import SupervisorTransport
    except ImportError:
        return None
    t = SupervisorTransport(None, None, f"unix://{tmp}/supervisor.sock")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=t)


def all_running(proxy, n):
    try:
        info = proxy.supervisor.getAllProcessInfo()
    except Exception:
        return False
    return len(info) == n and all(i["statename"] == "RUNNING" for i in info)


class StartedEvents:
    """Counts distinct units named in flowinit's `started` events on stderr."""

    def __init__(self, path, names):
        self.path, self.off, self.seen, self.buf = path, 0, set(), b""
        self.names = set(names)

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                chunk = f.read()
        except OSError:
            return 0
        self.off += len(chunk)
        data = self.buf + chunk
        lines = data.split(b"\n")
        self.buf = lines.pop()
        for ln in lines:
            if b"started" in ln:
                for w in re.findall(rb"[a-z0-9][a-z0-9_-]*", ln):
                    w = w.decode()
                    if w in self.names:
                        self.seen.add(w)
        return len(self.seen)


def _wait_units(res, system, cnt, ev, p, t0, err):
    t_events = None
    while True:
        now = time.perf_counter()
        c = cnt.poll()
        if ev and t_events is None and ev.poll() >= UNITS:
            t_events = now - t0
        if c >= UNITS:
            res["t_running"] = now - t0
            break
        if p.poll() is not None:
            raise Skip(f"{system} exited with {p.returncode} before all units ran: {tail(err)}")
        if now - t0 > 30:
            raise Skip(f"{system}: only {c}/{UNITS} sleep children after 30 s")
        time.sleep(0.002)
    res["t_events"] = t_events


def launch_units(system, tmp, chains):
    """Start a supervisor with UNITS sleep units. Returns dict with p, counter,
    t0, t_running (launch -> all sleep processes children), plus t_events
    (flowinit: all `started` events) / t_RUNNING (supervisord: all RUNNING)."""
    if system == "flowinit":
        need_flowinit()
    argv, names = write_units(system, tmp, chains)
    err = os.path.join(tmp, "stderr")
    fo, fe = open(os.path.join(tmp, "stdout"), "wb"), open(err, "wb")
    t0 = time.perf_counter()
    env = dict(os.environ, FLOWINIT_SOCKET=os.path.join(tmp, "flowinit.sock"))
    p = start(argv, stdout=fo, stderr=fe, env=env)
    fo.close()
    fe.close()
    cnt = ChildCounter(p.pid)
    ev = StartedEvents(err, names) if system == "flowinit" else None
    res = dict(p=p, counter=cnt, t0=t0, err=err)
    try:
        _wait_units(res, system, cnt, ev, p, t0, err)
    except Skip:
        stop_units(res, system)
        raise
    t_events = res["t_events"]
    if ev:
        if t_events is None:
            wait_until(lambda: ev.poll() >= UNITS, 5, 0.005)
            if ev.poll() >= UNITS:
                t_events = time.perf_counter() - t0
        res["t_events"] = t_events
    if system == "supervisord":
        proxy = sup_proxy(tmp)
        if proxy and wait_until(lambda: all_running(proxy, UNITS), 30, 0.05):
            res["t_RUNNING"] = time.perf_counter() - t0
    return res


def stop_units(res, system):
    p, cnt = res["p"], res["counter"]
    pids = list(cnt.found)
    t, rc, killed = finish(p, timeout=30)
    left = [x for x in pids if alive(x)]
    time.sleep(0.5)
    left_later = [x for x in pids if alive(x)]
    for x in left_later:
        try:
            os.kill(x, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return t, rc, killed, left, left_later


def bench_units():
    for rep in range(REPS):
        for chains in (False, True):
            key = "units_chain" if chains else "units_flat"
            for system in ("flowinit", "supervisord"):
                if gave_up(key, system) or gave_up(key + "_stop", system):
                    continue
                with TmpDir("units") as tmp:
                    res = None
                    try:
                        res = launch_units(system, tmp, chains)
                        record(key, system, res["t_running"])
                        extra = ""
                        if res.get("t_events") is not None:
                            record(key + "_events", system, res["t_events"])
                            extra = f", all 'started' events {res['t_events']:.3f} s"
                        if res.get("t_RUNNING") is not None:
                            record(key + "_RUNNING", system, res["t_RUNNING"])
                            extra = f", all RUNNING {res['t_RUNNING']:.3f} s"
                        t, rc, killed, left, left_later = stop_units(res, system)
                        res = None
                        msg = f"stop {t:.3f} s, exit {rc}, left {len(left)} (after 0.5 s: {len(left_later)})"
                        if killed:
                            failure(key + "_stop", system, "did not exit within 30 s of SIGTERM")
                        elif rc != 0:
                            failure(key + "_stop", system, f"exit status {rc} after SIGTERM")
                        elif left:
                            failure(key + "_stop", system, f"{len(left)} sleep processes alive after exit")
                        else:
                            record(key + "_stop", system, t)
                        print(f"  {key} rep {rep + 1} {system}: running {res_t(key, system):.3f} s{extra}; {msg}",
                              flush=True)
                    except Skip as e:
                        failure(key, system, str(e))
                        failure(key + "_stop", system, str(e))
                    finally:
                        if res:
                            stop_units(res, system)
    for chains in (False, True):
        key = "units_chain" if chains else "units_flat"
        what = f"{UNITS} sleep units" + (" in chains of 10 (requires)" if chains else ", flat")
        r = ratio_of(key, "flowinit", key, "supervisord")
        row(f"units: {what}, launch -> all running (/proc children)", key,
            {"flowinit": s3, "supervisord": s3}, r, "flowinit <= 0.2x supervisord", verdict(r, 0.2))
        if RAW.get(key + "_events") or RAW.get(key + "_RUNNING"):
            RESULTS.append(dict(name=f"units: {what}, launch -> all `started` events / all RUNNING (info)",
                                cells={k: v for k, v in (("flowinit", cell(key + "_events", "flowinit", s3)),
                                                         ("supervisord", cell(key + "_RUNNING", "supervisord", s3)))
                                       if v},
                                ratio=ratio_of(key + "_events", "flowinit", key + "_RUNNING", "supervisord"),
                                goal="info", ok=None, note=""))
        fstop = med(RAW.get(key + "_stop", {}).get("flowinit", []))
        row(f"units: {what}, SIGTERM -> exit, nothing left", key + "_stop",
            {"flowinit": s3, "supervisord": s3}, ratio_of(key + "_stop", "flowinit", key + "_stop", "supervisord"),
            "flowinit < 1 s, exit 0, no process left", None if fstop is None else fstop < 1.0)


def res_t(key, system):
    return RAW[key][system][-1]


def bench_idle():
    for rep in range(IDLE_REPS):
        # Both supervisors idle in the same window (they do not compete: idle).
        runs = {}
        dirs = {s: TmpDir("idle") for s in ("flowinit", "supervisord")}
        try:
            for system in ("flowinit", "supervisord"):
                try:
                    runs[system] = launch_units(system, dirs[system].path, False)
                except Skip as e:
                    failure("idle_rss", system, str(e))
                    failure("idle_ticks", system, str(e))
            time.sleep(3)  # settle (supervisord: startsecs=1 until RUNNING)
            before = {s: proc_stat(r["p"].pid) for s, r in runs.items()}
            time.sleep(IDLE_SECS)
            for s, r in runs.items():
                after = proc_stat(r["p"].pid)
                rss = rss_kib(r["p"].pid)
                if before[s] is None or after is None or rss is None:
                    failure("idle_rss", s, "process gone during the idle window")
                    failure("idle_ticks", s, "process gone during the idle window")
                    continue
                record("idle_rss", s, rss)
                record("idle_ticks", s, after[3] - before[s][3])
                print(f"  idle rep {rep + 1} {s}: RSS {rss / 1024:.1f} MiB, {after[3] - before[s][3]} ticks "
                      f"in {IDLE_SECS:g} s, {len(threads_of(r['p'].pid))} threads", flush=True)
        finally:
            for s, r in runs.items():
                stop_units(r, s)
            for d in dirs.values():
                d.__exit__()
    r = ratio_of("idle_rss", "flowinit", "idle_rss", "supervisord")
    row(f"idle: RSS of the supervisor with {UNITS} units", "idle_rss",
        {"flowinit": mib, "supervisord": mib}, r, "flowinit <= 1/3 supervisord", verdict(r, 1 / 3))
    ft = med(RAW.get("idle_ticks", {}).get("flowinit", []))
    row(f"idle: CPU ticks (utime+stime, {TICK}/s) in {IDLE_SECS:g} s with {UNITS} units", "idle_ticks",
        {"flowinit": "%g", "supervisord": "%g"}, None, "flowinit 0 ticks", None if ft is None else ft == 0)


# ---------------------------------------------------------------- 4. reaping


def ns_init_pid(unshare_pid):
    """Host pid of the namespace's PID 1: the child of `unshare -f`."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[2] == unshare_pid:
                return int(name)
    return None


def kill_ns(unshare_pid):
    """SIGKILL the namespace's PID 1, which takes the whole namespace down."""
    init = ns_init_pid(unshare_pid)
    if init:
        try:
            os.kill(init, signal.SIGKILL)
        except ProcessLookupError:
            pass


ORPH_RE = re.compile(r"orphans=(\d+) reaped=(\d+) seconds=([\d.]+) zombies=(\d+)")


def reap_once(system, tmp):
    ns = ["unshare", "-pf", "--mount-proc"]
    prog = [ORPH, str(ORPHANS), "20"]
    out = os.path.join(tmp, "out")
    if system.startswith("flowinit"):
        need_flowinit()
    if system == "flowinit up":
        units = os.path.join(tmp, "units")
        os.makedirs(units)
        with open(os.path.join(units, "orphans.toml"), "w") as f:
            f.write("[service]\ntype = \"oneshot\"\nrestart = \"no\"\ncommand = %s\n" % json.dumps(prog))
        argv = ns + [FLOWINIT, "up", "--units", units]
    elif system == "flowinit":
        argv = ns + [FLOWINIT, "--"] + prog
    else:
        argv = ns + [shutil.which(system), "--"] + prog
    fo = open(out, "wb")
    t0 = time.perf_counter()
    env = dict(os.environ, FLOWINIT_SOCKET=os.path.join(tmp, "flowinit.sock"))
    p = start(argv, stdout=fo, stderr=subprocess.STDOUT, env=env)
    fo.close()
    try:
        if system == "flowinit up":
            got = wait_until(lambda: (ORPH_RE.search(open(out, errors="replace").read()) or p.poll() is not None), 30, 0.01)
            wall = None
            init = ns_init_pid(p.pid)
            if init:
                try:
                    os.kill(init, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if not got:
                raise Skip(f"no result from the orphans unit within 30 s: {tail(out)}")
            if not wait_exit(p, 15, lambda: kill_ns(p.pid)):
                raise Skip("`flowinit up` as PID 1 did not exit within 15 s of SIGTERM")
            if p.returncode != 0:
                raise Skip(f"`flowinit up` as PID 1 exited {p.returncode} after SIGTERM: {tail(out)}")
        else:
            ok = wait_exit(p, 30, lambda: kill_ns(p.pid))
            wall = time.perf_counter() - t0
            if not ok:
                raise Skip(f"{system}: timed out after 30 s: {tail(out)}")
            if p.returncode != 0:
                raise Skip(f"{system}: exit status {p.returncode}: {tail(out)}")
    finally:
        if p.poll() is None:
            finish(p, signal.SIGKILL, 5)
        LIVE.pop(p.pid, None)
    m = ORPH_RE.search(open(out, errors="replace").read())
    if not m:
        raise Skip(f"{system}: no result line: {tail(out)}")
    n, reaped, secs, zombies = int(m[1]), int(m[2]), float(m[3]), int(m[4])
    if reaped != n or zombies:
        raise Skip(f"{system}: reaped {reaped}/{n}, {zombies} zombies left")
    return secs, wall


def bench_reap():
    systems = ["flowinit", "flowinit up", "tini", "tini-static"]
    for rep in range(REPS):
        for system in systems:
            if gave_up("reap", system):
                continue
            with TmpDir("reap") as tmp:
                try:
                    secs, wall = reap_once(system, tmp)
                    record("reap", system, secs)
                    if wall is not None:
                        record("reap_wall", system, wall)
                    print(f"  reap rep {rep + 1} {system}: {secs:.3f} s" +
                          (f" (whole command {wall:.3f} s)" if wall is not None else ""), flush=True)
                except Skip as e:
                    failure("reap", system, str(e))
                    if system != "flowinit up":
                        failure("reap_wall", system, str(e))
    r = ratio_of("reap", "flowinit", "reap", "tini")
    row(f"reap: {ORPHANS:,} orphans as PID 1, first fork -> all reaped (`flowinit --`)", "reap",
        {"flowinit": s3, "tini": s3, "tini-static": s3}, r, "flowinit <= 1.5x tini", verdict(r, 1.5))
    r = ratio_of("reap_wall", "flowinit", "reap_wall", "tini")
    row(f"reap: {ORPHANS:,} orphans, whole `unshare ... INIT -- orphans` wall time", "reap_wall",
        {"flowinit": s3, "tini": s3, "tini-static": s3}, r, "flowinit <= 1.5x tini", verdict(r, 1.5))
    RESULTS.append(dict(name=f"reap: {ORPHANS:,} orphans, `flowinit up` with a oneshot unit (info)",
                        cells={"flowinit": cell("reap", "flowinit up", s3) or "not measured"},
                        ratio=ratio_of("reap", "flowinit up", "reap", "tini"), goal="info (ratio vs tini)",
                        ok=None, note=""))


# ---------------------------------------------------------------- 5. startup, size


def bench_startup():
    true = shutil.which("true")
    cmds = {"flowinit": [FLOWINIT, "--", true], "tini": [shutil.which("tini"), "-s", "--", true],
            "tini-static": [shutil.which("tini-static"), "-s", "--", true], "direct/plain": [true]}
    try:
        need_flowinit()
        r = subprocess.run(cmds["flowinit"], capture_output=True, timeout=10)
        if r.returncode != 0:
            raise Skip(f"`flowinit -- true` exited {r.returncode}: {r.stderr.decode(errors='replace')[-200:]}")
    except (Skip, subprocess.TimeoutExpired) as e:
        failure("startup", "flowinit", str(e))
        del cmds["flowinit"]
    runs = int(os.environ.get("BENCH_STARTUP_RUNS", "300"))
    hf = shutil.which("hyperfine")
    names = list(cmds)
    for rep in range(REPS):
        # One short series per rep, all commands in each, so a change of load
        # during the run hits every command; medians of the series are kept.
        meds = {}
        with TmpDir("startup") as tmp:
            if hf:
                js = os.path.join(tmp, "hf.json")
                argv = [hf, "-N", "--warmup", "30", "--runs", str(runs), "--export-json", js, "--style", "none"]
                argv += [" ".join(cmds[n]) for n in names]
                p = start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    _, e = p.communicate(timeout=300)
                finally:
                    finish(p, signal.SIGKILL, 1)
                if p.returncode != 0:
                    for n in names:
                        failure("startup", n, "hyperfine failed: " + e.decode(errors="replace")[-200:])
                    break
                for n, res in zip(names, json.load(open(js))["results"]):
                    meds[n] = res["median"]
            else:
                for n in names:
                    ts = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        pid = os.posix_spawn(cmds[n][0], cmds[n], os.environ)
                        os.waitpid(pid, 0)
                        ts.append(time.perf_counter() - t0)
                    meds[n] = med(ts)
        for n, v in meds.items():
            record("startup", n, v)
            if n != "direct/plain" and "direct/plain" in meds:
                record("startup_added", n, v - meds["direct/plain"])
        print(f"  startup rep {rep + 1} ({'hyperfine' if hf else 'posix_spawn loop'}, median of {runs}): "
              + ", ".join(f"{n} {v * 1000:.3f} ms" for n, v in meds.items()), flush=True)
    for n, why in RAW.get("startup", {}).get("errors", {}).items():
        failure("startup_added", n, why[-1])
    row(f"startup: `X -- true` wall time (median of {REPS} series of {runs} runs)", "startup",
        {"flowinit": ms3, "tini": ms3, "tini-static": ms3, "direct/plain": ms3}, None, "info", None)
    r = ratio_of("startup_added", "flowinit", "startup_added", "tini")
    row("startup: time added to `true`", "startup_added",
        {"flowinit": ms3, "tini": ms3, "tini-static": ms3}, r, "flowinit <= 2x tini", verdict(r, 2.0))


def bench_size():
    try:
        need_flowinit()
        with TmpDir("size") as tmp:
            c = os.path.join(tmp, "flowinit")
            shutil.copy(FLOWINIT, c)
            subprocess.run(["strip", c], check=True, timeout=60)
            record("size", "flowinit", os.path.getsize(c))
        record("size_raw", "flowinit", os.path.getsize(FLOWINIT))
    except (Skip, subprocess.SubprocessError, OSError) as e:
        failure("size", "flowinit", str(e))
    for n in ("tini", "tini-static"):
        record("size", n, os.path.getsize(shutil.which(n)))
    sv = med(RAW.get("size", {}).get("flowinit", []))
    row("size: stripped release binary", "size",
        {"flowinit": lambda v: f"{v / 1e6:.2f} MB", "tini": lambda v: f"{v / 1e6:.3f} MB",
         "tini-static": lambda v: f"{v / 1e6:.3f} MB"},
        None, "flowinit <= 6 MB (6,000,000 bytes)", None if sv is None else sv <= 6e6,
        note=("as built: %s bytes, stripped copy: %s bytes" % (f"{RAW['size_raw']['flowinit'][0]:,}",
                                                                f"{RAW['size']['flowinit'][0]:,}"))
        if "size_raw" in RAW else "")


# ---------------------------------------------------------------- table, main


def table():
    out = ["| measurement (median) | " + " | ".join(COLS) + " | ratio | goal | result |",
           "|---|" + "---|" * (len(COLS) + 3)]
    for r in RESULTS:
        cells = [r["cells"].get(c, "–") for c in COLS]
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        res = {True: "PASS", False: "FAIL", None: "–" if r["goal"].startswith("info") else "n/a"}[r["ok"]]
        name = r["name"] + (f" ({r['note']})" if r["note"] else "")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {r['goal']} | {res} |")
    return "\n".join(out)


def fmt_load():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cleanup(*_):
    for pid, p in list(LIVE.items()):
        if p.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    for pid in STRAYS:
        if alive(pid):
            st = proc_stat(pid)
            if st and st[0] == "sleep":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def main():
    benches = {"logs": bench_logs, "units": bench_units, "idle": bench_idle, "reap": bench_reap,
               "startup": bench_startup, "size": bench_size}
    sel = sys.argv[1:] or list(benches)
    bad = [s for s in sel if s not in benches]
    if bad:
        sys.exit(f"unknown benchmark(s) {bad}; choose from {list(benches)}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (cleanup(), sys.exit(128 + s)))
    started = time.time()
    load0 = fmt_load()
    print(f"flowinit: {FLOWINIT}" + ("" if os.access(FLOWINIT, os.X_OK) else "  (MISSING: flowinit halves not measured)"))
    print(f"supervisord: {SUPERVISORD}; reps {REPS}; lines {LINES}; units {UNITS}; orphans {ORPHANS}; "
          f"idle {IDLE_REPS}x{IDLE_SECS:g} s", flush=True)
    try:
        for s in sel:
            print(f"== {s}", flush=True)
            t = time.time()
            benches[s]()
            print(f"   ({s} took {time.time() - t:.0f} s)", flush=True)
    finally:
        cleanup()
    print()
    print(f"Results ({time.strftime('%Y-%m-%d %H:%M %Z')}, {os.uname().nodename}, "
          f"{os.cpu_count()} CPUs, load average {load0} at start, {fmt_load()} at end, "
          f"reps {REPS}, total {time.time() - started:.0f} s):")
    print()
    print(table())
    errs = {k: v["errors"] for k, v in RAW.items() if "errors" in v}
    if errs:
        print("\nNot measured / failed samples:")
        for k, v in errs.items():
            for s, why in v.items():
                print(f"  {k} [{s}] x{len(why)}: {why[-1]}")
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as f:
            json.dump(dict(raw=RAW, rows=RESULTS), f, indent=1, default=str)


if __name__ == "__main__":
    main()
