//! Integration tests for single-command mode, `flowinit -- CMD [ARG]...`
//! (SPEC §2): the drop-in replacement for tini / `docker --init`.
//!
//! Every test runs the real binary with a deadline; nothing sleeps to
//! synchronise: tests poll files written by the fixtures
//! (`tests/fixtures/sc_*`) or `/proc`. Processes left behind by a failing
//! test are killed by pid (the process tree of the spawned binary), never by
//! name.
//!
//! `SC_FLOWINIT_BIN=/usr/bin/tini TINI_SUBREAPER=1 cargo test --test
//! single_command` runs the same tests against tini, the reference behaviour.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Upper bound for one run of flowinit; generous for a loaded CI machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a fixture to reach a state we wait for (ready file, log line).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn flowinit() -> PathBuf {
    match std::env::var_os("SC_FLOWINIT_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_flowinit")),
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path.to_string_lossy().into_owned()
}

/// The real python3 interpreter (not a pyenv shim script), so that the
/// process flowinit starts is the fixture itself.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import sys; print(sys.executable)"]);
        let out = start_piped(cmd, None).wait(RUN_TIMEOUT);
        assert!(out.status.success(), "python3 not usable: {}", out.describe());
        let exe = out.stdout_str().trim().to_owned();
        assert!(!exe.is_empty(), "python3 did not report sys.executable");
        exe
    })
}

/// `flowinit -- ARGS...`
fn flowinit_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(flowinit());
    cmd.arg("--").args(args);
    cmd
}

/// `flowinit -- python3 FIXTURE ARGS...`
fn flowinit_py(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(flowinit());
    cmd.arg("--").arg(python()).arg(fixture(script)).args(args);
    cmd
}

struct Outcome {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn describe(&self) -> String {
        let stdout = if self.stdout.len() > 4096 {
            format!("<{} bytes>", self.stdout.len())
        } else {
            format!("{:?}", self.stdout_str())
        };
        format!(
            "status: {:?} (code {:?}, signal {:?})\nstdout: {}\nstderr: {:?}",
            self.status,
            self.status.code(),
            self.status.signal(),
            stdout,
            self.stderr_str()
        )
    }

    fn assert_no_panic(&self) {
        assert!(!self.stderr_str().contains("panicked"), "flowinit panicked:\n{}", self.describe());
    }
}

/// A spawned process with its output being collected; killed with its whole
/// process tree if dropped before it exited (e.g. after a failed assert).
struct Running {
    child: Child,
    pid: i32,
    exited: Option<ExitStatus>,
    stdin: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn reader<R: Read + Send + 'static>(src: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    src.map(|mut src| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = src.read_to_end(&mut buf);
            buf
        })
    })
}

/// Spawns `cmd` as configured; collects whichever of stdout/stderr are piped
/// and writes `input` to stdin (then closes it) when stdin is piped.
fn try_start(cmd: &mut Command, input: Option<Vec<u8>>) -> std::io::Result<Running> {
    let mut child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    let stdin = child.stdin.take().map(|mut pipe| {
        let data = input.unwrap_or_default();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    Ok(Running { child, pid, exited: None, stdin, stdout, stderr })
}

fn start(mut cmd: Command, input: Option<Vec<u8>>) -> Running {
    try_start(&mut cmd, input).unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
}

/// Spawns `cmd` with stdout and stderr piped; stdin is `input` (then closed)
/// or /dev/null.
fn start_piped(mut cmd: Command, input: Option<Vec<u8>>) -> Running {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    start(cmd, input)
}

/// Runs `cmd` (stdio piped) to completion within RUN_TIMEOUT.
fn run(cmd: Command) -> Outcome {
    start_piped(cmd, None).wait(RUN_TIMEOUT)
}

impl Running {
    fn signal(&self, sig: Signal) {
        assert!(self.exited.is_none(), "process {} already exited", self.pid);
        kill(Pid::from_raw(self.pid), sig).unwrap_or_else(|e| panic!("kill({}, {sig}) failed: {e}", self.pid));
    }

    /// The exit status, if the process has exited (it is then reaped).
    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = try_reap(&mut self.child).expect("try_wait");
        }
        self.exited
    }

    /// Waits for exit within `timeout`; on timeout kills the process tree and
    /// fails the test with whatever output was collected.
    fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        while self.try_status().is_none() && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        let timed_out = self.try_status().is_none();
        if timed_out {
            self.kill_and_reap();
        }
        if let Some(stdin) = self.stdin.take() {
            let _ = stdin.join();
        }
        let outcome = Outcome {
            status: self.exited.expect("process exited"),
            stdout: join_output(self.stdout.take()),
            stderr: join_output(self.stderr.take()),
        };
        assert!(!timed_out, "process {} did not exit within {timeout:?}; killed it\n{}", self.pid, outcome.describe());
        outcome
    }

    /// SIGKILLs the process tree and reaps the process (bounded).
    fn kill_and_reap(&mut self) {
        kill_tree(self.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = try_reap(&mut self.child) {
                self.exited = Some(status);
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Non-blocking wait for a process this test spawned. The "only
/// process::reaper waits" rule is about flowinit's own children; here the
/// test harness is the parent and must collect the binary's exit status.
#[expect(clippy::disallowed_methods, reason = "the test harness is the parent of the process it runs")]
fn try_reap(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    child.try_wait()
}

fn join_output(handle: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.map(|h| h.join().expect("output reader thread")).unwrap_or_default()
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exited.is_none() && !matches!(try_reap(&mut self.child), Ok(Some(_))) {
            self.kill_and_reap();
        }
    }
}

/// (state, ppid) of a process, from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

fn children_of(pid: i32) -> Vec<i32> {
    all_pids().into_iter().filter(|&p| proc_stat(p).is_some_and(|(_, ppid)| ppid == pid)).collect()
}

/// SIGKILLs `root` and all its descendants, by pid. Descendants are collected
/// first, while they are still linked to `root` by their parent pids.
fn kill_tree(root: i32) {
    let mut tree = BTreeSet::from([root]);
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        for child in children_of(pid) {
            if tree.insert(child) {
                frontier.push(child);
            }
        }
    }
    for pid in tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Polls `f` until it returns Some, failing the test after `timeout`.
fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until a fixture has written `path` (fixtures write atomically);
/// fails with the process's output if it exits first.
fn wait_for_file(mut running: Running, path: &Path) -> Running {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if path.exists() {
            return running;
        }
        if let Some(status) = running.try_status() {
            let pid = running.pid;
            let out = running.wait(RUN_TIMEOUT);
            panic!("process {pid} exited ({status:?}) before {} appeared\n{}", path.display(), out.describe());
        }
        assert!(Instant::now() < deadline, "timed out after {READY_TIMEOUT:?} waiting for {}", path.display());
        thread::sleep(POLL_INTERVAL);
    }
}

static TEMP_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "flowinit-sc-{tag}-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Whether `unshare -pf --mount-proc` works here (needs root or user
/// namespaces); prints why a test is skipped when it does not.
fn unshare_available(test: &str) -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = AVAILABLE.get_or_init(|| {
        let mut cmd = Command::new("unshare");
        cmd.args(["-pf", "--mount-proc", "true"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = try_start(&mut cmd, None).map_err(|e| format!("cannot run unshare: {e}"))?.wait(RUN_TIMEOUT);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("`unshare -pf --mount-proc true` failed: {}", out.describe()))
        }
    });
    match result {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: PID namespaces unavailable (need root): {why}");
            false
        }
    }
}

/// `unshare -pf --mount-proc FLOWINIT -- ARGS...`: flowinit is PID 1 of a
/// fresh PID namespace with its own /proc.
fn unshare_flowinit(args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-pf", "--mount-proc"]).arg(flowinit()).arg("--").args(args);
    cmd
}

/// Value after `key=` on the line starting with it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim)
}

// ---------------------------------------------------------------------------
// exit status
// ---------------------------------------------------------------------------

fn assert_exit_code_passthrough(code: i32) {
    let out = run(flowinit_cmd(&["sh", "-c", &format!("exit {code}")]));
    assert_eq!(out.code(), Some(code), "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn exit_code_0_is_passed_through() {
    assert_exit_code_passthrough(0);
}

#[test]
fn exit_code_3_is_passed_through() {
    assert_exit_code_passthrough(3);
}

#[test]
fn exit_code_255_is_passed_through() {
    assert_exit_code_passthrough(255);
}

#[test]
fn child_killed_by_sigkill_exits_137() {
    let out = run(flowinit_cmd(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(out.code(), Some(137), "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn child_killed_by_unhandled_sigusr1_exits_138() {
    let out = run(flowinit_cmd(&["sh", "-c", "kill -USR1 $$"]));
    assert_eq!(out.code(), Some(138), "{}", out.describe());
    out.assert_no_panic();
}

// ---------------------------------------------------------------------------
// signal forwarding
// ---------------------------------------------------------------------------

/// Starts `sc_trap.py` under flowinit handling `signame` (or "none"), waits
/// until it is ready, sends `sig` to flowinit, and returns the outcome and
/// the marker file's content.
fn send_signal_to_trap(signame: &str, exit_code: &str, sig: Signal) -> (Outcome, Option<String>) {
    let dir = TempDir::new("trap");
    let ready = dir.file("ready");
    let marker = dir.file("marker");
    let running = start_piped(flowinit_py("sc_trap.py", &[s(&ready), s(&marker), signame, exit_code]), None);
    let running = wait_for_file(running, &ready);
    running.signal(sig);
    let out = running.wait(RUN_TIMEOUT);
    out.assert_no_panic();
    (out, fs::read_to_string(&marker).ok())
}

#[test]
fn sigterm_is_forwarded_to_child() {
    let (out, marker) = send_signal_to_trap("TERM", "0", Signal::SIGTERM);
    assert_eq!(marker.as_deref(), Some("TERM\n"), "child did not handle a forwarded SIGTERM\n{}", out.describe());
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}

#[test]
fn sigusr1_is_forwarded_to_child() {
    let (out, marker) = send_signal_to_trap("USR1", "42", Signal::SIGUSR1);
    assert_eq!(marker.as_deref(), Some("USR1\n"), "child did not handle a forwarded SIGUSR1\n{}", out.describe());
    assert_eq!(out.code(), Some(42), "{}", out.describe());
}

#[test]
fn forwarded_sigusr1_kills_child_without_handler_exits_138() {
    let (out, marker) = send_signal_to_trap("none", "0", Signal::SIGUSR1);
    assert_eq!(marker, None);
    assert_eq!(out.code(), Some(138), "{}", out.describe());
}

#[test]
fn common_signals_are_forwarded_in_order() {
    let dir = TempDir::new("signals");
    let ready = dir.file("ready");
    let log = dir.file("log");
    let running = start_piped(flowinit_py("sc_signals.py", &[s(&ready), s(&log)]), None);
    let running = wait_for_file(running, &ready);
    let sequence = [
        ("HUP", Signal::SIGHUP),
        ("INT", Signal::SIGINT),
        ("QUIT", Signal::SIGQUIT),
        ("USR1", Signal::SIGUSR1),
        ("USR2", Signal::SIGUSR2),
        ("WINCH", Signal::SIGWINCH),
    ];
    let mut expected = Vec::new();
    for (name, sig) in sequence {
        running.signal(sig);
        expected.push(name);
        poll_until(READY_TIMEOUT, &format!("child to log forwarded SIG{name}; expected log {expected:?}"), || {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let got: Vec<&str> = text.lines().collect();
            (got == expected).then_some(())
        });
    }
    running.signal(Signal::SIGTERM);
    let out = running.wait(RUN_TIMEOUT);
    out.assert_no_panic();
    expected.push("TERM");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{}", out.describe());
    assert_eq!(out.code(), Some(7), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// fault signals: forwarded when another process sends them, fatal when real
// ---------------------------------------------------------------------------

/// `kill -SIGNAME <flowinit>` must reach the child (which handles it and
/// exits with `code`), not kill flowinit and orphan the child.
fn assert_sent_fault_signal_is_forwarded(name: &str, sig: Signal, code: i32) {
    let (out, marker) = send_signal_to_trap(name, &code.to_string(), sig);
    assert_eq!(
        marker.as_deref(),
        Some(format!("{name}\n").as_str()),
        "child did not get the SIG{name} sent to flowinit\n{}",
        out.describe()
    );
    assert_eq!(out.code(), Some(code), "flowinit did not pass on the child's exit code\n{}", out.describe());
}

#[test]
fn sent_sigill_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("ILL", Signal::SIGILL, 41);
}

#[test]
fn sent_sigabrt_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("ABRT", Signal::SIGABRT, 42);
}

#[test]
fn sent_sigbus_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("BUS", Signal::SIGBUS, 43);
}

#[test]
fn sent_sigfpe_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("FPE", Signal::SIGFPE, 44);
}

#[test]
fn sent_sigsegv_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("SEGV", Signal::SIGSEGV, 45);
}

#[test]
fn sent_sigtrap_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("TRAP", Signal::SIGTRAP, 46);
}

#[test]
fn sent_sigsys_is_forwarded_to_child() {
    assert_sent_fault_signal_is_forwarded("SYS", Signal::SIGSYS, 47);
}

#[test]
fn child_killed_by_sigsegv_exits_139() {
    let out = run(flowinit_cmd(&["sh", "-c", "kill -SEGV $$"]));
    assert_eq!(out.code(), Some(139), "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn forwarded_sigsegv_kills_child_without_handler_exits_139() {
    let (out, marker) = send_signal_to_trap("none", "0", Signal::SIGSEGV);
    assert_eq!(marker, None);
    assert_eq!(out.code(), Some(139), "{}", out.describe());
}

/// As PID 1 of a namespace, a SIGSEGV from outside it (si_pid 0) is
/// forwarded like SIGTERM.
#[test]
fn pid1_forwards_sigsegv_from_outside_namespace() {
    if !unshare_available("pid1_forwards_sigsegv_from_outside_namespace") {
        return;
    }
    let dir = TempDir::new("pid1-segv");
    let ready = dir.file("ready");
    let marker = dir.file("marker");
    let script = fixture("sc_trap.py");
    let running = start_piped(unshare_flowinit(&[python(), &script, s(&ready), s(&marker), "SEGV", "45"]), None);
    let running = wait_for_file(running, &ready);
    let unshare_pid = running.pid;
    let flowinit_pid =
        poll_until(READY_TIMEOUT, "flowinit as child of unshare", || match children_of(unshare_pid).as_slice() {
            [pid] => Some(*pid),
            _ => None,
        });
    kill(Pid::from_raw(flowinit_pid), Signal::SIGSEGV).expect("signal flowinit");
    let out = running.wait(RUN_TIMEOUT);
    assert_eq!(fs::read_to_string(&marker).ok().as_deref(), Some("SEGV\n"), "{}", out.describe());
    assert_eq!(out.code(), Some(45), "{}", out.describe());
    out.assert_no_panic();
}

/// A real fault of flowinit's own still kills it, although the fault
/// signals are blocked for sigwaitinfo: a seccomp filter makes flowinit's
/// kill(2) (forwarding SIGUSR1) raise a synchronous SIGSYS, which the
/// kernel forces through the block.
#[test]
fn a_real_fault_of_flowinit_still_crashes_it() {
    let dir = TempDir::new("fault");
    let ready = dir.file("ready");
    let marker = dir.file("marker");
    let mut cmd = Command::new(python());
    cmd.arg(fixture("sc_seccomp_kill.py")).arg(flowinit()).arg("--").arg(python()).arg(fixture("sc_trap.py")).args([
        s(&ready),
        s(&marker),
        "USR1",
        "0",
    ]);
    // Output to a file, not a pipe: the orphaned child keeps its copy open.
    let log = dir.file("log");
    let file = fs::File::create(&log).expect("create log file");
    cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("clone log file")).stderr(file);
    let running = wait_for_file(start(cmd, None), &ready);
    let child: i32 = fs::read_to_string(&ready).expect("ready file").trim().parse().expect("child pid");
    running.signal(Signal::SIGUSR1);
    let out = running.wait(RUN_TIMEOUT);
    // The child was orphaned (never signalled): kill it by its pid.
    let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    let output = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "flowinit survived its own fault: {:?}\n{output}", out.status);
    assert_eq!(fs::read_to_string(&marker).ok(), None, "the child got the signal: kill(2) was not trapped");
}

// ---------------------------------------------------------------------------
// working directory
// ---------------------------------------------------------------------------

fn cwd_of(pid: i32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|e| panic!("cwd of {pid}: {e}"))
}

/// flowinit's cwd once it is / (it changes there right after the spawn;
/// on a loaded machine that may come after the child is ready), or the
/// cwd it still has after READY_TIMEOUT.
fn settled_cwd(pid: i32) -> PathBuf {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let cwd = cwd_of(pid);
        if cwd == Path::new("/") || Instant::now() >= deadline {
            return cwd;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Starts `sc_trap.py` (TERM handler) through `cmd`, run in a fresh
/// directory; returns that directory (canonical), the fixture's pid and
/// the running process.
fn start_in_temp_dir(tag: &str, cmd: impl FnOnce(&Path, &Path) -> Command) -> (TempDir, PathBuf, i32, Running) {
    let dir = TempDir::new(tag);
    let (ready, marker) = (dir.file("ready"), dir.file("marker"));
    let mut cmd = cmd(&ready, &marker);
    cmd.current_dir(&dir.0);
    let running = wait_for_file(start_piped(cmd, None), &ready);
    let child: i32 = fs::read_to_string(&ready).expect("ready file").trim().parse().expect("child pid");
    let start = fs::canonicalize(&dir.0).expect("canonical temp dir");
    (dir, start, child, running)
}

/// Like dumb-init, flowinit does not hold its start directory (it changes
/// to / after starting the child); the child runs where it was started.
#[test]
fn flowinit_leaves_its_start_dir_the_child_keeps_it() {
    let (_dir, start, child, running) =
        start_in_temp_dir("cwd", |ready, marker| flowinit_py("sc_trap.py", &[s(ready), s(marker), "TERM", "0"]));
    let flowinit_cwd = settled_cwd(running.pid);
    let child_cwd = cwd_of(child);
    running.signal(Signal::SIGTERM);
    let out = running.wait(RUN_TIMEOUT);
    assert_eq!(flowinit_cwd, Path::new("/"), "flowinit kept its start directory\n{}", out.describe());
    assert_eq!(child_cwd, start, "the child does not run in the start directory\n{}", out.describe());
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}

#[test]
fn pid1_leaves_its_start_dir_the_child_keeps_it() {
    if !unshare_available("pid1_leaves_its_start_dir_the_child_keeps_it") {
        return;
    }
    let (_dir, start, child_ns_pid, running) = start_in_temp_dir("cwd-pid1", |ready, marker| {
        unshare_flowinit(&[python(), &fixture("sc_trap.py"), s(ready), s(marker), "TERM", "0"])
    });
    assert_eq!(child_ns_pid, 2, "the fixture is not flowinit's first child in the namespace");
    let flowinit_pid =
        poll_until(READY_TIMEOUT, "flowinit as child of unshare", || match children_of(running.pid).as_slice() {
            [pid] => Some(*pid),
            _ => None,
        });
    let child =
        poll_until(READY_TIMEOUT, "the fixture as child of flowinit", || match children_of(flowinit_pid).as_slice() {
            [pid] => Some(*pid),
            _ => None,
        });
    let flowinit_cwd = settled_cwd(flowinit_pid);
    let child_cwd = cwd_of(child);
    kill(Pid::from_raw(flowinit_pid), Signal::SIGTERM).expect("signal flowinit");
    let out = running.wait(RUN_TIMEOUT);
    assert_eq!(flowinit_cwd, Path::new("/"), "flowinit as PID 1 kept its start directory\n{}", out.describe());
    assert_eq!(child_cwd, start, "{}", out.describe());
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// stdio
// ---------------------------------------------------------------------------

#[test]
fn stdin_to_stdout_passthrough_is_byte_exact() {
    // Every byte value, 1 MiB in total (more than any pipe buffer), and no
    // trailing newline.
    let mut input: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    input.extend_from_slice(b"\r\n\x00last line without newline \xff\xfe");
    let out = start_piped(flowinit_cmd(&["cat"]), Some(input.clone())).wait(RUN_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout.len(), input.len(), "stdout length differs");
    assert!(out.stdout == input, "stdout differs from stdin");
    out.assert_no_panic();
}

#[test]
fn child_stderr_reaches_stderr_and_stdout_is_untouched() {
    let out = run(flowinit_cmd(&["sh", "-c", "printf 'sc-to-stderr\\n' >&2; printf 'sc-to-stdout'"]));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, b"sc-to-stdout", "{}", out.describe());
    assert!(out.stderr_str().contains("sc-to-stderr\n"), "{}", out.describe());
    out.assert_no_panic();
}

/// "Passed through untouched": the child's fds 0, 1, 2 are flowinit's own
/// (the same open files), not pipes that flowinit copies.
#[test]
fn stdio_fds_are_inherited_not_proxied() {
    let dir = TempDir::new("fds");
    let (inp, outp, errp) = (dir.file("in"), dir.file("out"), dir.file("err"));
    fs::write(&inp, b"input\n").expect("write stdin file");
    let mut cmd = flowinit_cmd(&["readlink", "/proc/self/fd/0", "/proc/self/fd/1"]);
    cmd.stdin(fs::File::open(&inp).expect("open stdin file"))
        .stdout(fs::File::create(&outp).expect("create stdout file"))
        .stderr(fs::File::create(&errp).expect("create stderr file"));
    let out = start(cmd, None).wait(RUN_TIMEOUT);
    let stdout = fs::read_to_string(&outp).unwrap_or_default();
    let stderr = fs::read_to_string(&errp).unwrap_or_default();
    assert_eq!(out.code(), Some(0), "status {:?}; stdout {stdout:?}; stderr {stderr:?}", out.status);
    assert_eq!(
        stdout,
        format!("{}\n{}\n", inp.display(), outp.display()),
        "child's stdin/stdout are not flowinit's own files; stderr {stderr:?}"
    );

    let mut cmd = flowinit_cmd(&["readlink", "/proc/self/fd/2"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(fs::File::create(&errp).expect("create stderr file"));
    let out = start(cmd, None).wait(RUN_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout_str(), format!("{}\n", errp.display()), "child's stderr is not flowinit's own stderr");
}

/// Everything after `--` CMD belongs to CMD, including things that look like
/// flowinit's own flags.
#[test]
fn arguments_are_passed_verbatim() {
    let out = run(flowinit_cmd(&["printf", "[%s]", "a b", "", "--", "--help", "-v", "*", "$HOME"]));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout_str(), "[a b][][--][--help][-v][*][$HOME]", "{}", out.describe());
    out.assert_no_panic();
}

/// Arguments are bytes on Unix: non-UTF-8 ones must reach CMD unchanged
/// (and must not make flowinit panic).
#[test]
fn non_utf8_arguments_are_passed_verbatim() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let arg = OsStr::from_bytes(b"caf\xe9 \xff\xfe end");
    let mut cmd = flowinit_cmd(&["printf", "[%s]"]);
    cmd.arg(arg);
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, b"[caf\xe9 \xff\xfe end]", "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn environment_is_passed_through() {
    let mut cmd = flowinit_cmd(&["sh", "-c", "printf '%s' \"$SC_FLOWINIT_VAR\""]);
    cmd.env("SC_FLOWINIT_VAR", "x y=z ${NOT_EXPANDED} $$");
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout_str(), "x y=z ${NOT_EXPANDED} $$", "{}", out.describe());
    out.assert_no_panic();
}

/// `docker run -it`: with a terminal on stdin the child must be able to read
/// it, i.e. be in the terminal's foreground process group. `script` gives
/// flowinit a pseudo-terminal as controlling terminal and stdio.
#[test]
fn terminal_stdin_is_usable_by_child() {
    let mut probe = Command::new("script");
    probe.arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Err(e) = try_start(&mut probe, None).map(|r| r.wait(RUN_TIMEOUT)) {
        eprintln!("SKIPPED terminal_stdin_is_usable_by_child: no `script` (util-linux): {e}");
        return;
    }
    let inner = format!("{} -- {} {}; echo sc-rc=$?", flowinit().display(), python(), fixture("sc_tty.py"));
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]);
    let out = start_piped(cmd, Some(b"sc-typed-line\n".to_vec())).wait(RUN_TIMEOUT);
    let stdout = out.stdout_str();
    assert!(
        stdout.contains("isatty=True fg=True"),
        "child is not in the terminal's foreground group\n{}",
        out.describe()
    );
    assert!(stdout.contains("line=sc-typed-line"), "child could not read the terminal\n{}", out.describe());
    assert!(stdout.contains("sc-rc=0"), "{}", out.describe());
    out.assert_no_panic();
}

// ---------------------------------------------------------------------------
// bad invocations
// ---------------------------------------------------------------------------

#[test]
fn usage_error_without_command_exits_2() {
    let mut cmd = Command::new(flowinit());
    cmd.arg("--");
    let out = run(cmd);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(!out.stderr_str().trim().is_empty(), "usage error without a message on stderr\n{}", out.describe());
    out.assert_no_panic();
}

fn assert_fails_naming(program: &str, out: &Outcome) {
    assert!(!out.status.success() && out.code().is_some(), "expected a non-zero exit code\n{}", out.describe());
    assert!(out.stderr_str().contains(program), "stderr does not name {program:?}\n{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn missing_command_on_path_fails_naming_it() {
    let program = "sc-no-such-program-7f3a";
    let out = run(flowinit_cmd(&[program, "arg"]));
    assert_fails_naming(program, &out);
}

#[test]
fn missing_command_by_path_fails_naming_it() {
    let program = "/nonexistent-sc-dir/sc_no_such_program";
    let out = run(flowinit_cmd(&[program]));
    assert_fails_naming(program, &out);
}

#[test]
fn non_executable_command_fails_naming_it() {
    let dir = TempDir::new("noexec");
    let program = dir.file("sc_not_executable");
    fs::write(&program, "#!/bin/sh\nexit 0\n").expect("write file");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(flowinit_cmd(&[s(&program)]));
    assert_fails_naming(s(&program), &out);
}

#[test]
fn a_file_the_kernel_cannot_exec_exits_126_with_its_error() {
    // Executable, but neither ELF nor `#!`: execve says ENOEXEC (like
    // docker run; no silent fallback to /bin/sh).
    let dir = TempDir::new("enoexec");
    let program = dir.file("sc_not_a_program");
    fs::write(&program, "echo this is text\n").expect("write file");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run(flowinit_cmd(&[s(&program)]));
    assert_eq!(out.code(), Some(126), "{}", out.describe());
    assert_fails_naming(s(&program), &out);
    assert!(out.stderr_str().contains("Exec format error"), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// zombies: as PID 1 and as a child subreaper
// ---------------------------------------------------------------------------

#[test]
fn pid1_reaps_orphaned_zombies_and_passes_exit_code() {
    if !unshare_available("pid1_reaps_orphaned_zombies_and_passes_exit_code") {
        return;
    }
    let script = fixture("sc_orphans.py");
    let out = run(unshare_flowinit(&[python(), &script, "5", "50"]));
    let stdout = out.stdout_str();
    assert_eq!(
        field(&stdout, "pid"),
        Some("2"),
        "fixture is not flowinit's first child in the new PID namespace\n{}",
        out.describe()
    );
    assert_eq!(
        field(&stdout, "reparented_to_1"),
        Some("50 of 50"),
        "orphans were not reparented to flowinit as PID 1\n{}",
        out.describe()
    );
    assert_eq!(
        field(&stdout, "zombies"),
        Some("0 live=0"),
        "flowinit as PID 1 left orphans unreaped\n{}",
        out.describe()
    );
    assert_eq!(out.code(), Some(5), "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn pid1_passes_through_death_by_signal() {
    if !unshare_available("pid1_passes_through_death_by_signal") {
        return;
    }
    let out = run(unshare_flowinit(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(out.code(), Some(137), "{}", out.describe());
    out.assert_no_panic();
}

/// `docker stop` sends SIGTERM to PID 1 from outside its PID namespace: the
/// kernel drops signals with default disposition there, so flowinit must
/// catch (or block and wait for) SIGTERM and forward it.
#[test]
fn pid1_forwards_sigterm_from_outside_namespace() {
    if !unshare_available("pid1_forwards_sigterm_from_outside_namespace") {
        return;
    }
    let dir = TempDir::new("pid1-term");
    let ready = dir.file("ready");
    let marker = dir.file("marker");
    let script = fixture("sc_trap.py");
    let running = start_piped(unshare_flowinit(&[python(), &script, s(&ready), s(&marker), "TERM", "0"]), None);
    let running = wait_for_file(running, &ready);
    let unshare_pid = running.pid;
    let flowinit_pid =
        poll_until(READY_TIMEOUT, "flowinit as child of unshare", || match children_of(unshare_pid).as_slice() {
            [pid] => Some(*pid),
            _ => None,
        });
    let exe = fs::read_link(format!("/proc/{flowinit_pid}/exe")).ok();
    assert_eq!(
        exe.as_deref().and_then(|p| p.file_name()),
        fs::canonicalize(flowinit()).ok().as_deref().and_then(|p| p.file_name()),
        "child {flowinit_pid} of unshare is not flowinit"
    );
    kill(Pid::from_raw(flowinit_pid), Signal::SIGTERM).expect("signal flowinit");
    let out = running.wait(RUN_TIMEOUT);
    assert_eq!(
        fs::read_to_string(&marker).ok().as_deref(),
        Some("TERM\n"),
        "SIGTERM sent to flowinit as PID 1 did not reach the child\n{}",
        out.describe()
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.assert_no_panic();
}

#[test]
fn subreaper_adopts_and_reaps_orphans() {
    let dir = TempDir::new("subreaper");
    let ppid_file = dir.file("ppid");
    let running = start_piped(flowinit_py("sc_subreaper.py", &[s(&ppid_file)]), None);
    let flowinit_pid = running.pid;
    let out = running.wait(RUN_TIMEOUT);
    let stdout = out.stdout_str();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        field(&stdout, "flowinit_pid"),
        Some(flowinit_pid.to_string().as_str()),
        "fixture is not flowinit's direct child\n{}",
        out.describe()
    );
    let info = fs::read_to_string(&ppid_file).unwrap_or_default();
    assert_eq!(
        field(&info, "ppid"),
        Some(flowinit_pid.to_string().as_str()),
        "orphan was not reparented to flowinit (pid {flowinit_pid}): no \
         PR_SET_CHILD_SUBREAPER?\n{}",
        out.describe()
    );
    assert_eq!(
        field(&stdout, "grandchild_reaped"),
        Some("yes (state None)"),
        "flowinit did not reap the adopted orphan\n{}",
        out.describe()
    );
    assert_eq!(field(&stdout, "zombie_children_of_flowinit"), Some("0"), "{}", out.describe());
    out.assert_no_panic();
}

// ---------------------------------------------------------------------------
// signal state of the child
// ---------------------------------------------------------------------------

/// (SigBlk, SigIgn) as printed by sc_sigmask.sh.
fn parse_masks(out: &Outcome) -> (u64, u64) {
    let text = out.stdout_str();
    let get = |key: &str| {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line\n{}", out.describe()));
        u64::from_str_radix(value.trim(), 16).unwrap_or_else(|e| panic!("bad {key} value {value:?}: {e}"))
    };
    (get("SigBlk:"), get("SigIgn:"))
}

#[test]
fn child_has_empty_signal_mask_and_no_ignored_signals() {
    let wrap = fixture("sc_sigwrap.py");
    let mask = fixture("sc_sigmask.sh");

    // Control: the wrapper does leave SIGINT ignored and SIGUSR2 blocked
    // across exec, so the real check below is meaningful.
    let mut cmd = Command::new(python());
    cmd.args([wrap.as_str(), "/bin/sh", mask.as_str()]);
    let control = run(cmd);
    assert_eq!(control.code(), Some(0), "{}", control.describe());
    let (blocked, ignored) = parse_masks(&control);
    assert_ne!(blocked & (1 << (libc::SIGUSR2 - 1)), 0, "{}", control.describe());
    assert_ne!(ignored & (1 << (libc::SIGINT - 1)), 0, "{}", control.describe());

    // flowinit inherits that state and must not pass it on.
    let mut cmd = Command::new(python());
    cmd.arg(&wrap).arg(flowinit()).args(["--", "/bin/sh", mask.as_str()]);
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let (blocked, ignored) = parse_masks(&out);
    assert_eq!(blocked, 0, "child of flowinit has blocked signals (SigBlk {blocked:016x})\n{}", out.describe());
    assert_eq!(ignored, 0, "child of flowinit has ignored signals (SigIgn {ignored:016x})\n{}", out.describe());
    out.assert_no_panic();
}

/// A parent that leaves SIGCHLD ignored makes the kernel auto-reap children
/// unless flowinit restores the default disposition for itself: then the
/// exit status would be lost (or flowinit would wait forever).
#[test]
fn inherited_ignored_sigchld_does_not_lose_exit_status() {
    let mut cmd = Command::new(python());
    cmd.arg(fixture("sc_sigwrap.py")).arg("--ignore-sigchld").arg(flowinit()).args(["--", "sh", "-c", "exit 3"]);
    let out = start_piped(cmd, None).wait(Duration::from_secs(10));
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    out.assert_no_panic();
}
