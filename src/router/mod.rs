//! The built-in HTTP router: one public port in front of the services.
//! Longest-prefix routes to plain-HTTP upstreams over pooled keep-alive
//! connections; bodies streamed both ways (SSE arrives event by event);
//! Upgrade requests (WebSocket) tunnelled; hop-by-hop headers dropped and
//! X-Forwarded-* set; 503 with Retry-After while a route's unit is not
//! ready; 502 with a short JSON body when the upstream fails; slow or
//! oversized request headers cut off; graceful drain on stop. It learns
//! unit readiness only from the supervisor's published snapshot.

pub mod routes;

use crate::config::unit::{Route, RouterSpec};
use crate::supervisor::manager::Snapshot;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

type Body = Either<Incoming, Full<Bytes>>;

/// Largest request head (request line and headers) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Seconds a client is told to wait while a unit starts.
const RETRY_AFTER_SECS: &str = "2";

/// Connections the kernel may queue before we accept them; std's default
/// of 128 drops SYNs under a burst of a few hundred clients.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a router's listen socket (non-blocking, SO_REUSEADDR, a deep
/// backlog). Called before anything starts, and again for a later start.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    let backlog = Backlog::new(LISTEN_BACKLOG).map_err(std::io::Error::from)?;
    socket::listen(&fd, backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Counters shown by `flowinit status router`.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub not_ready: AtomicU64,
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Router {
    spec: Arc<RouterSpec>,
    client: Client<HttpConnector, Incoming>,
    snapshot: watch::Receiver<Snapshot>,
    stats: Arc<RouterStats>,
    access: Option<mpsc::Sender<String>>,
}

impl Router {
    pub fn new(
        spec: Arc<RouterSpec>,
        snapshot: watch::Receiver<Snapshot>,
        stats: Arc<RouterStats>,
        access: Option<mpsc::Sender<String>>,
    ) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(spec.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .build(connector);
        Router { spec, client, snapshot, stats, access }
    }

    /// (ready, state name) of a unit, from the latest snapshot.
    fn unit_state(&self, name: &str) -> Option<(bool, &'static str)> {
        let snap = self.snapshot.borrow();
        snap.units.iter().find(|u| u.unit.name == name).map(|u| (u.status.state.is_up(), u.status.state.as_str()))
    }

    fn log(&self, line: String) {
        if let Some(tx) = &self.access {
            // Access logging must never slow requests: under extreme output
            // back-pressure, lines are dropped (service lines never are).
            let _ = tx.try_send(line);
        }
    }
}

/// Accepts until `stop` turns true, then stops accepting, lets requests in
/// flight finish within `drain`, and returns.
/// `drain` is the deadline for requests in flight once stopping; it may be
/// brought forward while draining (a second signal, the shutdown budget).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Arc<Router>,
    mut stop: watch::Receiver<bool>,
    mut drain: watch::Receiver<tokio::time::Instant>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(router.spec.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of fds and the like: back off, keep serving.
                        tracing::warn!("router: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let r = router.clone();
                let svc = hyper::service::service_fn(move |req| handle(r.clone(), peer, req));
                let conn = http.serve_connection(TokioIo::new(stream), svc).with_upgrades();
                let mut stopping = stop.clone();
                conns.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopping.changed() => {
                            // Finish the request in flight, then close;
                            // idle keep-alive connections close at once.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!("router: connection from {peer}: {e}");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    loop {
        let until = *drain.borrow_and_update();
        tokio::select! {
            done = conns.join_next() => if done.is_none() { return },
            _ = tokio::time::sleep_until(until) => {
                tracing::warn!("router: closing {} connection(s) still busy at the end of the drain", conns.len());
                conns.abort_all();
                return;
            }
            _ = drain.changed() => {}
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

async fn handle(r: Arc<Router>, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    r.stats.requests.fetch_add(1, Ordering::Relaxed);
    r.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&r.stats.in_flight);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (res, upstream) = route(&r, peer, req).await;
    if r.spec.access_log && !r.spec.access_log_skip.contains(&path) {
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        r.log(format!("{peer} {method} {path} {} {ms:.1}ms -> {}", res.status().as_u16(), upstream.unwrap_or("-")));
    }
    Ok(res)
}

async fn route(r: &Router, peer: SocketAddr, mut req: Request<Incoming>) -> (Response<Body>, Option<&str>) {
    if let Err((status, why)) = routes::check_framing(req.headers()) {
        let mut res = json(status, serde_json::json!({"error": why}));
        res.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        return (res, None);
    }
    let Some(route) = routes::pick(&r.spec.routes, req.uri().path()) else {
        return (json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no route for this path"})), None);
    };
    if let Some(unit) = &route.unit {
        if let Some((false, state)) = r.unit_state(unit) {
            r.stats.not_ready.fetch_add(1, Ordering::Relaxed);
            let mut res = json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "service not ready", "unit": unit, "state": state}),
            );
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            return (res, Some(&route.upstream));
        }
    }
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = match format!("http://{}{}", route.upstream, routes::upstream_path(route, pq)).parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return (json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "bad request target"})), None),
    };
    let upgrade = routes::wants_upgrade(req.headers());
    routes::strip_hop_by_hop(req.headers_mut(), upgrade);
    routes::set_forwarded(req.headers_mut(), peer.ip(), r.spec.trust_forwarded);
    *req.uri_mut() = uri;
    let res = if upgrade { tunnel(r, route, req).await } else { forward(r, route, req).await };
    (res, Some(&route.upstream))
}

fn bad_gateway(r: &Router, route: &Route, detail: String) -> Response<Body> {
    r.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("router: upstream {} failed: {detail}", route.upstream);
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"error": "bad gateway", "upstream": route.upstream, "detail": detail}),
    )
}

/// Why an upstream request failed, in a few words.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "connect timeout".into(),
                _ => io.to_string(),
            };
        }
        last = err.to_string();
        cur = err.source();
    }
    last
}

async fn forward(r: &Router, route: &Route, req: Request<Incoming>) -> Response<Body> {
    match tokio::time::timeout(r.spec.upstream_timeout, r.client.request(req)).await {
        Ok(Ok(mut res)) => {
            routes::strip_hop_by_hop(res.headers_mut(), false);
            res.map(Either::Left)
        }
        Ok(Err(e)) => bad_gateway(r, route, describe(&e)),
        Err(_) => {
            bad_gateway(r, route, format!("no response within {}", humantime::format_duration(r.spec.upstream_timeout)))
        }
    }
}

/// Passes an Upgrade request on its own connection; on 101 both sides are
/// joined byte for byte until either closes.
async fn tunnel(r: &Router, route: &Route, mut req: Request<Incoming>) -> Response<Body> {
    let connect = tokio::net::TcpStream::connect(route.upstream.as_str());
    let stream = match tokio::time::timeout(r.spec.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return bad_gateway(r, route, describe(&e)),
        Err(_) => return bad_gateway(r, route, "connect timeout".into()),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return bad_gateway(r, route, describe(&e)),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let client_side = hyper::upgrade::on(&mut req);
    let mut res = match tokio::time::timeout(r.spec.upstream_timeout, sender.send_request(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return bad_gateway(r, route, describe(&e)),
        Err(_) => {
            let waited = humantime::format_duration(r.spec.upstream_timeout);
            return bad_gateway(r, route, format!("no response within {waited}"));
        }
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            match (client_side.await, upstream_side.await) {
                (Ok(a), Ok(b)) => {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                (a, b) => tracing::debug!("router: upgrade failed: {:?} / {:?}", a.err(), b.err()),
            }
        });
    } else {
        routes::strip_hop_by_hop(res.headers_mut(), false);
    }
    res.map(Either::Left)
}
