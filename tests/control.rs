//! The control socket and CLI against the real daemon: status table and
//! JSON, health exit codes, start/stop/restart with dependents, reload,
//! logs, socket permissions, malformed requests, and env secrecy.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON: {e}\n{out}"))
}

fn pid_of(f: &Flowinit, unit: &str) -> i64 {
    let (_, out, _) = f.ctl(&["status", "--json"]);
    json(&out)["units"].as_array().unwrap().iter().find(|u| u["name"] == unit).unwrap()["pid"].as_i64().unwrap_or(0)
}

/// Checks that every column starts at the same offset on every line, then
/// returns the cells with what changes between runs (pids, uptimes, CPU
/// and memory use) replaced, one row per line, cells joined by " | ".
fn normalize(table: &str) -> String {
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    let starts: Vec<usize> = header
        .match_indices(|c: char| c.is_ascii_uppercase())
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || header.as_bytes()[i - 1] == b' ')
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut cells = Vec::new();
        for (k, &st) in starts.iter().enumerate() {
            assert!(
                st == 0 || line.len() <= st || line.as_bytes()[st - 1] == b' ',
                "column {k} misaligned in {line:?}\n{table}"
            );
            let end = starts.get(k + 1).map_or(line.len(), |&e| e.min(line.len()));
            cells.push(line.get(st..end).unwrap_or("").trim().to_string());
        }
        if cells[2].parse::<u32>().is_ok() {
            cells[2] = "PID".into();
        }
        if cells[3].ends_with('s') || cells[3].ends_with('m') || cells[3].ends_with('h') {
            cells[3] = "UPTIME".into();
        }
        if cells[4].ends_with('%') {
            cells[4] = "CPU".into();
        }
        if cells[5].ends_with(['B', 'K', 'M', 'G']) {
            cells[5] = "MEM".into();
        }
        out += &cells.join(" | ");
        out.push('\n');
    }
    out
}

fn states_fixture(d: &TempDir) {
    d.unit("db", "[unit]\ndescription = \"database\"\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("setup", "[unit]\nrequires = [\"db\"]\n[service]\ntype = \"oneshot\"\ncommand = [\"true\"]\n");
    d.unit("app", "[unit]\nrequires = [\"setup\"]\n[service]\nshell = \"exec sleep 1000\"\n[readiness]\nexec = [\"test\", \"-e\", \"{dir}/app-ready\"]\ninterval = \"50ms\"\n");
    d.unit("crashy", "[service]\nshell = \"exit 4\"\nrestart_delay = \"1m\"\n");
    d.unit("broken", "[service]\nshell = \"exit 5\"\nrestart = \"no\"\n");
    d.unit("devonly", "[unit]\nprofiles = [\"dev\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
}

#[test]
fn status_table_json_and_health_codes() {
    let d = TempDir::new("status");
    states_fixture(&d);
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("setup", "exited");
    f.wait_state("broken", "failed");
    let crashy = f.wait_state("crashy", "starting");
    assert_eq!(crashy["restarts"], 1);
    wait_for("app's first failed probe", T, || {
        let (_, out, _) = f.ctl(&["status", "--json"]);
        let v = json(&out);
        let app = v["units"].as_array()?.iter().find(|u| u["name"] == "app")?.clone();
        app["reason"].as_str()?.starts_with("probe: test exited 1").then_some(())
    });
    let (code, table, _) = f.ctl(&["status"]);
    assert_eq!(code, 3, "not every unit is ready: health code 3");
    insta::assert_snapshot!("status_table", normalize(&table));
    let (code, out, _) = f.ctl(&["status", "--json"]);
    assert_eq!(code, 3);
    let v = json(&out);
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 6);
    for u in units {
        for key in ["name", "state", "pid", "ready", "restarts", "since", "reason"] {
            assert!(u.get(key).is_some(), "{key} missing in {u}");
        }
        assert!(humantime::parse_rfc3339(u["since"].as_str().unwrap()).is_ok());
    }
    let devonly = units.iter().find(|u| u["name"] == "devonly").unwrap();
    assert_eq!(devonly["state"], "disabled");
    assert_eq!(devonly["reason"], "disabled (profile dev)");
    assert!(devonly["pid"].is_null());
    let (_, details, _) = f.ctl(&["status", "app"]);
    assert!(details.contains("readiness:  exec test -e"), "{details}");
    assert!(details.contains("probe:      failing: test exited 1"), "{details}");
    assert!(details.contains("requires:   setup"), "{details}");
    // Make everything healthy: app ready, the failed and crashing units stopped.
    std::fs::write(d.file("app-ready"), "").unwrap();
    f.wait_state("app", "ready");
    assert_eq!(f.ctl(&["stop", "crashy", "broken"]).0, 0);
    let (code, _, _) = f.ctl(&["status", "--quiet"]);
    assert_eq!(code, 0, "{}", f.ctl(&["status"]).1);
    assert_eq!(f.stop(T), 0);
    let (code, _, err) = ctl_at(&f.socket, &["status"]);
    assert_eq!(code, 4);
    assert!(err.contains("flowinit is not running or not reachable"), "{err}");
    assert_eq!(ctl_at(&f.socket, &["status", "--quiet"]).0, 4);
}

#[test]
fn stop_start_restart_follow_dependencies() {
    let d = TempDir::new("actions");
    d.unit(
        "db",
        "[service]\nshell = \"trap 'date +%s%N > {dir}/db.stopped; exit 0' TERM; echo $$$$ > {dir}/db.pid; while :; do sleep 0.05; done\"\n",
    );
    d.unit("app", "[unit]\nrequires = [\"db\"]\n[service]\nshell = \"trap 'date +%s%N > {dir}/app.stopped; exit 0' TERM; echo $$$$ > {dir}/app.pid; while :; do sleep 0.05; done\"\n");
    d.unit("side", "[unit]\nwants = [\"db\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    // Running means spawned; the pid files mean the TERM traps are set.
    read_pid(&d, "db.pid");
    read_pid(&d, "app.pid");
    f.wait_state("side", "running");
    let side = pid_of(&f, "side");
    let (code, out, _) = f.ctl(&["stop", "db"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "stopped app, db");
    let app_stop: u128 = d.read("app.stopped").trim().parse().unwrap();
    let db_stop: u128 = d.read("db.stopped").trim().parse().unwrap();
    assert!(app_stop <= db_stop, "the dependent stops first");
    assert_eq!(pid_of(&f, "side"), side, "wants does not stop with the dependency");
    // Stopped units stay stopped: no restart.
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = f.ctl(&["status", "--json"]);
    assert!(json(&out)["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] != "side")
        .all(|u| u["state"] == "stopped"));
    // Starting app brings db back first.
    let (code, out, _) = f.ctl(&["start", "app"]);
    assert_eq!((code, out.trim()), (0, "started app"));
    assert_eq!(f.wait_state("db", "running")["state"], "running");
    let app = pid_of(&f, "app");
    let db = pid_of(&f, "db");
    let (code, out, _) = f.ctl(&["restart", "db"]);
    assert_eq!((code, out.trim()), (0, "restarted app, db"));
    assert_ne!(pid_of(&f, "db"), db);
    assert_ne!(pid_of(&f, "app"), app);
    let (code, _, err) = f.ctl(&["restart", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown unit \"nope\" (units: app, db, side)"), "{err}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn start_reports_a_unit_that_does_not_come_up() {
    let d = TempDir::new("startfail");
    d.unit("flaky", "[service]\nshell = \"[ -e {dir}/ok ] && exec sleep 1000; sleep 0.2; echo not today >&2; exit 9\"\nrestart = \"no\"\n[readiness]\ntcp = \"127.0.0.1:1\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("flaky", "failed");
    let (code, _, err) = f.ctl(&["start", "flaky"]);
    assert_eq!(code, 1);
    assert!(err.contains("unit flaky failed: exited 9"), "{err}");
    // Without readiness, started means running (as with systemd's simple).
    d.unit("flaky", "[service]\nshell = \"[ -e {dir}/ok ] && exec sleep 1000; exit 9\"\nrestart = \"no\"\n");
    std::fs::write(d.file("ok"), "").unwrap();
    assert_eq!(f.ctl(&["reload"]).0, 0);
    assert_eq!(f.ctl(&["start", "flaky"]), (0, "started flaky\n".to_string(), String::new()));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn reload_adds_removes_changes_and_keeps_the_rest() {
    let d = TempDir::new("reload");
    d.unit("keep", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("change", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("remove", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    for u in ["keep", "change", "remove"] {
        f.wait_state(u, "running");
    }
    let (keep, change, remove) = (pid_of(&f, "keep"), pid_of(&f, "change"), pid_of(&f, "remove"));
    // An invalid edit: nothing changes, every error is reported.
    d.unit("change", "[service]\ncommand = [\"sleep\", \"2000\"]\nstop_timeout = \"soon\"\n");
    d.unit("added", "[service]\ncomand = [\"sleep\", \"1000\"]\n");
    let (code, _, err) = f.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("change.toml:3:16: unit change: invalid duration"), "{err}");
    assert!(err.contains("added.toml:2:1: unit added: unknown field `comand`"), "{err}");
    // flowinit's own log lines are written asynchronously: wait for them.
    f.wait_log("reload refused, keeping the running units:", T);
    assert_eq!((pid_of(&f, "keep"), pid_of(&f, "change"), pid_of(&f, "remove")), (keep, change, remove));
    // A valid edit.
    d.unit("change", "[service]\ncommand = [\"sleep\", \"2000\"]\n");
    d.unit("added", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    std::fs::remove_file(d.units().join("remove.toml")).unwrap();
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "added: added; removed: remove; changed: change; unchanged: 1");
    f.wait_log("reload: added: added; removed: remove; changed: change; unchanged: 1", T);
    assert_eq!(pid_of(&f, "keep"), keep, "unchanged units are left alone");
    assert_ne!(pid_of(&f, "change"), change);
    assert!(pid_of(&f, "added") > 0);
    assert!(!pid_alive(remove as i32));
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let names: Vec<String> =
        json(&out)["units"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["added", "change", "keep"]);
    // SIGHUP does the same.
    d.unit("keep", "[service]\ncommand = [\"sleep\", \"3000\"]\n");
    f.signal(libc::SIGHUP);
    f.wait_log("reload done: added: none; removed: none; changed: keep; unchanged: 2", T);
    assert_ne!(pid_of(&f, "keep"), keep);
    // A units dir emptied by mistake (a bad mount) is refused, not applied
    // as "remove every unit".
    let keep = pid_of(&f, "keep");
    let aside = d.file("aside");
    std::fs::rename(d.units(), &aside).unwrap();
    std::fs::create_dir(d.units()).unwrap();
    let (code, _, err) = f.ctl(&["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no unit files (*.toml) in the units dir (the one flowinit up was started with)"), "{err}");
    assert_eq!(pid_of(&f, "keep"), keep, "the running units are kept");
    std::fs::remove_dir(d.units()).unwrap();
    std::fs::rename(&aside, d.units()).unwrap();
    assert_eq!(f.stop(T), 0);
}

#[test]
fn logs_tail_and_follow() {
    let d = TempDir::new("logs");
    d.unit("talker", "[service]\nshell = \"for i in 1 2 3 4 5; do echo line $$i; done; while [ ! -e {dir}/more ]; do sleep 0.05; done; echo later line; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    wait_for("5 lines", T, || f.ctl(&["logs", "talker"]).1.contains("line 5").then_some(()));
    let (code, out, _) = f.ctl(&["logs", "-n", "2", "talker"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].ends_with("talker | line 4") && lines[1].ends_with("talker | line 5"), "{out}");
    let mut follower = Command::new(BIN)
        .args(["logs", "-f", "-n", "1", "talker", "--socket"])
        .arg(&f.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.ends_with("talker | line 5\n"), "{first}");
    std::fs::write(d.file("more"), "").unwrap();
    let mut next = String::new();
    reader.read_line(&mut next).unwrap();
    assert!(next.ends_with("talker | later line\n"), "{next}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(follower.id() as i32, libc::SIGTERM) };
    #[allow(clippy::disallowed_methods)]
    let _ = follower.wait();
    assert_eq!(f.stop(T), 0);
}

#[test]
fn socket_is_owner_only_and_survives_bad_requests() {
    let d = TempDir::new("socket");
    d.unit("svc", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("svc", "running");
    let mode = std::fs::metadata(&f.socket).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o600);
    // A non-root user cannot talk to it.
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    #[allow(clippy::disallowed_methods)]
    let out = Command::new(BIN).args(["status", "--socket"]).arg(&f.socket).uid(65534).gid(65534).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{out:?}");
    // Malformed, unknown, oversized, and silent requests each get an answer or a close.
    let ask = |payload: &[u8]| -> String {
        let mut s = UnixStream::connect(&f.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(payload);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(ask(b"not json\n").contains("\"error\":\"malformed request"));
    assert!(ask(b"{\"v\":1,\"request\":{\"cmd\":\"selfdestruct\"}}\n").contains("malformed request"));
    assert!(ask(b"{\"v\":9,\"request\":{\"cmd\":\"reload\"}}\n").contains("unsupported protocol version 9"));
    assert!(ask(&vec![b'x'; 100_000]).contains("request too large"));
    assert!(ask(b"{\"v\":1,\"request\":{\"cmd\":\"status\",\"units\":[\"zzz\"]}}\n").contains("unknown unit"));
    // Still answering.
    assert_eq!(f.ctl(&["status", "--quiet"]).0, 0);
    assert_eq!(f.stop(T), 0);
}

#[test]
fn second_daemon_is_refused_and_stale_socket_replaced() {
    let d = TempDir::new("second");
    d.unit("svc", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    // A stale socket file left by a crashed run.
    let stale = std::os::unix::net::UnixListener::bind(d.file("ctl.sock")).unwrap();
    drop(stale);
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("svc", "running");
    let d2 = TempDir::new("second-b");
    d2.unit("svc", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    #[allow(clippy::disallowed_methods)]
    let out =
        Command::new(BIN).args(["up", "--units"]).arg(d2.units()).arg("--socket").arg(&f.socket).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another flowinit is already running on"));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn secrets_never_appear_in_status_or_flowinit_logs() {
    let d = TempDir::new("secrets");
    std::fs::write(d.file("s.env"), "DB_PASSWORD=hunter2-file-secret\n").unwrap();
    d.unit("svc", "[service]\ncommand = [\"sleep\", \"1000\"]\nenv = { API_KEY = \"${FT_SECRET}\" }\nenv_file = [\"{dir}/s.env\"]\n");
    let mut f = Flowinit::up(&d, Opts { env: &[("FT_SECRET", "hunter2-env-secret")], ..Opts::default() });
    f.wait_state("svc", "running");
    let mut seen = String::new();
    for args in [&["status"][..], &["status", "--json"], &["status", "svc"], &["logs"]] {
        let (_, out, err) = f.ctl(args);
        seen += &out;
        seen += &err;
    }
    assert_eq!(f.ctl(&["restart", "svc"]).0, 0);
    assert_eq!(f.stop(T), 0);
    seen += &f.stdout();
    seen += &f.stderr();
    assert!(seen.contains("svc"));
    assert!(!seen.contains("hunter2"), "a secret leaked:\n{seen}");
}

#[test]
fn a_closed_stdout_does_not_panic_the_client() {
    let d = TempDir::new("epipe");
    for i in 0..30 {
        d.unit(&format!("u{i:02}"), "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    }
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("u29", "running");
    let socket = f.socket.display().to_string();
    for cmd in ["status --json", "status", "logs -n 100"] {
        #[allow(clippy::disallowed_methods)]
        let out = std::process::Command::new("sh")
            .arg("-c")
            // `true` exits without reading: every write of the client fails.
            .arg(format!("sleep 0.1 | '{BIN}' {cmd} --socket '{socket}' | true"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
    assert_eq!(f.stop(T), 0);
}
