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
}

impl Flowinit {
    /// `flowinit up --units DIR/units ARGS…`
    pub fn up(dir: &TempDir, opts: Opts) -> Flowinit {
        let out = dir.file("flowinit.out");
        let err = dir.file("flowinit.err");
        let units = dir.units();
        let socket = dir.file("ctl.sock");
        let mut argv: Vec<String> = vec![
            "up".into(),
            "--units".into(),
            units.to_string_lossy().into(),
            "--socket".into(),
            socket.to_string_lossy().into(),
        ];
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
