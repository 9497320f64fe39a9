"""Shared helpers of bench/soak.py and bench/shutdown_stress.py (stdlib only):
run flowinit as PID 1 of a fresh PID namespace (`unshare -pf --mount-proc`,
as tests/common/mod.rs does), talk to it through the control socket, and
look at its namespace from the host through /proc."""

import json, os, shutil, signal, socket, subprocess, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def find_flowinit(explicit=None):
    cands = [explicit, os.environ.get("FLOWINIT"), "/tmp/soak-target/release/flowinit",
             os.path.join(REPO, "target/release/flowinit")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise SystemExit("flowinit binary not found: build it with "
                     "`CARGO_TARGET_DIR=/tmp/soak-target cargo build --release` or pass --flowinit")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def read(path, default=""):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return default


def stat_fields(pid):
    """(state, ppid) from /proc/PID/stat, or None."""
    s = read("/proc/%d/stat" % pid)
    if not s:
        return None
    rest = s.rsplit(")", 1)[1].split()
    return rest[0], int(rest[1])


def pid_ns(pid):
    try:
        return os.readlink("/proc/%d/ns/pid" % pid)
    except OSError:
        return None


def all_pids():
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def ns_pids(pid):
    """NSpid line of /proc/PID/status: [host pid, …, innermost pid]."""
    for line in read("/proc/%d/status" % pid).splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def rss_kib(pid):
    for line in read("/proc/%d/status" % pid).splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def children(pid):
    return [int(x) for x in read("/proc/%d/task/%d/children" % (pid, pid)).split()]


def leftovers_by_path(path, exclude=()):
    """Host processes whose cmdline or cwd mentions PATH."""
    found = []
    for pid in all_pids():
        if pid == os.getpid() or pid in exclude:
            continue
        cmd = read("/proc/%d/cmdline" % pid).replace("\0", " ")
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            cwd = ""
        if path in cmd or cwd.startswith(path):
            found.append((pid, cmd.strip()[:120], cwd))
    return found


class Flowinit:
    """flowinit up as PID 1 of a new PID namespace; output to files/pipes."""

    def __init__(self, binary, units, socket_path, args=(), stdout=None, stderr=None, env=None):
        self.binary = binary
        self.socket = socket_path
        e = dict(os.environ)
        e.pop("FLOWINIT_LOG_FORMAT", None)
        e.pop("FLOWINIT_PROFILES", None)
        if env:
            e.update(env)
        argv = ["unshare", "-pf", "--mount-proc", binary, "up", "--units", units, "--socket", socket_path] + list(args)
        self.outer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=e)
        self.pid = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children(self.outer.pid)
            if kids:
                self.pid = kids[0]
                break
            if self.outer.poll() is not None:
                break
            time.sleep(0.005)
        if self.pid is None:
            self.kill()
            raise RuntimeError("flowinit did not start inside unshare (exit %s)" % self.outer.poll())
        self.ns = None
        for _ in range(200):
            self.ns = pid_ns(self.pid)
            if self.ns and self.ns != pid_ns(os.getpid()):
                break
            time.sleep(0.005)

    def alive(self):
        return self.outer.poll() is None

    def ctl(self, *args, timeout=20):
        try:
            p = subprocess.run([self.binary] + list(args) + ["--socket", self.socket], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=timeout)
            return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            return -1, "", "timed out after %ss" % timeout

    def status(self):
        code, out, err = self.ctl("status", "--json")
        try:
            return json.loads(out)["units"]
        except (ValueError, KeyError):
            return None

    def signal(self, sig):
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def ns_processes(self):
        """{host pid: (ns pid, state, host ppid)} of every process in the namespace."""
        out = {}
        if not self.ns:
            return out
        for pid in all_pids():
            if pid_ns(pid) != self.ns:
                continue
            st = stat_fields(pid)
            nsp = ns_pids(pid)
            if st and nsp:
                out[pid] = (nsp[-1], st[0], st[1])
        return out

    def host_pid(self, nspid):
        """Host pid of namespace pid NSPID, checked through NSpid, or None."""
        for pid in all_pids():
            nsp = ns_pids(pid)
            if len(nsp) >= 2 and nsp[-1] == nspid and pid_ns(pid) == self.ns:
                return pid
        return None

    def wait(self, timeout):
        try:
            return self.outer.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """SIGKILL flowinit (the namespace dies with it) and unshare, by pid."""
        for p in (self.pid, self.outer.pid):
            if p:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.outer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


PANIC_MARKS = ("panicked", "internal error (a bug)", "supervisor crashed")


def panicked(text):
    """flowinit's log shows a panic: Rust's "panicked at", flowinit's panic
    hook ("internal error (a bug) in thread …") or a crashed manager."""
    return any(m in text for m in PANIC_MARKS)


def panic_excerpt(text):
    i = min((text.index(m) for m in PANIC_MARKS if m in text), default=0)
    return text[max(0, i - 300):i + 600]


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
