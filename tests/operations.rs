//! Operations that touch several parts at once, through the real binary:
//! reloads while the router carries traffic, shutdown with a stream open
//! through the router, a connection flood against a low fd limit, and
//! processes that escaped their unit's process group.
//!
//! Written to the behaviour being built (a listener kept across reloads,
//! the router's drain inside the shutdown budget, an fd reserve for PID 1,
//! escaped processes tracked per unit); each assertion names what it
//! expects so that a failure reads as the gap.

mod common;

use common::*;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn backend_unit(port: u16, extra: &str) -> String {
    format!(
        "[service]\ncommand = [\"{}\", \"{}\", \"{port}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{port}/ping\"\ninterval = \"100ms\"\n{extra}",
        python(),
        fixture("ops_http.py")
    )
}

fn route(prefix: &str, port: u16, unit: &str) -> String {
    format!("[[router.routes]]\nprefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:{port}\"\nunit = \"{unit}\"\n")
}

/// The JSON body of a router answer, or Null.
fn body_json(r: &HttpReply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------
// a. reload during traffic
// ---------------------------------------------------------------------------

#[test]
fn reloads_that_change_the_router_do_not_drop_traffic() {
    let d = TempDir::new("ops-reload");
    let (port, be) = (free_port(), free_port());
    d.unit("backend", &backend_unit(be, ""));
    // Reload i toggles upstream_timeout and adds route /r{i}/.
    let router = |i: usize| {
        let mut text = format!(
            "[router]\nlisten = \"127.0.0.1:{port}\"\nstop_timeout = \"1s\"\nupstream_timeout = \"{}s\"\n{}",
            30 + i % 2,
            route("/", be, "backend")
        );
        for k in 1..=i {
            text += &route(&format!("/r{k}/"), be, "backend");
        }
        text
    };
    d.unit("router", &router(0));
    let mut f = Flowinit::up(&d, Opts::default());
    let backend_pid = f.wait_state("backend", "ready")["pid"].clone();
    f.wait_state("router", "running");
    wait_for("a first 200 through the router", T, || {
        http_get(port, "/", Duration::from_secs(2)).ok().filter(|r| r.status == 200)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Result<HttpReply, String>>>> = Arc::default();
    let client = {
        let (stop, results) = (stop.clone(), results.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = http_get(port, "/", Duration::from_secs(5));
                results.lock().unwrap().push(r);
                // Pacing of the client, not a wait for anything.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let count = || results.lock().unwrap().len();

    let mut reload_failures = Vec::new();
    let mut router_states = Vec::new();
    for i in 1..=20 {
        d.unit(&format!("extra{i:02}"), "[service]\ncommand = [\"sleep\", \"1000\"]\n");
        d.unit("router", &router(i));
        let (code, out, err) = f.ctl(&["reload"]);
        if code != 0 {
            reload_failures.push(format!("reload {i}: exit {code}: {out}{err}"));
        }
        if let Some(u) = f.unit_json("router") {
            router_states.push(u["state"].as_str().unwrap_or("?").to_string());
        }
        // Let some requests meet the reloaded configuration.
        let seen = count();
        wait_for("two more requests", T, || (count() >= seen + 2).then_some(()));
    }
    let end = wait_for("the router settled after the last reload", T, || {
        f.unit_json("router").filter(|u| u["state"] != "starting" && u["state"] != "stopping")
    });
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();

    let results = results.lock().unwrap();
    let bad: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            Ok(r) if r.status == 200 => None,
            Ok(r) if r.status == 503 && body_json(r)["state"] != "ready" => None,
            Ok(r) => Some(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => Some(e.clone()),
        })
        .collect();
    let log = f.stderr();
    assert!(
        reload_failures.is_empty(),
        "every reload must exit 0 (meanwhile {} of {} requests failed, first: {:?}; router states after each reload: {router_states:?}):\n{}",
        bad.len(),
        results.len(),
        bad.first(),
        reload_failures.join("\n")
    );
    assert!(
        bad.is_empty(),
        "{} of {} requests were refused, reset or not answered with 200/503:\n{}\n--- flowinit's log:\n{log}",
        bad.len(),
        results.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(results.len() >= 40, "only {} requests were made", results.len());
    assert_eq!(end["state"], "running", "router at the end: {end}\n{log}");
    assert!(!router_states.iter().any(|s| s == "failed"), "the router became failed: {router_states:?}\n{log}");
    assert!(!log.contains("cannot listen"), "{log}");
    assert_eq!(f.wait_state("backend", "ready")["pid"], backend_pid, "the backend was left alone");
    assert_eq!(f.stop(T), 0);
}

// ---------------------------------------------------------------------------
// b. shutdown with an open stream
// ---------------------------------------------------------------------------

#[test]
fn shutdown_with_an_open_sse_stream_fits_the_budget_and_stops_db_gently() {
    let d = TempDir::new("ops-sse");
    let (port, core) = (free_port(), free_port());
    d.unit(
        "db",
        &format!(
            "[unit]\ndescription = \"Postgres-like: SIGINT is its fast shutdown, SIGTERM is ignored\"\n[service]\ncommand = [\"{}\", \"{}\", \"{{dir}}/db.got\"]\nstop_signal = \"SIGINT\"\n[readiness]\nlog = \"db ready\"\n",
            python(),
            fixture("ops_db.py")
        ),
    );
    d.unit("core", &format!("[unit]\nrequires = [\"db\"]\n{}", backend_unit(core, "")));
    d.unit("router", &format!("[router]\nlisten = \"127.0.0.1:{port}\"\n{}", route("/", core, "core")));
    let mut f = Flowinit::up(&d, Opts { pid1: true, args: &["--shutdown-timeout", "9s"], ..Opts::default() });
    f.wait_state("db", "ready");
    f.wait_state("core", "ready");
    f.wait_state("router", "running");

    let mut sse = SseStream::open(port, "/sse", Duration::from_secs(10));
    assert!(sse.head.starts_with("HTTP/1.1 200"), "{}", sse.head);
    assert!(sse.head.to_ascii_lowercase().contains("text/event-stream"), "{}", sse.head);
    assert_eq!(sse.next_data(), "tick 0");

    let start = Instant::now();
    f.signal(libc::SIGTERM);
    let status = wait_for("flowinit to exit", T, || f.try_exit());
    let took = start.elapsed();
    let log = f.stderr();
    let what = format!("flowinit exited {:?} {took:?} after SIGTERM; its log:\n{log}", status.code());
    assert!(!log.contains("shutdown budget of 9s spent"), "the shutdown budget was spent: {what}");
    assert!(!log.contains("unit db: sending SIGKILL"), "db was SIGKILLed instead of stopping cleanly: {what}");
    assert_eq!(d.read("db.got").trim(), "got SIGINT", "db did not get its stop_signal: {what}");
    assert!(log.contains("unit db stopped"), "{what}");
    assert_eq!(status.code(), Some(0), "{what}");
    assert!(took < Duration::from_millis(9500), "over the 9s budget: {what}");
    drop(sse);
}

// ---------------------------------------------------------------------------
// c. connection flood
// ---------------------------------------------------------------------------

enum Fresh {
    Answered(u16),
    Closed,
    Hung(String),
}

/// A fresh `GET /` during the flood: answered, closed, or left hanging
/// (nothing within `wait`).
fn fresh_request(port: u16, wait: Duration) -> Fresh {
    use std::io::Write;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, wait) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return Fresh::Hung(format!("connect: {e}"))
        }
        Err(_) => return Fresh::Closed,
    };
    s.set_read_timeout(Some(wait)).unwrap();
    if s.write_all(b"GET / HTTP/1.1\r\nHost: ops.test\r\nConnection: close\r\n\r\n").is_err() {
        return Fresh::Closed;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Fresh::Closed,
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            match head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                Some(code) if head.starts_with("HTTP/1.") => Fresh::Answered(code),
                _ => Fresh::Hung(format!("not HTTP: {head:?}")),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => Fresh::Hung(format!("read: {e}")),
        Err(_) => Fresh::Closed,
    }
}

#[test]
fn a_connection_flood_does_not_starve_pid_1() {
    const FLOOD: usize = 1100;
    let limit = raise_nofile(4096);
    assert!(limit as usize > FLOOD + 200, "cannot raise this test's RLIMIT_NOFILE: {limit}");
    let d = TempDir::new("ops-flood");
    let (port, api) = (free_port(), free_port());
    d.unit(
        "api",
        &format!(
            "[unit]\ncritical = true\n{}[liveness]\nhttp = \"http://127.0.0.1:{api}/ping\"\ninterval = \"200ms\"\nfailures = 1\n",
            backend_unit(api, "")
        ),
    );
    d.unit("router", &format!("[router]\nlisten = \"127.0.0.1:{port}\"\n{}", route("/", api, "api")));
    let mut f = Flowinit::up_via(&d, &["prlimit", "--nofile=1024:1024"], &[]);
    f.wait_state("api", "ready");
    f.wait_state("router", "running");
    wait_for("a first 200 through the router", T, || {
        http_get(port, "/", Duration::from_secs(2)).ok().filter(|r| r.status == 200)
    });

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut flood = Vec::new();
    let mut connect_errors = Vec::new();
    let opening = Instant::now() + Duration::from_secs(10);
    while flood.len() + connect_errors.len() < FLOOD && Instant::now() < opening {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => {
                s.set_nonblocking(true).unwrap();
                flood.push(s);
            }
            Err(e) => connect_errors.push(e.kind()),
        }
    }
    let opened = Instant::now();

    // Hold the flood ~3 s; status must answer every time meanwhile.
    let mut status_failures = Vec::new();
    let mut polls = 0;
    let mut fresh = Vec::new();
    while opened.elapsed() < Duration::from_secs(3) {
        polls += 1;
        let sock = f.socket.to_string_lossy().into_owned();
        match run_within(&d, &["status", "--json", "--socket", &sock], &[], Duration::from_secs(2)) {
            Ok((code, out, err)) => {
                let parsed: Option<serde_json::Value> = serde_json::from_str(&out).ok();
                if !matches!(code, 0 | 3) || parsed.is_none() {
                    status_failures.push(format!("exit {code}: {}{}", out.trim(), err.trim()));
                }
            }
            Err(err) => status_failures.push(format!("no answer within 2s {}", err.trim())),
        }
        if fresh.len() < 3 && opened.elapsed() > Duration::from_secs(1) {
            fresh.push(fresh_request(port, Duration::from_secs(2)));
        }
    }
    // Whatever the router could not take was answered or closed by now
    // (2 s after the last connect): at most what flowinit can hold open is
    // still silent.
    let mut silent = 0;
    let mut answered = 0;
    for s in &mut flood {
        let mut b = [0u8; 256];
        match s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => silent += 1,
            Ok(n) if n > 0 => answered += 1,
            _ => {}
        }
    }
    let alive = f.try_exit().is_none();
    let api_now = f.unit_json("api");
    let hung: Vec<String> = fresh
        .iter()
        .filter_map(|r| match r {
            Fresh::Hung(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let fresh_codes: Vec<u16> = fresh
        .iter()
        .filter_map(|r| match r {
            Fresh::Answered(c) => Some(*c),
            _ => None,
        })
        .collect();
    drop(flood);
    let log = f.stderr();
    let report = format!(
        "{} flood connections opened ({} connect errors: {:?}); after 2 s {silent} silent, {answered} answered; fresh requests answered {fresh_codes:?}, hung {hung:?}\n--- flowinit's log (tail):\n{}",
        FLOOD - connect_errors.len(),
        connect_errors.len(),
        connect_errors.iter().take(3).collect::<Vec<_>>(),
        log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(alive, "flowinit exited during the flood ({:?})\n{report}", f.try_exit());
    assert!(
        status_failures.is_empty(),
        "{} of {polls} status polls failed: {status_failures:?}\n{report}",
        status_failures.len()
    );
    let api_now = api_now.unwrap_or_else(|| panic!("no status of api\n{report}"));
    assert_eq!(api_now["restarts"], 0, "the critical unit was restarted: {api_now}\n{report}");
    assert_eq!(api_now["ready"], true, "{api_now}\n{report}");
    assert!(connect_errors.is_empty(), "connections hung in connect\n{report}");
    assert!(silent < 1024, "connections beyond the router's limit were left hanging\n{report}");
    assert!(hung.is_empty(), "a request during the flood was left hanging\n{report}");
    assert!(fresh_codes.iter().all(|c| [200, 503].contains(c)), "{report}");
    // Flood gone: a normal request works right away.
    let r = wait_for("a 200 once the flood is closed", Duration::from_secs(5), || {
        http_get(port, "/", Duration::from_secs(2)).ok().filter(|r| r.status == 200)
    });
    assert_eq!(String::from_utf8_lossy(&r.body), "ok\n");
    // status shows the cap (nofile 1024 → 384) and what it turned away.
    let router = f.unit_json("router").unwrap_or_else(|| panic!("no status of router\n{report}"));
    assert_eq!(router["router"]["max_connections"], 384, "{router}");
    let over = router["router"]["over_limit"].as_u64().unwrap_or(0);
    assert!(over as usize >= answered.min(1) && over > 0, "over_limit {over} after {answered} answered: {router}");
    let (_, details, _) = f.ctl(&["status", "router"]);
    assert!(
        details.contains("limit:      at most 384 connections;") && details.contains("turned away with 503"),
        "{details}"
    );
    assert_eq!(f.stop(T), 0);
}

// ---------------------------------------------------------------------------
// d. escaped processes
// ---------------------------------------------------------------------------

/// A shell line that starts `setsid sleep 300` in the background, appends
/// its pid to FILE, and waits until it runs in its own session (escaped
/// from the unit's process group for real).
fn escape(file: &str) -> String {
    format!(
        "setsid sleep 300 & p=$!; echo $p >> {{dir}}/{file}; while [ \"$(cut -d\" \" -f6 /proc/$p/stat)\" != \"$p\" ]; do sleep 0.01; done"
    )
}

#[test]
fn escaped_processes_of_a_unit_that_failed_for_good_are_gone() {
    let d = TempDir::new("ops-escape-fail");
    let escaped = PidFileReaper { files: vec![d.file("escaped.pids")], comm: "sleep" };
    d.unit(
        "escaper",
        &format!(
            "[service]\nshell = '{}; exit 1'\nrestart = \"on-failure\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 2\n",
            escape("escaped.pids")
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit escaper failed for good", T);
    f.wait_state("escaper", "failed");
    let pids = escaped.pids();
    assert_eq!(pids.len(), 2, "two starts, one escaped sleep each: {pids:?}");
    let left = wait_for_gone(&pids);
    assert!(left.is_empty(), "escaped pids still alive after the unit failed for good: {left:?}\n{}", f.stderr());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn stopping_a_unit_takes_its_escaped_child_along() {
    let d = TempDir::new("ops-escape-stop");
    let escaped = PidFileReaper { files: vec![d.file("runner.pids")], comm: "sleep" };
    d.unit(
        "runner",
        &format!("[service]\nshell = '{}; touch {{dir}}/escaped; exec sleep 1000'\n", escape("runner.pids")),
    );
    d.unit("bystander", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    wait_for("the child escaped", T, || d.file("escaped").exists().then_some(()));
    let pids = escaped.pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(pid_alive(pids[0]));
    let (code, out, err) = f.ctl(&["stop", "runner"]);
    assert_eq!((code, out.trim()), (0, "stopped runner"), "{err}");
    let left = wait_for_gone(&pids);
    assert!(left.is_empty(), "the escaped child survived `flowinit stop runner`: {left:?}\n{}", f.stderr());
    assert_eq!(f.unit_json("bystander").unwrap()["state"], "running");
    assert_eq!(f.stop(T), 0);
}

/// Waits up to 3 s for every pid to be gone (a kill takes a moment to
/// land); returns those still alive.
fn wait_for_gone(pids: &[i32]) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
