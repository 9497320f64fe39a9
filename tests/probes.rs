//! Readiness, liveness and sd_notify through the real binary: dependents
//! wait for readiness of every probe kind, start_timeout fails a start,
//! liveness restarts, notify messages from outsiders are ignored, and a
//! flood of exec probes never races the reaper.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn stamp(d: &TempDir, name: &str) -> u128 {
    wait_for(name, T, || d.read(name).trim().parse::<u128>().ok())
}

/// A dependent unit that records when it started.
fn dependent(d: &TempDir, on: &str) {
    d.unit("dependent", &format!("[unit]\nrequires = [\"{on}\"]\n[service]\nshell = \"date +%s%N > {{dir}}/dependent.start; exec sleep 1000\"\n"));
}

fn assert_dependent_waited(d: &TempDir, f: &mut Flowinit, ready_stamp: &str) {
    let dep = stamp(d, "dependent.start");
    let ready = stamp(d, ready_stamp);
    assert!(dep >= ready, "dependent started at {dep}, before the dependency was ready at {ready}\n{}", f.stderr());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn http_readiness_gates_dependents() {
    let d = TempDir::new("http");
    let port = free_port();
    d.unit("web", &format!("[service]\nshell = \"sleep 0.7; date +%s%N > {{dir}}/listen; exec python3 -m http.server {port} --bind 127.0.0.1\"\n[readiness]\nhttp = \"http://127.0.0.1:{port}/\"\ninterval = \"100ms\"\n"));
    dependent(&d, "web");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit web is ready", T);
    assert_dependent_waited(&d, &mut f, "listen");
}

#[test]
fn tcp_readiness_gates_dependents() {
    let d = TempDir::new("tcp");
    let port = free_port();
    d.unit("db", &format!("[service]\ncommand = [\"python3\", \"-c\", \"import socket, time, sys; time.sleep(0.7); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); open(sys.argv[1], 'w').write(str(time.time_ns())); s.listen(); time.sleep(1000)\", \"{{dir}}/listen\"]\n[readiness]\ntcp = \"127.0.0.1:${{FT_PORT}}\"\ninterval = \"100ms\"\n"));
    dependent(&d, "db");
    let port_s = port.to_string();
    let mut f = Flowinit::up(&d, Opts { env: &[("FT_PORT", &port_s)], ..Opts::default() });
    f.wait_log("unit db is ready", T);
    assert_dependent_waited(&d, &mut f, "listen");
}

#[test]
fn exec_readiness_gates_dependents() {
    let d = TempDir::new("exec");
    d.unit("maker", "[service]\nshell = \"sleep 0.5; date +%s%N > {dir}/made.tmp; mv {dir}/made.tmp {dir}/made; exec sleep 1000\"\n[readiness]\nexec = [\"test\", \"-e\", \"{dir}/made\"]\ninterval = \"50ms\"\n");
    dependent(&d, "maker");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit maker is ready", T);
    assert_dependent_waited(&d, &mut f, "made");
}

#[test]
fn log_readiness_gates_dependents() {
    let d = TempDir::new("log");
    d.unit("pg", "[service]\nshell = \"echo starting up; sleep 0.5; date +%s%N > {dir}/said; echo 'LOG:  database system is ready to accept connections'; exec sleep 1000\"\n[readiness]\nlog = \"ready to accept connections$$\"\n");
    dependent(&d, "pg");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit pg is ready", T);
    assert_dependent_waited(&d, &mut f, "said");
}

#[test]
fn notify_ready_gates_dependents_and_outsiders_are_ignored() {
    let d = TempDir::new("notify");
    d.unit(
        "svc",
        &format!(
            "[service]\ntype = \"notify\"\ncommand = [\"{}\", \"1.5\", \"{{dir}}/ready\"]\n",
            fixture("notify_ready.py")
        ),
    );
    dependent(&d, "svc");
    let mut f = Flowinit::up(&d, Opts::default());
    // An unrelated process (this test) claims the unit is ready.
    let addr = wait_for("socket name", T, || Some(d.read("ready.socket")).filter(|s| !s.is_empty()));
    let name = addr.strip_prefix('@').expect("abstract socket");
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    use std::os::linux::net::SocketAddrExt;
    let target = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    sock.send_to_addr(b"READY=1\nSTATUS=forged", &target).unwrap();
    f.wait_log("unit svc is ready (READY=1)", T);
    assert_dependent_waited(&d, &mut f, "ready");
}

#[test]
fn start_timeout_fails_the_start_and_counts_toward_the_limit() {
    let d = TempDir::new("starttimeout");
    let port = free_port();
    d.unit("never", &format!("[service]\nshell = \"echo start >> {{dir}}/starts; exec sleep 1000\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 2\n[readiness]\ntcp = \"127.0.0.1:{port}\"\ninterval = \"100ms\"\nstart_timeout = \"500ms\"\n"));
    dependent(&d, "never");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit never failed for good", T);
    f.wait_log("unit dependent: not starting: required unit never failed", T);
    let err = f.stderr();
    assert!(
        err.contains(&format!(
            "not ready within start_timeout 500ms (last probe: connection refused 127.0.0.1:{port})"
        )),
        "{err}"
    );
    assert!(err.contains("unit dependent: not starting: required unit never failed"), "{err}");
    assert_eq!(d.read("starts").lines().count(), 2);
    assert!(!d.file("dependent.start").exists());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn liveness_failures_restart_the_unit() {
    let d = TempDir::new("liveness");
    let port = free_port();
    d.unit("api", &format!("[service]\ncommand = [\"{}\", \"{port}\", \"{{dir}}/sick\", \"{{dir}}/starts\"]\nrestart_delay = \"100ms\"\n[readiness]\nhttp = \"http://127.0.0.1:{port}/api/v1/ping\"\ninterval = \"100ms\"\n[liveness]\nhttp = \"http://127.0.0.1:{port}/api/v1/ping\"\ninterval = \"100ms\"\nfailures = 3\n", fixture("flaky_http.py")));
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit api is ready", T);
    std::fs::write(d.file("sick"), "").unwrap();
    f.wait_log("liveness probe failed 3 times in a row: http /api/v1/ping answered 500 Internal Server Error", T);
    std::fs::remove_file(d.file("sick")).unwrap();
    wait_for("second start", T, || (d.read("starts").lines().count() == 2).then_some(()));
    let err = f.stderr();
    assert!(err.contains("liveness probe failed (1/3)"), "{err}");
    assert!(err.contains("liveness probe failed (2/3)"), "{err}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_flood_of_exec_probes_never_races_the_reaper() {
    let d = TempDir::new("execflood");
    // ~1,000 exec probes, while another unit keeps exiting and restarting.
    d.unit("probed", "[service]\ncommand = [\"sleep\", \"1000\"]\n[liveness]\nexec = [\"sh\", \"-c\", \"echo x >> {dir}/probes\"]\ninterval = \"1ms\"\nfailures = 1\n");
    d.unit("flapper", "[service]\nshell = \"echo x >> {dir}/flaps; exit 1\"\nrestart_delay = \"10ms\"\nrestart_delay_max = \"10ms\"\nstart_limit_burst = 1000\n");
    let mut f = Flowinit::up(&d, Opts { pid1: true, ..Opts::default() });
    wait_for("50 flaps", T, || (d.read("flaps").lines().count() >= 50).then_some(()));
    wait_for("1,000 exec probes", Duration::from_secs(60), || (d.read("probes").lines().count() >= 1000).then_some(()));
    let zombies = zombie_children(f.pid);
    assert_eq!(f.stop(T), 0);
    let err = f.stderr();
    assert!(!err.contains("liveness probe failed"), "a probe lost its exit:\n{err}");
    assert!(!err.contains("No child processes") && !err.contains("ECHILD"), "{err}");
    let flaps = d.read("flaps").lines().count();
    let exits = err.matches("unit flapper exited 1").count();
    assert!(exits >= flaps - 1 && exits <= flaps, "every flapper exit seen: {flaps} starts, {exits} exits");
    assert!(zombies <= 2, "zombies left: {zombies}");
}

/// Zombie children of `pid` right now (at most a couple may be in flight).
fn zombie_children(pid: i32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str()) {
            n += 1;
        }
    }
    n
}
