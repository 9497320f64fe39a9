//! `flowinit exec UNIT -- CMD` through the real binary: CMD gets what the
//! unit's own process gets (uid, groups, working_dir, environment, as the
//! daemon resolved it), for running, stopped and disabled units; the exit
//! status, stdin, a terminal and signals are CMD's own; errors (unknown
//! unit, no daemon, not found, not executable, a non-owner caller) and env
//! secrecy in flowinit's log. Every process started here is bounded in time
//! and killed by pid or process group.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// One exec: asks the daemon, then runs a short command.
const RUN: Duration = Duration::from_secs(20);

struct Ran {
    status: ExitStatus,
    out: String,
    err: String,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Waits for `child` (its own process group) until `timeout`; past it
/// the group and everything below the child get SIGKILL and the test fails.
fn wait_bounded(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let pid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    loop {
        #[allow(clippy::disallowed_methods)]
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            kill_tree(pid);
            #[allow(clippy::disallowed_methods)]
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill_tree(pid: i32) {
    // SAFETY: kill(2) on our own unreaped child, its group and descendants.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        for p in descendants(pid) {
            libc::kill(p, libc::SIGKILL);
        }
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The caller's side of an exec: `PREFIX… flowinit exec --socket S ARGS…`
/// in its own process group, with a scrubbed FLOWINIT_* environment plus a
/// variable only the caller has, stdout and stderr to files.
fn exec_cmd(
    d: &TempDir,
    f: &Flowinit,
    prefix: &[&str],
    args: &[&str],
) -> (Command, std::path::PathBuf, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (out, err) = (d.file(&format!("exec-{n}.out")), d.file(&format!("exec-{n}.err")));
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("exec")
        .arg("--socket")
        .arg(&f.socket)
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .env("FT_CALLER_ONLY", "caller-value")
        .env("SOME_VAR", "from-caller")
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOWINIT_") {
            cmd.env_remove(k);
        }
    }
    (cmd, out, err)
}

fn read(p: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Runs an exec to the end with `stdin` as its input.
fn exec_with(d: &TempDir, f: &Flowinit, prefix: &[&str], args: &[&str], stdin: &[u8]) -> Ran {
    let (mut cmd, out, err) = exec_cmd(d, f, prefix, args);
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let status = wait_bounded(&mut child, RUN, &format!("flowinit exec {args:?}"));
    Ran { status, out: read(&out), err: read(&err) }
}

fn exec(d: &TempDir, f: &Flowinit, args: &[&str]) -> Ran {
    exec_with(d, f, &[], args, b"")
}

/// A dir for the unit's files, writable by its user (nobody).
fn work_dir(d: &TempDir) -> String {
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = d.file("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    work.to_string_lossy().into_owned()
}

/// `svc` runs as nobody, group daemon, in DIR/work, with env, an env_file
/// and ${} expansions, its PATH including DIR/bin; it records its own uid,
/// groups, directory and environment, then sleeps. `devtool` is the same
/// kind of unit, disabled by profile.
fn fixture(d: &TempDir) {
    work_dir(d);
    std::fs::write(d.file("exec.env"), "E1=from-file\nFILE_SECRET=hunter2-from-file\n").unwrap();
    let bin = d.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("unit-only-tool"), "#!/bin/sh\necho unit-only-tool ran as $(id -u)\n").unwrap();
    std::fs::set_permissions(bin.join("unit-only-tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("not-executable"), "#!/bin/sh\necho should not run\n").unwrap();
    std::fs::set_permissions(bin.join("not-executable"), std::fs::Permissions::from_mode(0o644)).unwrap();
    d.unit(
        "svc",
        r#"[service]
shell = "id -u > own.uid; id -G > own.groups; pwd > own.pwd; env > own.env; grep ^Sig[BI] /proc/self/status > own.sig; touch own.done; exec sleep 1000"
user = "nobody"
group = "daemon"
working_dir = "{dir}/work"
env = { A = "1", B = "${SOME_VAR:-x}", C = "${FT_DAEMON_VAR}", TOKEN = "${FT_SECRET}", PATH = "/usr/local/bin:/usr/bin:/bin:{dir}/bin" }
env_file = ["{dir}/exec.env"]
"#,
    );
    d.unit(
        "devtool",
        "[unit]\nprofiles = [\"dev\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\nuser = \"nobody\"\nworking_dir = \"{dir}/work\"\nenv = { D = \"dev-only-${FT_DAEMON_VAR}\" }\n",
    );
}

/// flowinit with a daemon-only variable, an empty SOME_VAR (so the
/// default applies), a secret, and RAW, a value that is not UTF-8.
fn up(d: &TempDir) -> Flowinit {
    let f = Flowinit::up(
        d,
        Opts {
            env: &[("FT_DAEMON_VAR", "from-daemon"), ("SOME_VAR", ""), ("FT_SECRET", "hunter2-from-env")],
            wrap: &["sh", "-c", "RAW=$(printf 'a\\377b') exec \"$0\" \"$@\""],
            ..Opts::default()
        },
    );
    f.wait_state("svc", "running");
    f.wait_state("devtool", "disabled");
    wait_for("svc's own record", T, || d.file("work/own.done").exists().then_some(()));
    f
}

fn env_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

#[test]
fn the_command_gets_what_the_units_process_gets() {
    let d = TempDir::new("exec-same");
    fixture(&d);
    let mut f = up(&d);
    let own = |name: &str| read(&d.file(&format!("work/{name}")));

    let uid = exec(&d, &f, &["svc", "--", "id", "-u"]);
    assert_eq!(uid.code(), Some(0), "{}", uid.err);
    assert_eq!(uid.out, "65534\n");
    assert_eq!(uid.out, own("own.uid"));
    let groups = exec(&d, &f, &["svc", "--", "id", "-G"]);
    assert_eq!(groups.out, own("own.groups"));
    assert_eq!(exec(&d, &f, &["svc", "--", "id", "-g"]).out, "1\n", "group = daemon");
    let pwd = exec(&d, &f, &["svc", "--", "pwd"]);
    assert_eq!(pwd.out, format!("{}\n", d.file("work").display()));
    assert_eq!(pwd.out, own("own.pwd"));

    let env = exec(&d, &f, &["svc", "--", "env"]);
    assert_eq!(env.code(), Some(0), "{}", env.err);
    let lines = env_lines(&env.out);
    for want in ["A=1", "B=x", "C=from-daemon", "E1=from-file", "FLOWINIT_UNIT=svc", "USER=nobody"] {
        assert!(lines.iter().any(|l| l == want), "{want} missing from\n{}", env.out);
    }
    assert!(!env.out.contains("FLOWINIT_RUN="), "an exec is not part of a run:\n{}", env.out);
    assert!(!env.out.contains("FT_CALLER_ONLY"), "the caller's environment leaked in:\n{}", env.out);
    // Through the same shell, the whole environment is the unit's, but for
    // the run's tag.
    let via_sh = exec(&d, &f, &["svc", "--", "sh", "-c", "env"]);
    let own_env: Vec<String> =
        env_lines(&own("own.env")).into_iter().filter(|l| !l.starts_with("FLOWINIT_RUN=")).collect();
    assert!(own("own.env").contains("FLOWINIT_RUN=svc/1"), "{}", own("own.env"));
    assert_eq!(env_lines(&via_sh.out), own_env);
    // A value that is not UTF-8 arrives byte for byte.
    let raw = exec(&d, &f, &["svc", "--", "sh", "-c", "printf %s \"$RAW\" | od -An -tx1"]);
    assert_eq!(raw.out.split_whitespace().collect::<Vec<_>>(), ["61", "ff", "62"], "{}", raw.err);

    // Looked up on the unit's PATH.
    let tool = exec(&d, &f, &["svc", "--", "unit-only-tool"]);
    assert_eq!(tool.out, "unit-only-tool ran as 65534\n", "{}", tool.err);
    // Signals start from the defaults, like the unit's own process, even
    // when the caller ignored SIGINT and SIGHUP and blocked SIGTERM.
    let (mut cmd, out, _) = exec_cmd(&d, &f, &[], &["svc", "--", "grep", "^Sig[BI]", "/proc/self/status"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.stdin(Stdio::null()).spawn().unwrap();
    wait_bounded(&mut child, RUN, "grep of the signal state");
    assert_eq!(read(&out), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    assert_eq!(read(&out), own("own.sig"), "the unit's own process has the same");

    // stdin is passed through.
    let cat = exec_with(&d, &f, &[], &["svc", "--", "cat"], b"hi\n");
    assert_eq!((cat.code(), cat.out.as_str()), (Some(0), "hi\n"), "{}", cat.err);

    // Secrets reached the command, never flowinit's log; the log says who
    // was given the unit's environment.
    assert!(env.out.contains("TOKEN=hunter2-from-env") && env.out.contains("FILE_SECRET=hunter2-from-file"));
    assert_eq!(f.stop(T), 0);
    let log = f.stdout() + &f.stderr();
    assert!(log.contains("exec svc: its environment and credentials sent to uid 0 (pid "), "{log}");
    assert!(!log.contains("hunter2"), "a secret leaked into flowinit's log:\n{log}");
    assert!(!log.contains("from-daemon"), "an env value leaked into flowinit's log:\n{log}");
}

#[test]
fn exit_status_is_the_commands_own() {
    let d = TempDir::new("exec-status");
    fixture(&d);
    let mut f = up(&d);
    assert_eq!(exec(&d, &f, &["svc", "--", "sh", "-c", "exit 7"]).code(), Some(7));
    assert_eq!(exec(&d, &f, &["svc", "--", "true"]).code(), Some(0));
    let killed = exec(&d, &f, &["svc", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.signal(), Some(libc::SIGTERM), "the command itself died of the signal");
    // As a shell reports it.
    let script = format!("'{BIN}' exec --socket '{}' svc -- sh -c 'kill -TERM $$'; echo status=$?", f.socket.display());
    let out = d.file("status.out");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(d.file("status.err")).unwrap())
        .process_group(0);
    let mut child = sh.spawn().unwrap();
    wait_bounded(&mut child, RUN, "sh running flowinit exec");
    assert_eq!(read(&out).trim(), "status=143");
    assert_eq!(f.stop(T), 0);
}

/// Starts `flowinit exec … -- ARGS` and waits until `ready` is in its stdout.
fn exec_until(d: &TempDir, f: &Flowinit, args: &[&str], ready: &str) -> (Child, std::path::PathBuf) {
    let (mut cmd, out, _) = exec_cmd(d, f, &[], args);
    let child = cmd.stdin(Stdio::null()).spawn().unwrap();
    let pid = child.id() as i32;
    let shown = out.clone();
    let deadline = Instant::now() + T;
    while !read(&shown).contains(ready) {
        if Instant::now() >= deadline {
            kill_tree(pid);
            panic!("{args:?} never printed {ready:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, out)
}

#[test]
fn signals_to_the_pid_reach_the_command_itself() {
    let d = TempDir::new("exec-signals");
    fixture(&d);
    let mut f = up(&d);
    let script =
        "trap 'echo got-winch' WINCH; trap 'echo got-hup; exit 3' HUP; echo ready; while :; do sleep 0.05; done";
    let (mut child, out) = exec_until(&d, &f, &["svc", "--", "sh", "-c", script], "ready");
    let pid = child.id() as i32;
    // The pid the caller started is the command now, as the unit's user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Name:\tsh"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGWINCH) };
    wait_for("the command's WINCH trap", T, || read(&out).contains("got-winch").then_some(()));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let st = wait_bounded(&mut child, RUN, "the trapping command");
    assert_eq!(st.code(), Some(3), "{}", read(&out));
    assert!(read(&out).contains("got-hup"));

    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
        let (mut child, _) = exec_until(&d, &f, &["svc", "--", "sh", "-c", "echo ready; exec sleep 100"], "ready");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = wait_bounded(&mut child, RUN, "sleep");
        assert_eq!(st.signal(), Some(sig));
    }
    assert_eq!(f.stop(T), 0);
}

/// Runs `flowinit exec ARGS` with a new pseudo-terminal as its controlling
/// terminal and stdio; `talk` gets the master side and what was read so far.
fn on_a_terminal(
    f: &Flowinit,
    args: &[&str],
    talk: impl FnOnce(&mut std::fs::File, &dyn Fn() -> String),
) -> ExitStatus {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = Command::new(BIN);
    cmd.arg("exec").arg("--socket").arg(&f.socket).args(args);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (mut m, seen) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the slave side is gone.
            while let Ok(n @ 1..) = m.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    talk(&mut master, &shown);
    let st = wait_bounded(&mut child, RUN, "flowinit exec on a terminal");
    drop(master);
    reader.join().unwrap();
    st
}

fn wait_text(shown: &dyn Fn() -> String, want: &str) {
    wait_for(&format!("{want:?} on the terminal"), T, || shown().contains(want).then_some(()));
}

#[test]
fn the_command_gets_the_callers_terminal() {
    let d = TempDir::new("exec-tty");
    fixture(&d);
    let mut f = up(&d);
    let script = "tty; test -t 0 && test -t 1 && test -t 2 && echo all-three-tty; read line; echo got:$line";
    let st = on_a_terminal(&f, &["svc", "--", "sh", "-c", script], |m, shown| {
        wait_text(shown, "all-three-tty");
        assert!(shown().contains("/dev/pts/"), "{}", shown());
        m.write_all(b"hello\n").unwrap();
        wait_text(shown, "got:hello");
    });
    assert_eq!(st.code(), Some(0));
    // Ctrl-C typed at the terminal reaches the command: it is in the
    // terminal's foreground process group (an interactive psql works).
    let st = on_a_terminal(&f, &["svc", "--", "sh", "-c", "echo ready; exec sleep 100"], |m, shown| {
        wait_text(shown, "ready");
        m.write_all(&[0x03]).unwrap();
    });
    assert_eq!(st.signal(), Some(libc::SIGINT));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn stopped_and_disabled_units_run_their_definition() {
    let d = TempDir::new("exec-stopped");
    fixture(&d);
    let mut f = up(&d);
    assert_eq!(f.ctl(&["stop", "svc"]).0, 0);
    f.wait_state("svc", "stopped");
    let stopped = exec(&d, &f, &["svc", "--", "sh", "-c", "id -u; echo A=$A; pwd"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.err);
    assert_eq!(stopped.out, format!("65534\nA=1\n{}\n", d.file("work").display()));
    let disabled = exec(&d, &f, &["devtool", "--", "sh", "-c", "id -u; echo $D; echo $FLOWINIT_UNIT; pwd"]);
    assert_eq!(disabled.code(), Some(0), "{}", disabled.err);
    assert_eq!(disabled.out, format!("65534\ndev-only-from-daemon\ndevtool\n{}\n", d.file("work").display()));
    assert_eq!(f.unit_json("devtool").unwrap()["state"], "disabled", "an exec starts nothing");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn errors_name_the_cause_with_a_shells_exit_codes() {
    let d = TempDir::new("exec-errors");
    fixture(&d);
    let mut f = up(&d);
    let unknown = exec(&d, &f, &["nope", "--", "true"]);
    assert_eq!(unknown.code(), Some(1));
    assert!(unknown.err.contains("unknown unit \"nope\" (units: devtool, svc)"), "{}", unknown.err);
    let missing = exec(&d, &f, &["svc", "--", "no-such-command-xyz", "arg"]);
    assert_eq!(missing.code(), Some(127));
    let path = format!("/usr/local/bin:/usr/bin:/bin:{}", d.file("bin").display());
    assert_eq!(missing.err.trim(), format!("flowinit exec svc: no-such-command-xyz: command not found on PATH={path}"));
    let not_exec = d.file("bin/not-executable").to_string_lossy().into_owned();
    let denied = exec(&d, &f, &["svc", "--", &not_exec]);
    assert_eq!(denied.code(), Some(126), "{}", denied.err);
    assert!(denied.err.contains("permission denied"), "{}", denied.err);
    assert!(denied.out.is_empty());
    // Without `--` nothing runs.
    let (mut cmd, _, err) = exec_cmd(&d, &f, &[], &["svc", "id"]);
    let mut child = cmd.stdin(Stdio::null()).spawn().unwrap();
    assert_eq!(wait_bounded(&mut child, RUN, "exec without --").code(), Some(2));
    assert!(read(&err).contains("Usage: flowinit exec [OPTIONS] <UNIT> -- <CMD>..."), "{}", read(&err));
    assert_eq!(f.stop(T), 0);
    // No daemon any more.
    let gone = exec(&d, &f, &["svc", "--", "true"]);
    assert_eq!(gone.code(), Some(4));
    assert!(gone.err.contains("flowinit is not running or not reachable at"), "{}", gone.err);
}

#[test]
fn a_caller_other_than_root_is_refused_and_gets_no_env() {
    let d = TempDir::new("exec-owner");
    fixture(&d);
    let mut f = up(&d);
    let nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"];
    // The socket is owner-only: connect itself is refused.
    let refused = exec_with(&d, &f, &nobody, &["svc", "--", "env"], b"");
    assert_eq!(refused.code(), Some(4), "{}", refused.err);
    assert!(refused.err.contains("permission denied (the control socket is owner-only)"), "{}", refused.err);
    assert!(refused.out.is_empty(), "{}", refused.out);
    // With the mode opened by hand, the daemon's peer uid check still
    // refuses, before reading the request: the raw answer has no env.
    std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ask = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall(b'{{\"v\":1,\"request\":{{\"cmd\":\"exec_spec\",\"unit\":\"svc\"}}}}\\n'); \
         import sys; sys.stdout.write(s.makefile().read())",
        f.socket.display().to_string()
    );
    // A python nobody may run (the one on the test's PATH may be under /root).
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a system python3 for the raw request");
    let mut raw = Command::new(nobody[0]);
    raw.args(&nobody[1..]).args([python, "-c", &ask]).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = raw.spawn().unwrap();
    let st = wait_bounded(&mut child, RUN, "a raw exec_spec request as nobody");
    let (mut answer, mut why) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut answer).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut why).unwrap();
    assert!(st.success(), "{answer}{why}");
    assert_eq!(answer.trim(), r#"{"v":1,"ok":false,"error":"permission denied: uid 65534 may not control flowinit"}"#);
    let client = exec_with(&d, &f, &nobody, &["svc", "--", "env"], b"");
    assert_eq!(client.code(), Some(1));
    assert_eq!(client.err.trim(), "flowinit: permission denied: uid 65534 may not control flowinit");
    assert!(client.out.is_empty() && !client.err.contains("hunter2"));
    // Root still may.
    assert_eq!(exec(&d, &f, &["svc", "--", "id", "-u"]).out, "65534\n");
    assert_eq!(f.stop(T), 0);
    let log = f.stdout() + &f.stderr();
    assert!(!log.contains("hunter2"), "{log}");
    assert_eq!(log.matches("exec svc: its environment and credentials sent to").count(), 1, "{log}");
}

#[test]
fn a_daemon_not_run_as_root_serves_its_own_uid() {
    let d = TempDir::new("exec-nonroot");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d.unit("plain", "[service]\ncommand = [\"sleep\", \"1000\"]\nenv = { P = \"plain\" }\n");
    let nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"];
    let mut f = Flowinit::up(&d, Opts { wrap: &nobody, ..Opts::default() });
    f.wait_state("plain", "running");
    // Without `user` the unit runs as flowinit: so does the command, for
    // flowinit's own uid (nothing to switch) and for root (switched).
    let own = exec_with(&d, &f, &nobody, &["plain", "--", "sh", "-c", "id -u; id -G; echo $P"], b"");
    assert_eq!((own.code(), own.out.as_str()), (Some(0), "65534\n65534\nplain\n"), "{}", own.err);
    let root = exec(&d, &f, &["plain", "--", "sh", "-c", "id -u; id -G; echo $P"]);
    assert_eq!((root.code(), root.out.as_str()), (Some(0), "65534\n65534\nplain\n"), "{}", root.err);
    // flowinit's uid with other groups may not drop them: 126, and why.
    let grouped = ["setpriv", "--reuid", "65534", "--regid", "65534", "--groups", "1"];
    let refused = exec_with(&d, &f, &grouped, &["plain", "--", "id"], b"");
    assert_eq!(refused.code(), Some(126), "{}", refused.err);
    assert_eq!(
        refused.err.trim(),
        "flowinit exec plain: cannot switch to uid 65534, gid 65534, groups []: setgroups failed: EPERM: Operation not permitted; \
         only root may run a command as the unit's uid 65534: run flowinit exec as root"
    );
    assert!(refused.out.is_empty());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn without_working_dir_the_command_starts_where_the_units_process_does() {
    // flowinit leaves its start directory for `/`; a unit without
    // working_dir still starts there, and so must an exec of it.
    let d = TempDir::new("exec-startdir");
    let start = d.file("start");
    std::fs::create_dir(&start).unwrap();
    d.unit("plain", "[service]\nshell = \"pwd > {dir}/own.pwd; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts { cwd: Some(&start), ..Opts::default() });
    f.wait_state("plain", "running");
    wait_for("plain's own record", T, || d.file("own.pwd").exists().then_some(()));
    let ran = exec(&d, &f, &["plain", "--", "pwd"]);
    assert_eq!(ran.code(), Some(0), "{}", ran.err);
    assert_eq!(ran.out, format!("{}\n", start.display()));
    assert_eq!(ran.out, read(&d.file("own.pwd")));
    assert_eq!(f.stop(T), 0);
}
