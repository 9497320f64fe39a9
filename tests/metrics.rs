//! `flowinit up --metrics ADDR` through the real binary: the exposition is
//! read by a Prometheus text-format parser (prometheus-parse) and checked
//! line by line against the format's grammar, and its values move with
//! what happens: requests through the router by route and status class,
//! a crash's restart, the memory of a running unit.

mod common;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Every family the contract names, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("flowinit_build_info", "gauge"),
    ("flowinit_unit_ready", "gauge"),
    ("flowinit_unit_state", "gauge"),
    ("flowinit_unit_restarts_total", "counter"),
    ("flowinit_unit_memory_restarts_total", "counter"),
    ("flowinit_unit_memory_bytes", "gauge"),
    ("flowinit_unit_cpu_seconds_total", "counter"),
    ("flowinit_unit_processes", "gauge"),
    ("flowinit_router_requests_total", "counter"),
    ("flowinit_router_request_duration_seconds", "histogram"),
    ("flowinit_router_connections", "gauge"),
    ("flowinit_router_upstream_errors_total", "counter"),
    ("flowinit_router_over_limit_total", "counter"),
];

struct Scraped {
    text: String,
    scrape: Scrape,
}

impl Scraped {
    fn samples(&self, metric: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The one counter or gauge value of `metric` with `labels`.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.samples(metric, labels);
        assert!(found.len() <= 1, "{metric} {labels:?}: {} samples", found.len());
        found.first().map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric}: not a single value: {other:?}"),
        })
    }
}

/// Checks every line against the text format 0.0.4 (the parser skips what
/// it cannot read): comments are HELP/TYPE, a sample is `name{labels} value`
/// after its family's TYPE line.
fn check_grammar(text: &str) {
    let sample = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\\n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\\n])*")*\})? (\+Inf|-Inf|NaN|-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?)$"#,
    )
    .unwrap();
    let comment = regex::Regex::new(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$").unwrap();
    let mut typed: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        if let Some(c) = comment.captures(line) {
            if &c[1] == "TYPE" {
                assert!(["counter", "gauge", "histogram"].contains(&&c[3]), "{line}");
                assert!(typed.insert(c[2].to_string()), "two TYPE lines for {}", &c[2]);
            }
            continue;
        }
        let c = sample.captures(line).unwrap_or_else(|| panic!("not a sample line of the format: {line:?}"));
        let name = &c[1];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name}: sample before (or without) its TYPE line");
    }
}

fn scrape(port: u16) -> Scraped {
    let reply = http_get(port, "/metrics", T).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(reply.header("content-type").as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(reply.body).unwrap();
    check_grammar(&text);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    Scraped { text, scrape }
}

fn requests(s: &Scraped, route: &str, code: &str) -> f64 {
    s.value("flowinit_router_requests_total", &[("router", "router"), ("route", route), ("code", code)]).unwrap_or(0.0)
}

#[test]
fn metrics_are_parsed_and_move_with_traffic_and_restarts() {
    let d = TempDir::new("metrics");
    let (router_port, api_port, metrics_port) = (free_port(), free_port(), free_port());
    d.unit(
        "api",
        &format!(
            "[service]\ncommand = [\"{}\", \"{}\", \"{api_port}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{api_port}/echo\"\n",
            python(),
            fixture("backend.py")
        ),
    );
    // Crashes on its first run only.
    d.unit("crashy", "[service]\nshell = \"[ -e {dir}/crashed ] || { touch {dir}/crashed; exit 3; }; exec sleep 1000\"\nrestart = \"on-failure\"\nrestart_delay = \"100ms\"\n");
    d.unit(
        "router",
        &format!(
            "[router]\nlisten = \"127.0.0.1:{router_port}\"\n\
             [[router.routes]]\nprefix = \"/echo\"\nupstream = \"http://127.0.0.1:{api_port}\"\nunit = \"api\"\n\
             [[router.routes]]\nprefix = \"/dead/\"\nupstream = \"http://127.0.0.1:1\"\n"
        ),
    );
    let addr = format!("127.0.0.1:{metrics_port}");
    let mut f = Flowinit::up(&d, Opts { args: &["--metrics", &addr], ..Opts::default() });
    f.wait_state("api", "ready");
    f.wait_state("router", "running");
    wait_for("crashy's restart", T, || (f.unit_json("crashy")?["restarts"] == 1).then_some(()));
    f.wait_state("crashy", "running");

    let before = scrape(metrics_port);
    for (name, kind) in FAMILIES {
        assert_eq!(
            before.text.lines().find(|l| l.starts_with(&format!("# TYPE {name} "))),
            Some(format!("# TYPE {name} {kind}").as_str()),
            "family {name}:\n{}",
            before.text
        );
    }
    assert_eq!(before.value("flowinit_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    // Units: as `status --json` says.
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    for u in status["units"].as_array().unwrap() {
        let name = u["name"].as_str().unwrap();
        let ready = f64::from(u8::from(u["ready"].as_bool().unwrap()));
        assert_eq!(before.value("flowinit_unit_ready", &[("unit", name)]), Some(ready), "{name}");
        let states: BTreeMap<String, f64> = before
            .samples("flowinit_unit_state", &[("unit", name)])
            .iter()
            .map(|s| {
                (
                    s.labels.get("state").unwrap().to_string(),
                    before
                        .value("flowinit_unit_state", &[("unit", name), ("state", s.labels.get("state").unwrap())])
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(states.len(), 9, "{name}: one series per state");
        assert_eq!(states.values().sum::<f64>(), 1.0, "{name}: {states:?}");
        assert_eq!(states.get(u["state"].as_str().unwrap()), Some(&1.0), "{name}: {states:?}");
    }
    assert_eq!(before.value("flowinit_unit_restarts_total", &[("unit", "crashy")]), Some(1.0));
    assert_eq!(before.value("flowinit_unit_restarts_total", &[("unit", "api")]), Some(0.0));
    assert!(before.value("flowinit_unit_memory_bytes", &[("unit", "api")]).unwrap() > 1_000_000.0);
    assert!(before.value("flowinit_unit_processes", &[("unit", "crashy")]).unwrap() >= 1.0);
    assert_eq!(before.value("flowinit_unit_memory_bytes", &[("unit", "router")]), None, "no process of its own");

    // Traffic: 7 answers 2xx on /echo, 2 answers 502 on /dead/, 1 with no route.
    for i in 0..7 {
        assert_eq!(http_get(router_port, &format!("/echo/{i}"), T).unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(http_get(router_port, "/dead/x", T).unwrap().status, 502);
    }
    assert_eq!(http_get(router_port, "/nowhere", T).unwrap().status, 404);
    let after = scrape(metrics_port);
    let delta = |route: &str, code: &str| requests(&after, route, code) - requests(&before, route, code);
    assert_eq!(delta("/echo", "2xx"), 7.0, "\n{}", after.text);
    assert_eq!(delta("/dead/", "5xx"), 2.0);
    assert_eq!(delta("", "4xx"), 1.0, "a request no route took is counted under route=\"\"");
    assert_eq!(delta("/echo", "5xx"), 0.0);
    assert_eq!(after.value("flowinit_router_upstream_errors_total", &[("route", "/dead/")]), Some(2.0));
    assert_eq!(after.value("flowinit_router_upstream_errors_total", &[("route", "/echo")]), Some(0.0));
    // The histogram of /echo: cumulative buckets, +Inf = count = requests.
    let hist = after.samples("flowinit_router_request_duration_seconds", &[("route", "/echo")]);
    assert_eq!(hist.len(), 1);
    let Value::Histogram(buckets) = &hist[0].value else { panic!("{:?}", hist[0].value) };
    assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count), "{buckets:?}");
    let total = requests(&after, "/echo", "2xx") + requests(&after, "/echo", "5xx");
    assert_eq!(buckets.last().map(|b| (b.less_than, b.count)), Some((f64::INFINITY, total)));
    let count = after
        .text
        .lines()
        .find(|l| l.starts_with("flowinit_router_request_duration_seconds_count{router=\"router\",route=\"/echo\"}"));
    assert_eq!(count.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()), Some(total));
    // Open connections: the scrapes' own are not the router's.
    assert_eq!(after.value("flowinit_router_connections", &[("router", "router")]), Some(0.0));
    assert_eq!(after.value("flowinit_router_over_limit_total", &[("router", "router")]), Some(0.0));

    // Not served on the router's port; other paths and methods refused.
    assert_eq!(http_get(router_port, "/metrics", T).unwrap().status, 404);
    assert_eq!(http_get(metrics_port, "/", T).unwrap().status, 404);
    assert_eq!(f.stop(T), 0);
}

#[test]
fn the_variable_serves_it_and_a_busy_address_stops_the_start() {
    let d = TempDir::new("metrics-env");
    d.unit("web", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut f = Flowinit::up(&d, Opts { env: &[("FLOWINIT_METRICS", &addr)], ..Opts::default() });
    f.wait_state("web", "running");
    let s = scrape(port);
    assert_eq!(s.value("flowinit_unit_ready", &[("unit", "web")]), Some(1.0));
    // A second flowinit on the same address: exit 2, naming it, nothing started.
    let d2 = TempDir::new("metrics-busy");
    d2.unit("witness", "[service]\nshell = \"touch {dir}/started; exec sleep 1000\"\n");
    let (code, _, err) = run_bounded(
        &d2,
        &[
            "up",
            "--units",
            &d2.units().to_string_lossy(),
            "--socket",
            &d2.file("s.sock").to_string_lossy(),
            "--metrics",
            &addr,
        ],
        &[],
        T,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("flowinit: cannot serve metrics on {addr}: ")), "{err}");
    assert!(err.contains("choose a free address"), "{err}");
    assert!(!d2.file("started").exists());
    assert_eq!(f.stop(T), 0);
}
