//! What units use, through the real binary: `rss_bytes`, `cpu_seconds`,
//! `cpu_percent` and `processes` in `status --json` (null without a
//! process) and the CPU and MEM columns of the table; `memory_max`
//! restarting a unit that grows, outside its start limit, and without a
//! 502 for a client that keeps requesting through the router meanwhile.
//!
//! Every wait polls with a deadline (generous: the machine may be loaded);
//! no figure is compared with a time. Every flowinit is stopped at the end
//! or killed with its processes on drop.

mod common;

use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;

/// A unit that touches 64 MiB (one write per page) and sleeps.
fn hog(mib: u64) -> String {
    format!(
        "[\"{}\", \"-c\", \"b = bytearray({mib}*1024*1024); import time; [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; time.sleep(1000)\"]",
        python()
    )
}

/// `status --json`'s entry for `unit` once `ok` holds for it.
fn wait_unit(f: &Flowinit, unit: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{unit}: {what}"), T, || f.unit_json(unit).filter(|u| ok(u)))
}

/// The cells of `unit`'s row in the status table, by column name.
fn row(table: &str, unit: &str) -> std::collections::HashMap<String, String> {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let starts: Vec<(usize, &str)> = header
        .match_indices(|c: char| c.is_ascii_uppercase())
        .filter(|&(i, _)| i == 0 || header.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| (i, &header[i..]))
        .collect();
    let line =
        lines.find(|l| l.split_whitespace().next() == Some(unit)).unwrap_or_else(|| panic!("no {unit} in\n{table}"));
    let mut out = std::collections::HashMap::new();
    for (k, &(st, rest)) in starts.iter().enumerate() {
        let name = rest.split_whitespace().next().unwrap().to_string();
        let end = starts.get(k + 1).map_or(line.len(), |&(e, _)| e.min(line.len()));
        out.insert(name, line.get(st..end).unwrap_or("").trim().to_string());
    }
    out
}

#[test]
fn a_unit_that_touches_64_mib_shows_it_in_json_and_the_mem_column() {
    let d = TempDir::new("usage-rss");
    d.unit("hog", &format!("[service]\ncommand = {}\n", hog(64)));
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("hog", "running");
    let u = wait_unit(&f, "hog", "rss_bytes >= 60 MiB", |u| u["rss_bytes"].as_u64().is_some_and(|b| b >= 60 * MIB));
    let rss = u["rss_bytes"].as_u64().unwrap();
    assert!(rss < 200 * MIB, "{rss} bytes for 64 MiB touched: {u}");
    assert!(u["processes"].as_u64().unwrap() >= 1, "{u}");
    assert!(u["cpu_seconds"].as_f64().is_some_and(|c| c >= 0.0), "{u}");
    assert!(u["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{u}");
    let (code, table, err) = f.ctl(&["status"]);
    assert_eq!(code, 0, "{table}{err}");
    let cells = row(&table, "hog");
    let mem = &cells["MEM"];
    let mib: f64 = mem.strip_suffix('M').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("MEM {mem:?}\n{table}"));
    assert!((60.0..200.0).contains(&mib), "MEM {mem:?}\n{table}");
    assert!(cells["CPU"].ends_with('%'), "CPU {:?}\n{table}", cells["CPU"]);
    let (_, details, _) = f.ctl(&["status", "hog"]);
    assert!(details.contains("  usage:      CPU "), "{details}");
    assert!(details.contains(", 1 process\n"), "{details}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn children_in_other_groups_sessions_and_orphans_count_for_their_unit() {
    let d = TempDir::new("usage-procs");
    // sh, a sleep in its group, a sleep that made a session of its own.
    d.unit("kids", "[service]\nshell = \"setsid sleep 1000 & sleep 1000 & wait\"\n");
    // A daemon: double-forked into its own session, re-parented to
    // flowinit; found by its run's tag. Plus the main sleep.
    d.unit("daemon", "[service]\nshell = \"(setsid sleep 1000 &); exec sleep 1000\"\n");
    d.unit("alone", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    for unit in ["kids", "daemon", "alone"] {
        f.wait_state(unit, "running");
    }
    wait_unit(&f, "kids", "processes = 3", |u| u["processes"] == 3);
    wait_unit(&f, "daemon", "processes = 2", |u| u["processes"] == 2);
    let alone = wait_unit(&f, "alone", "processes = 1", |u| u["processes"] == 1);
    assert!(alone["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{alone}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_stopped_unit_has_no_usage() {
    let d = TempDir::new("usage-null");
    d.unit("web", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("later", "[service]\nshell = \"exit 3\"\nrestart = \"no\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    wait_unit(&f, "web", "a sample", |u| u["processes"] == 1);
    let (code, out, err) = f.ctl(&["stop", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    f.wait_state("later", "failed");
    for unit in ["web", "later"] {
        let u = wait_unit(&f, unit, "settled", |u| u["state"] == "stopped" || u["state"] == "failed");
        for key in ["rss_bytes", "cpu_seconds", "cpu_percent", "processes"] {
            assert!(u.get(key).is_some_and(Value::is_null), "{unit}: {key} should be null: {u}");
        }
    }
    let (_, table, _) = f.ctl(&["status"]);
    let cells = row(&table, "web");
    assert_eq!((cells["CPU"].as_str(), cells["MEM"].as_str()), ("-", "-"), "{table}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn cpu_seconds_rise_for_a_busy_unit() {
    let d = TempDir::new("usage-cpu");
    d.unit("busy", "[service]\nshell = \"while :; do :; done\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("busy", "running");
    let first = wait_unit(&f, "busy", "some CPU time", |u| u["cpu_seconds"].as_f64().is_some_and(|c| c > 0.2));
    let was = first["cpu_seconds"].as_f64().unwrap();
    let later = wait_unit(&f, "busy", "more CPU time", |u| u["cpu_seconds"].as_f64().is_some_and(|c| c > was + 0.2));
    assert!(later["cpu_percent"].as_f64().is_some_and(|p| p > 0.0), "{later}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn memory_max_restarts_a_unit_that_grows_without_using_its_start_limit() {
    let d = TempDir::new("usage-memmax");
    d.unit(
        "hog",
        &format!(
            "[service]\ncommand = {}\nmemory_max = \"32MiB\"\nmemory_check = \"200ms\"\nstart_limit_burst = 1\nstop_timeout = \"5s\"\n",
            hog(64)
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    let u = wait_unit(&f, "hog", "two memory restarts, running again", |u| {
        u["memory_restarts"].as_u64().is_some_and(|n| n >= 2) && u["state"] == "running"
    });
    assert!(u["restarts"].as_u64().unwrap() >= 2, "{u}");
    assert_eq!(u["memory_max"].as_u64(), Some(32 * MIB), "{u}");
    let reason = u["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("restarted after memory_max exceeded (rss "), "{u}");
    let log = f.stderr();
    assert!(log.contains("WARN: unit hog: memory_max exceeded (rss "), "{log}");
    assert!(log.contains(" > 32MiB); restarting it"), "{log}");
    assert!(!log.contains("start limit reached"), "{log}");
    let (_, details, _) = f.ctl(&["status", "hog"]);
    assert!(details.contains("  memory_max: 32MiB ("), "{details}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_client_of_the_router_sees_no_502_across_memory_restarts() {
    let d = TempDir::new("usage-router");
    let (port, be) = (free_port(), free_port());
    d.unit(
        "api",
        &format!(
            "[service]\ncommand = [\"{}\", \"{}\", \"{be}\", \"5\", \"64\"]\nmemory_max = \"40MiB\"\nmemory_check = \"200ms\"\nstop_timeout = \"5s\"\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ping\"\ninterval = \"100ms\"\n",
            python(),
            fixture("hungry_http.py")
        ),
    );
    d.unit(
        "router",
        &format!(
            "[router]\nlisten = \"127.0.0.1:{port}\"\nstop_timeout = \"1s\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"api\"\n"
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("api", "ready");
    f.wait_state("router", "running");

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Result<HttpReply, String>>>> = Arc::default();
    let client = {
        let (stop, results) = (stop.clone(), results.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = http_get(port, "/work", Duration::from_secs(10));
                results.lock().unwrap().push(r);
                // Pacing of the client, not a wait for anything.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let api = wait_unit(&f, "api", "two memory restarts, ready again", |u| {
        u["memory_restarts"].as_u64().is_some_and(|n| n >= 2) && u["state"] == "ready"
    });
    // Some traffic to the second restart's new run too.
    let seen = results.lock().unwrap().len();
    wait_for("requests after the second restart", T, || (results.lock().unwrap().len() >= seen + 10).then_some(()));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();

    let results = results.lock().unwrap();
    let ok = results.iter().filter(|r| matches!(r, Ok(r) if r.status == 200)).count();
    let bad: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            Ok(r) if r.status == 200 => None,
            // The router's own answer while the unit is not up.
            Ok(r) if r.status == 503 && String::from_utf8_lossy(&r.body).contains("service not ready") => None,
            Ok(r) => Some(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => Some(e.clone()),
        })
        .collect();
    let log = f.stderr();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed across the memory restarts ({api}):\n{}\n--- flowinit's log:\n{log}",
        bad.len(),
        results.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(ok >= 15, "only {ok} of {} requests answered 200", results.len());
    let router = f.unit_json("router").unwrap();
    assert_eq!(router["router"]["upstream_errors"], 0, "{router}");
    assert_eq!(f.stop(T), 0);
}
