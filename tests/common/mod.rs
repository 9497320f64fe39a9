//! Shared harness for integration tests: temp dirs, running the real
//! `flowinit` binary (optionally as PID 1 of a fresh PID namespace) with its
//! output captured to files, polling with deadlines, cleanup by pid.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowinit");

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "flowinit-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("units")).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn units(&self) -> PathBuf {
        self.0.join("units")
    }
    /// Writes units/NAME.toml; `{dir}` in the text becomes the temp dir.
    pub fn unit(&self, name: &str, text: &str) {
        let text = text.replace("{dir}", &self.0.to_string_lossy());
        fs::write(self.units().join(format!("{name}.toml")), text).unwrap();
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.file(name)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub struct Flowinit {
    child: Child,
    /// The pid of flowinit itself (differs from child's when run via unshare).
    pub pid: i32,
    pub out: PathBuf,
    pub err: PathBuf,
    status: Option<ExitStatus>,
    pub socket: PathBuf,
}

#[allow(clippy::disallowed_methods)]
pub fn ctl_at(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).arg("--socket").arg(socket).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Default)]
pub struct Opts<'a> {
    pub pid1: bool,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Start flowinit with SIGUSR2 ignored and SIGUSR1 blocked, as a careless
    /// parent might: neither may leak into the services.
    pub dirty_signals: bool,
    /// A command that runs flowinit, e.g. `["prlimit", "--nofile=1024:1024"]`
    /// (it must exec flowinit, so that the pid is flowinit's).
    pub wrap: &'a [&'a str],
    /// The directory flowinit starts in (default: the test's).
    pub cwd: Option<&'a Path>,
    /// The `--units` argument as given (e.g. a relative path); default:
    /// the temp dir's `units`, absolute.
    pub units: Option<&'a str>,
    /// The `--socket` argument as given (e.g. a relative path, then taken
    /// against `cwd` for [`Flowinit::ctl`]); default: the temp dir's
    /// `ctl.sock`, absolute.
    pub socket: Option<&'a str>,
}

impl Flowinit {
    /// `flowinit up --units DIR/units ARGS…`
    pub fn up(dir: &TempDir, opts: Opts) -> Flowinit {
        let out = dir.file("flowinit.out");
        let err = dir.file("flowinit.err");
        let units = opts.units.map_or_else(|| dir.units().to_string_lossy().into_owned(), String::from);
        let socket_arg = opts.socket.map_or_else(|| dir.file("ctl.sock"), PathBuf::from);
        let socket = match opts.cwd {
            Some(cwd) => cwd.join(&socket_arg),
            None => std::env::current_dir().unwrap().join(&socket_arg),
        };
        let mut argv: Vec<String> =
            vec!["up".into(), "--units".into(), units, "--socket".into(), socket_arg.to_string_lossy().into()];
        argv.extend(opts.args.iter().map(|s| s.to_string()));
        let mut cmd = if opts.pid1 {
            let mut c = Command::new("unshare");
            c.args(["-pf", "--mount-proc"]).args(opts.wrap).arg(BIN);
            c
        } else if let Some((first, rest)) = opts.wrap.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .env_remove("FLOWINIT_LOG_FORMAT")
            .env_remove("FLOWINIT_PROFILES");
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = opts.cwd {
            cmd.current_dir(cwd);
        }
        if opts.dirty_signals {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGUSR2, libc::SIG_IGN);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGUSR1);
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let outer = child.id() as i32;
        let pid = if opts.pid1 {
            wait_for("flowinit inside unshare", Duration::from_secs(10), || {
                let kids = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
                kids.split_whitespace().next()?.parse().ok()
            })
        } else {
            outer
        };
        Flowinit { child, pid, out, err, status: None, socket }
    }

    /// Runs `flowinit ARGS --socket <this daemon's socket>`; returns
    /// (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        ctl_at(&self.socket, args)
    }

    /// Waits until `flowinit status --json` shows `unit` in `state`.
    pub fn wait_state(&self, unit: &str, state: &str) -> serde_json::Value {
        wait_for(&format!("unit {unit} {state}"), Duration::from_secs(30), || {
            let (_, out, _) = self.ctl(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let u = v["units"].as_array()?.iter().find(|u| u["name"] == unit)?.clone();
            (u["state"] == state).then_some(u)
        })
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default()).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// Waits until flowinit's stderr contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("{needle:?} in flowinit's stderr"), timeout, || self.stderr().contains(needle).then_some(()));
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            #[allow(clippy::disallowed_methods)]
            let s = self.child.try_wait().unwrap();
            self.status = s;
        }
        self.status
    }

    /// Waits for exit; returns (exit code, elapsed).
    pub fn wait_exit(&mut self, timeout: Duration) -> (i32, Duration) {
        let start = Instant::now();
        let status = wait_for("flowinit to exit", timeout, || self.try_exit());
        (status.code().unwrap_or(-1), start.elapsed())
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn stop(&mut self, timeout: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).0
    }
}

impl Drop for Flowinit {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // A failed test must not leak services: freeze flowinit, kill
            // everything below it, then flowinit itself (all by pid).
            let mut victims = descendants(self.pid);
            victims.push(self.pid);
            victims.push(self.child.id() as i32);
            // SAFETY: kill(2) by pid of processes we spawned ourselves.
            unsafe {
                libc::kill(self.pid, libc::SIGSTOP);
                for p in descendants(self.pid).into_iter().chain(victims) {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            #[allow(clippy::disallowed_methods)]
            let _ = self.child.wait();
        }
    }
}

pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

pub fn read_pid(dir: &TempDir, name: &str) -> i32 {
    wait_for(&format!("pid file {name}"), Duration::from_secs(10), || dir.read(name).trim().parse().ok())
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every live descendant of `root`, found through /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()) else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Additions for tests/snapshots.rs and tests/operations.rs.
// ---------------------------------------------------------------------------

/// Runs the binary with `args` and a scrubbed environment (no FLOWINIT_*
/// variables of the caller) plus `env`, in its own process group, output to
/// files in `dir`; past `timeout` the group and everything below it is
/// killed. Returns (exit code, stdout, stderr); -1 for no code.
pub fn run_bounded(dir: &TempDir, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (i32, String, String) {
    run_within(dir, args, env, timeout)
        .unwrap_or_else(|err| panic!("flowinit {args:?} did not exit within {timeout:?}\n{err}"))
}

/// [`run_bounded`] that reports a run killed at `timeout` as Err(its stderr)
/// instead of panicking.
pub fn run_within(
    dir: &TempDir,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(i32, String, String), String> {
    use std::os::unix::process::CommandExt;
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let (out, err) = (dir.file(&format!("run-{n}.out")), dir.file(&format!("run-{n}.err")));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWINIT_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    #[allow(clippy::disallowed_methods)]
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group and descendants of our
            // own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
                for p in descendants(pid) {
                    libc::kill(p, libc::SIGKILL);
                }
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    match status {
        Some(s) => Ok((s.code().unwrap_or(-1), read(&out), read(&err))),
        None => Err(read(&err)),
    }
}

/// The real Python interpreter (not a pyenv shim), so that a unit's pid is
/// the interpreter's from the start.
pub fn python() -> &'static str {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        #[allow(clippy::disallowed_methods)]
        let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!path.is_empty(), "python3 not found");
        path
    })
}

impl Flowinit {
    /// Like [`Flowinit::up`] (without `pid1` and `dirty_signals`), but
    /// started as `PREFIX… flowinit up …` through a program that execs
    /// flowinit in place (`prlimit --nofile=…`), so the pid stays the same.
    pub fn up_via(dir: &TempDir, prefix: &[&str], args: &[&str]) -> Flowinit {
        let out = dir.file("flowinit.out");
        let err = dir.file("flowinit.err");
        let socket = dir.file("ctl.sock");
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .arg(BIN)
            .arg("up")
            .arg("--units")
            .arg(dir.units())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .env_remove("FLOWINIT_LOG_FORMAT")
            .env_remove("FLOWINIT_PROFILES");
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        wait_for("flowinit exec'd by the prefix", Duration::from_secs(10), || {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            (exe == Path::new(BIN)).then_some(())
        });
        Flowinit { child, pid, out, err, status: None, socket }
    }

    /// The entry of `unit` in `status --json`, if the daemon answers.
    pub fn unit_json(&self, unit: &str) -> Option<serde_json::Value> {
        let (_, out, _) = self.ctl(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["units"].as_array()?.iter().find(|u| u["name"] == unit).cloned()
    }
}

/// Kills, on drop, every pid listed (one per line) in the given files whose
/// process still runs `comm` — processes a fixture left behind outside
/// flowinit's reach. The name check guards against a reused pid.
pub struct PidFileReaper {
    pub files: Vec<PathBuf>,
    pub comm: &'static str,
}

impl PidFileReaper {
    pub fn pids(&self) -> Vec<i32> {
        self.files
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }
}

impl Drop for PidFileReaper {
    fn drop(&mut self) {
        for pid in self.pids() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == self.comm {
                // SAFETY: kill(2) on a pid our fixture recorded, still running
                // the program it started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (up to the
/// hard limit, raised too when we may); returns the new soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let capped = libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &capped);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// An HTTP answer read off a raw TCP connection.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// `GET path` with `Connection: close` on a fresh loopback connection;
/// reads to EOF within `timeout`. An I/O error (refused, reset, timeout) or
/// an answer that is not HTTP is returned as Err with what happened.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<HttpReply, String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: ops.test\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| format!("read: {e} (after {} bytes)", all.len()))?;
    parse_http(&all)
}

pub fn parse_http(all: &[u8]) -> Result<HttpReply, String> {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {:?}", String::from_utf8_lossy(all)))?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    if !head.starts_with("HTTP/1.") {
        return Err(format!("not HTTP: {head:?}"));
    }
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {head:?}"))?;
    Ok(HttpReply { status, head, body: all[split + 4..].to_vec() })
}

/// An open server-sent-events stream: `GET path` sent, response head read.
pub struct SseStream {
    pub stream: std::net::TcpStream,
    pub head: String,
    buf: Vec<u8>,
}

impl SseStream {
    pub fn open(port: u16, path: &str, timeout: Duration) -> SseStream {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: ops.test\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let split = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "EOF before the SSE response head: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let buf = buf[split + 4..].to_vec();
        SseStream { stream, head, buf }
    }

    /// The next event's `data:` text (chunked framing, if any, skipped).
    pub fn next_data(&mut self) -> String {
        use std::io::Read;
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(start) = text.find("data: ") {
                if let Some(len) = text[start..].find("\n\n") {
                    let data = text[start + 6..start + len].to_string();
                    self.buf = text.as_bytes()[start + len + 2..].to_vec();
                    return data;
                }
            }
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "EOF in the SSE stream: {text:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
