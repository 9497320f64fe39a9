//! `GET /metrics` in the Prometheus text exposition format (0.0.4), on an
//! address of its own (`flowinit up --metrics ADDR`, `FLOWINIT_METRICS`),
//! never on a router's public port. Every value is read when a scrape
//! asks: the units from the published [`Snapshot`], what their processes
//! use from /proc ([`api::sample_usage`]), the routers' counters from
//! their [`RouterStats`]. Nothing is sampled between scrapes.
//!
//! [`render`] is pure; the server around it answers `/metrics` (GET or
//! HEAD), 404 for other paths, 405 for other methods.

use crate::api::{self, RouterStats, Snapshot, State, Usage, DURATION_BUCKETS};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every state a unit can be in: `flowinit_unit_state` has one series per
/// state, so a change shows as one series going to 0 and another to 1.
const STATES: [State; 9] = [
    State::Inactive,
    State::Starting,
    State::Ready,
    State::Running,
    State::Stopping,
    State::Exited,
    State::Failed,
    State::Stopped,
    State::Disabled,
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as the format reads it (`+Inf`, integers without a fraction).
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {}", number(value));
    }
}

/// The whole exposition for `snapshot`; `usage[i]` is what the processes
/// of `snapshot.units[i]` use (`None`: no process).
pub fn render(snapshot: &Snapshot, usage: &[Option<Usage>]) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.family("flowinit_build_info", "gauge", "flowinit's version (always 1).");
    o.sample("flowinit_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    let units = &snapshot.units;
    o.family("flowinit_unit_ready", "gauge", "1 when the unit is ready or running, else 0.");
    for v in units {
        o.sample("flowinit_unit_ready", &[("unit", &v.unit.name)], f64::from(u8::from(v.status.state.is_up())));
    }
    o.family("flowinit_unit_state", "gauge", "1 for the unit's current state, 0 for the others.");
    for v in units {
        for s in STATES {
            let on = f64::from(u8::from(v.status.state == s));
            o.sample("flowinit_unit_state", &[("unit", &v.unit.name), ("state", s.as_str())], on);
        }
    }
    o.family("flowinit_unit_restarts_total", "counter", "Restarts of the unit since flowinit started.");
    for v in units {
        o.sample("flowinit_unit_restarts_total", &[("unit", &v.unit.name)], f64::from(v.status.restarts));
    }
    o.family(
        "flowinit_unit_memory_restarts_total",
        "counter",
        "Restarts because the unit stayed above its memory_max (also in restarts_total).",
    );
    for v in units {
        o.sample("flowinit_unit_memory_restarts_total", &[("unit", &v.unit.name)], f64::from(v.status.memory_restarts));
    }
    let with_usage: Vec<(&str, &Usage)> =
        units.iter().zip(usage).filter_map(|(v, u)| u.as_ref().map(|u| (v.unit.name.as_str(), u))).collect();
    o.family(
        "flowinit_unit_memory_bytes",
        "gauge",
        "Resident memory of the unit's processes (units with a process only).",
    );
    for (name, u) in &with_usage {
        o.sample("flowinit_unit_memory_bytes", &[("unit", name)], u.rss_bytes as f64);
    }
    o.family(
        "flowinit_unit_cpu_seconds_total",
        "counter",
        "User and system CPU time of the unit's current run (units with a process only).",
    );
    for (name, u) in &with_usage {
        o.sample("flowinit_unit_cpu_seconds_total", &[("unit", name)], u.cpu_seconds);
    }
    o.family("flowinit_unit_processes", "gauge", "Live processes of the unit (units with a process only).");
    for (name, u) in &with_usage {
        o.sample("flowinit_unit_processes", &[("unit", name)], f64::from(u.processes));
    }
    let mut routers: Vec<(&String, &RouterStats)> = snapshot.routers.iter().map(|(k, v)| (k, &**v)).collect();
    routers.sort_by(|a, b| a.0.cmp(b.0));
    let routes_of = |stats: &RouterStats| {
        let routes = stats.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
    };
    let per_route: Vec<(&str, Vec<_>)> = routers.iter().map(|(name, s)| (name.as_str(), routes_of(s))).collect();
    o.family(
        "flowinit_router_requests_total",
        "counter",
        "Requests answered, by route prefix (\"\" when no route matched) and status class.",
    );
    for (router, routes) in &per_route {
        for (prefix, r) in routes {
            for (i, class) in CLASSES.iter().enumerate() {
                let n = r.by_class[i].load(Relaxed);
                if n > 0 || *class == "2xx" {
                    let labels = [("router", *router), ("route", prefix.as_str()), ("code", class)];
                    o.sample("flowinit_router_requests_total", &labels, n as f64);
                }
            }
        }
    }
    o.family(
        "flowinit_router_request_duration_seconds",
        "histogram",
        "Time from the request to the response head, by route prefix.",
    );
    for (router, routes) in &per_route {
        for (prefix, r) in routes {
            let mut cumulative = 0u64;
            for (i, n) in r.buckets.iter().enumerate() {
                cumulative += n.load(Relaxed);
                let le = DURATION_BUCKETS.get(i).map_or("+Inf".to_string(), |b| number(*b));
                let labels = [("router", *router), ("route", prefix.as_str()), ("le", le.as_str())];
                o.sample("flowinit_router_request_duration_seconds_bucket", &labels, cumulative as f64);
            }
            let labels = [("router", *router), ("route", prefix.as_str())];
            let sum = r.duration_micros.load(Relaxed) as f64 / 1e6;
            o.sample("flowinit_router_request_duration_seconds_sum", &labels, sum);
            o.sample("flowinit_router_request_duration_seconds_count", &labels, cumulative as f64);
        }
    }
    o.family(
        "flowinit_router_upstream_errors_total",
        "counter",
        "Requests answered 502 or 504 because the upstream failed, by route prefix.",
    );
    for (router, routes) in &per_route {
        for (prefix, r) in routes.iter().filter(|(p, _)| !p.is_empty()) {
            let labels = [("router", *router), ("route", prefix.as_str())];
            o.sample("flowinit_router_upstream_errors_total", &labels, r.upstream_errors.load(Relaxed) as f64);
        }
    }
    o.family("flowinit_router_connections", "gauge", "Client connections open now.");
    for (router, s) in &routers {
        o.sample("flowinit_router_connections", &[("router", router.as_str())], s.connections.load(Relaxed) as f64);
    }
    o.family(
        "flowinit_router_over_limit_total",
        "counter",
        "Connections answered 503 and closed because max_connections were open.",
    );
    for (router, s) in &routers {
        o.sample("flowinit_router_over_limit_total", &[("router", router.as_str())], s.over_limit.load(Relaxed) as f64);
    }
    o.0
}

/// Binds ADDR before any unit starts: a busy or bad address is a start-up
/// error, not a missing endpoint found later.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `/metrics` from `listener` on the current runtime until it ends.
pub fn serve(listener: std::net::TcpListener, snapshot: watch::Receiver<Snapshot>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics: {e}; /metrics will not answer");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let snapshot = snapshot.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, snapshot.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
            });
        }
    });
}

async fn answer<B>(req: Request<B>, snapshot: watch::Receiver<Snapshot>) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *res.status_mut() = status;
        res
    };
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: flowinit serves /metrics here\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        res.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return Ok(res);
    }
    // Cloned out of the watch: /proc is read without holding its lock.
    let snap = snapshot.borrow().clone();
    let views: Vec<&api::UnitView> = snap.units.iter().collect();
    let usage = api::sample_usage(&views);
    let body = render(&snap, &usage);
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
    }

    #[test]
    fn a_route_histogram_is_cumulative_and_counts_by_class() {
        let stats = std::sync::Arc::new(RouterStats::default());
        let r = stats.route("/api/");
        r.observe(200, std::time::Duration::from_millis(3));
        r.observe(201, std::time::Duration::from_millis(30));
        r.observe(502, std::time::Duration::from_secs(20));
        let mut snap = Snapshot::default();
        snap.routers.insert("router".into(), stats);
        let text = render(&snap, &[]);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has("flowinit_router_requests_total{router=\"router\",route=\"/api/\",code=\"2xx\"} 2");
        has("flowinit_router_requests_total{router=\"router\",route=\"/api/\",code=\"5xx\"} 1");
        has("flowinit_router_request_duration_seconds_bucket{router=\"router\",route=\"/api/\",le=\"0.005\"} 1");
        has("flowinit_router_request_duration_seconds_bucket{router=\"router\",route=\"/api/\",le=\"0.05\"} 2");
        has("flowinit_router_request_duration_seconds_bucket{router=\"router\",route=\"/api/\",le=\"10\"} 2");
        has("flowinit_router_request_duration_seconds_bucket{router=\"router\",route=\"/api/\",le=\"+Inf\"} 3");
        has("flowinit_router_request_duration_seconds_count{router=\"router\",route=\"/api/\"} 3");
        has("flowinit_router_request_duration_seconds_sum{router=\"router\",route=\"/api/\"} 20.033");
        assert!(!text.contains("code=\"4xx\""), "classes never seen are left out (but 2xx)");
    }
}
