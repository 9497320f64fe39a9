//! The bundled demo (examples/demo/, the README's first command) tells the
//! story the README tells: db becomes ready before migrate runs, migrate
//! exits 0, the API is ready, the worker crashes twice and then keeps
//! going, dev-tools stays disabled, `status` ends healthy (exit 0), and
//! Ctrl-C stops everything in order with exit 0. The README's status table
//! is compared with the real one.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The demo's unit files, copied as shipped into a fresh units dir.
fn demo_dir() -> TempDir {
    let d = TempDir::new("demo");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, d.units().join(p.file_name().unwrap())).unwrap();
        }
    }
    d
}

/// A status table with the columns that change from run to run (PID,
/// UPTIME, CPU, MEM) blanked: `NAME STATE RESTARTS READY REASON`.
fn stable_columns(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // UNIT STATE PID UPTIME CPU MEM RESTARTS READY REASON…
            let mut keep = vec![w[0], w[1]];
            keep.extend(&w[6..]);
            keep.join(" ")
        })
        .collect()
}

/// The status block the README shows: the fenced block after the line
/// `$ flowinit status --socket /tmp/flowinit-demo.sock` of its "Try it".
fn readme_status() -> String {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("$ flowinit status --socket /tmp/flowinit-demo.sock\n").expect("README shows the status");
    let rest = &readme[start..];
    let rest = &rest[rest.find('\n').unwrap() + 1..];
    rest[..rest.find("```").unwrap()].to_string()
}

#[test]
fn the_demo_tells_the_readme_story() {
    let d = demo_dir();
    let port = free_port().to_string();
    let mut f = Flowinit::up(&d, Opts { env: &[("DEMO_API_PORT", &port)], ..Opts::default() });

    // db is `starting` until its line, then `ready`; migrate waits for that.
    f.wait_state("db", "ready");
    f.wait_state("migrate", "exited");
    f.wait_state("api", "ready");
    let r = wait_for("the API answers", T, || http_get(port.parse().unwrap(), "/", Duration::from_secs(2)).ok());
    assert_eq!(r.status, 200);

    // The worker: two crashes with backoff, then a healthy third run.
    f.wait_log("unit ticker exited 3, restarting in 1s", T);
    f.wait_log("unit ticker exited 3, restarting in 2s", T);
    wait_for("the ticker's third run to be healthy", T, || f.stdout().contains("run 3 is healthy").then_some(()));
    let ticker = f.wait_state("ticker", "running");
    assert_eq!(ticker["restarts"], 2, "{ticker}");

    let err = f.stderr();
    let db_ready = err.find("unit db is ready").expect("db became ready");
    let migrate_started = err.find("unit migrate started").expect("migrate started");
    assert!(db_ready < migrate_started, "migrate started before db was ready:\n{err}");
    let out = f.stdout();
    assert!(out.contains("ticker    | crashing (run 1)") || err.contains("ticker    | crashing (run 1)"), "{out}{err}");

    // The story ends healthy, as the README shows it.
    let (code, table, _) = f.ctl(&["status"]);
    assert_eq!(code, 0, "status at the end of the demo is not healthy:\n{table}");
    assert_eq!(
        stable_columns(&table),
        stable_columns(&readme_status()),
        "README's status table differs from the demo's (PID, UPTIME, CPU and MEM aside):\n{table}"
    );
    let dev = f.unit_json("dev-tools").unwrap();
    assert_eq!(dev["state"], "disabled", "{dev}");

    // Ctrl-C: in order, exit 0.
    f.signal(libc::SIGINT);
    let (code, _) = f.wait_exit(T);
    let err = f.stderr();
    assert_eq!(code, 0, "{err}");
    let api_stopped = err.find("unit api stopped").expect("api stopped");
    let db_stopping = err.find("unit db: stopping (sending SIGINT").expect("db got SIGINT");
    assert!(api_stopped < db_stopping, "db was stopped before what depends on it:\n{err}");
    assert!(err.contains("all units stopped; exiting with code 0"), "{err}");
}
