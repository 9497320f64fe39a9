//! The built-in HTTP router: one public port in front of the services.
//! Longest-prefix routes to plain-HTTP upstreams; each client connection
//! has its own keep-alive upstream connections, used by its requests in
//! its own task (see `upstream`; its timeouts: `clocks`); bodies streamed
//! both ways (SSE arrives event by event);
//! Upgrade requests (WebSocket) tunnelled; hop-by-hop headers dropped and
//! X-Forwarded-* set; 503 with Retry-After while a route's unit is not
//! ready; 502 with a short JSON body when the upstream fails; slow or
//! oversized request headers cut off; graceful drain on stop; a request
//! id on every request (`request_id`, passed on when the client's is sane),
//! sent upstream, returned to the client and written in the access log
//! line (`access`), one per response once it has ended. It learns unit
//! readiness only from the supervisor's published [`Readiness`].

mod access;
mod clocks;
pub mod framing;
mod request_id;
pub mod routes;
mod upstream;

pub use access::Access;

use crate::api::{Readiness, RouterStats, State, TrafficGuard};
use crate::config::unit::{Route, RouterSpec};
use bytes::Bytes;
use clocks::{Clocks, Expiry};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use upstream::{ExchangeError, Exchanged, UpstreamBody, Upstreams};

type Body = Either<UpstreamBody, Full<Bytes>>;

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

/// Work that runs on the router's thread beside it (the access log's writer).
pub type Beside = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs [`serve`] on a thread of its own, in a single-threaded runtime,
/// until it returns; the receiver is told then (or dropped if the thread
/// died). `beside` runs on the same thread while the router does (the
/// access log's writer: lines then pass to it without waking another
/// thread, and go out in batches of what piled up while the router was
/// busy). One thread keeps every connection's task where its sockets'
/// events arrive, and keeps the public port's latency apart from whatever
/// the supervisor's runtime is busy with (a log flood, a reload): measured
/// at 32 connections, the p99 on the supervisor's two worker threads was
/// 2.6-3.4 ms against 1.0-1.1 ms on a thread of its own (nginx: 0.9 ms).
pub fn serve_on_own_thread(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    stop: watch::Receiver<bool>,
    drain: watch::Receiver<tokio::time::Instant>,
    reconfigure: mpsc::Receiver<NewConfig>,
    beside: Option<Beside>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("flowinit-router".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("router: cannot start its runtime: {e}");
                return;
            }
        };
        runtime.block_on(async move {
            let beside = beside.map(tokio::spawn);
            // Registered with this thread's runtime, where it is polled.
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => serve(l, router, stop, drain, reconfigure).await,
                Err(e) => tracing::error!("router: cannot use its listen socket: {e}"),
            }
            // Once the router (and with it every sender) is gone, the
            // access log's last lines are written and it ends; bounded, in
            // case a straggler still holds a sender.
            if let Some(task) = beside {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        });
        let _ = done.send(());
    })?;
    Ok(finished)
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Router {
    spec: Arc<RouterSpec>,
    readiness: watch::Receiver<Readiness>,
    stats: Arc<RouterStats>,
    access: Option<mpsc::Sender<Access>>,
    /// The stop signal [`serve`] gets too: once it is set, every answer
    /// says `Connection: close`.
    stopping: watch::Receiver<bool>,
}

/// How long after the stop an idle keep-alive connection stays open. A
/// client (a load balancer above all) may have sent its next request on it
/// at the very moment of the stop; closing at once would lose that request
/// (a reset instead of an answer). Within this grace it is answered, with
/// `Connection: close`. The drain deadline (stop_timeout, shutdown budget)
/// still ends everything.
const KEEPALIVE_GRACE: Duration = Duration::from_secs(1);

impl Router {
    /// The same router under another configuration (a reload): the stats,
    /// the access log and the stop signal are shared.
    fn with_spec(&self, spec: Arc<RouterSpec>) -> Router {
        Router {
            spec,
            readiness: self.readiness.clone(),
            stats: self.stats.clone(),
            access: self.access.clone(),
            stopping: self.stopping.clone(),
        }
    }

    pub fn new(
        spec: Arc<RouterSpec>,
        readiness: watch::Receiver<Readiness>,
        stats: Arc<RouterStats>,
        access: Option<mpsc::Sender<Access>>,
        stopping: watch::Receiver<bool>,
    ) -> Router {
        Router { spec, readiness, stats, access, stopping }
    }

    /// The router was told to stop. The stop signal only ever changes
    /// once, to true, so a change is the stop (one atomic load, where
    /// reading the value would take the watch's lock on every request).
    fn is_stopping(&self) -> bool {
        self.stopping.has_changed().unwrap_or(true)
    }

    /// A unit's state as the supervisor last published it and, when it is
    /// up, the request counted in its traffic until the guard is dropped
    /// (its stop waits for that: `api::Traffic`).
    fn enter_unit(&self, name: &str) -> Option<(State, Option<TrafficGuard>)> {
        self.readiness.borrow().enter(name)
    }

    fn log(&self, access: Access) {
        if let Some(tx) = &self.access {
            // Access logging must never slow requests: under extreme output
            // back-pressure, lines are dropped (service lines never are).
            let _ = tx.try_send(access);
        }
    }
}

/// A new configuration for a running router (a reload): its routes,
/// upstreams and timeouts, and the new listen socket when `listen` changed
/// (bound by the caller; the router never re-binds an address).
pub struct NewConfig {
    pub spec: Arc<RouterSpec>,
    pub listener: Option<std::net::TcpListener>,
}

/// The router as configured now: a reload replaces it. Each request takes
/// the current one when it arrives, so a kept-alive connection (a load
/// balancer's, which may live for days) follows a reload at its next
/// request, and a request in flight finishes on the configuration it
/// started with.
struct Live(std::sync::Mutex<Arc<Router>>);

impl Live {
    fn get(&self) -> Arc<Router> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, router: Arc<Router>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = router;
    }
}

/// Accepts until `stop` turns true, then stops accepting, lets requests in
/// flight finish within `drain`, and returns. A configuration from
/// `reconfigure` applies to requests from then on; with a new listen
/// socket, the router accepts on it, takes what already waits on the old
/// one, and closes the old one (its connections carry on).
/// `drain` is the deadline for requests in flight once stopping; it may be
/// brought forward while draining (a second signal, the shutdown budget).
async fn serve(
    mut listener: tokio::net::TcpListener,
    router: Arc<Router>,
    mut stop: watch::Receiver<bool>,
    mut drain: watch::Receiver<tokio::time::Instant>,
    mut reconfigure: mpsc::Receiver<NewConfig>,
) {
    let limit = connection_limit(&router.spec);
    router.stats.max_connections.store(limit as u64, Ordering::Relaxed);
    request_id::init();
    let mut gate = Gate::new(limit);
    let live = Arc::new(Live(std::sync::Mutex::new(router)));
    let mut http = hyper::server::conn::http1::Builder::new();
    // header_timeout is kept by each connection's `Clocks` instead.
    http.header_read_timeout(None).max_buf_size(MAX_HEADER_BYTES).keep_alive(true);
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff: Option<Duration> = None;
    let mut paused = false;
    let mut resume = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept(), if !paused => match accepted {
                Ok((stream, peer)) => {
                    if let Some(d) = backoff.take() {
                        tracing::info!("router: accepting connections again (backed off up to {d:?})");
                    }
                    admit(&mut gate, &mut conns, &http, &live, &stop, stream, peer);
                }
                Err(e) if out_of_resources(&e) => {
                    // Out of fds or memory: the next accept would fail the
                    // same way at once; wait (10 ms doubling up to 1 s) for
                    // connections to end, and say so once per episode.
                    let delay = backoff.map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
                    if backoff.is_none() {
                        tracing::warn!("router: cannot accept connections: {e}; backing off until it can");
                    }
                    backoff = Some(delay);
                    resume.as_mut().reset(tokio::time::Instant::now() + delay);
                    paused = true;
                }
                // A connection that went away while queued (ECONNABORTED)
                // and the like: only that one is lost.
                Err(e) => tracing::debug!("router: accept failed: {e}"),
            },
            _ = &mut resume, if paused => paused = false,
            Some(new) = reconfigure.recv() => {
                let next = Arc::new(live.get().with_spec(new.spec));
                let limit = connection_limit(&next.spec);
                next.stats.max_connections.store(limit as u64, Ordering::Relaxed);
                gate.resize(limit);
                live.set(next);
                if let Some(std_listener) = new.listener {
                    match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => {
                            let old = std::mem::replace(&mut listener, l);
                            // What already waits on the old socket is
                            // served, not reset by its close.
                            let mut cx = Context::from_waker(std::task::Waker::noop());
                            while let Poll::Ready(Ok((stream, peer))) = old.poll_accept(&mut cx) {
                                admit(&mut gate, &mut conns, &http, &live, &stop, stream, peer);
                            }
                            let (from, to) = (old.local_addr().ok(), listener.local_addr().ok());
                            drop(old);
                            tracing::info!("router: now listening on {to:?} (closed {from:?})");
                        }
                        Err(e) => tracing::error!("router: cannot use its new listen socket: {e}; keeping the old one"),
                    }
                }
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

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// An accept error that says the process or the system is out of
/// something (fds, buffers, memory), not that one connection failed.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// File descriptors the router leaves to the supervisor out of
/// RLIMIT_NOFILE: a quarter, and at least 256 (its probes, log pipes,
/// control connections, the spawns of restarts).
pub fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 4).max(256)
}

/// The connection limit an fd limit allows: what is left after the
/// reserve, at two fds per connection (the client's and one upstream's).
pub fn derived_limit(nofile: u64) -> usize {
    let left = nofile.saturating_sub(fd_reserve(nofile)) / 2;
    usize::try_from(left.max(1)).unwrap_or(usize::MAX)
}

/// The router's connection limit: `max_connections`, or what the fd limit
/// (RLIMIT_NOFILE's soft limit, read now) allows. A configured value above
/// that is used, with a warning.
fn connection_limit(spec: &RouterSpec) -> usize {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(soft, _)| soft);
    let allowed = match nofile {
        Ok(n) => derived_limit(n),
        Err(e) => {
            tracing::warn!("router on {}: cannot read RLIMIT_NOFILE ({e}); assuming 1024", spec.listen);
            derived_limit(1024)
        }
    };
    match spec.max_connections {
        None => allowed,
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > allowed {
                let nofile = nofile.unwrap_or(1024);
                tracing::warn!(
                    "router on {}: max_connections = {n} is more than the fd limit allows ({allowed}: RLIMIT_NOFILE {nofile}, less {} kept for the supervisor, at 2 per connection); a flood of connections may leave the supervisor without fds",
                    spec.listen,
                    fd_reserve(nofile)
                );
            }
            n
        }
    }
}

/// The cap on live client connections: a permit per connection, held by
/// its task.
struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
    /// Permits still to take out of circulation after the limit was
    /// lowered while they were held.
    owed: usize,
}

impl Gate {
    fn new(limit: usize) -> Gate {
        Gate { permits: Arc::new(tokio::sync::Semaphore::new(limit)), limit, owed: 0 }
    }

    fn resize(&mut self, limit: usize) {
        if limit > self.limit {
            let more = limit - self.limit;
            let repaid = more.min(self.owed);
            self.owed -= repaid;
            self.permits.add_permits(more - repaid);
        } else {
            self.owed += self.limit - limit;
        }
        self.limit = limit;
    }

    fn try_take(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.owed > 0 {
            self.owed -= self.permits.forget_permits(self.owed);
        }
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// What a connection over the limit gets before it is closed.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 2\r\nconnection: close\r\ncontent-length: 32\r\n\r\n{\"error\":\"too many connections\"}";

/// Serves a new connection if the limit allows; otherwise answers it 503
/// at once, in one non-blocking write, and closes it: it is never held
/// (its fd is what the limit protects).
fn admit(
    gate: &mut Gate,
    conns: &mut tokio::task::JoinSet<()>,
    http: &hyper::server::conn::http1::Builder,
    live: &Arc<Live>,
    stop: &watch::Receiver<bool>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    match gate.try_take() {
        Some(permit) => spawn_connection(conns, http, live, stop, stream, peer, permit),
        None => {
            live.get().stats.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("router: connection from {peer} over the limit of {}; answered 503", gate.limit);
            let _ = stream.try_write(OVER_LIMIT);
            // Whatever the client sent already is read first, so that the
            // close sends a FIN behind the answer, not a reset that could
            // discard it.
            let mut sink = [0u8; 4096];
            while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
            if let Ok(std) = stream.into_std() {
                let _ = std.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

/// Serves one accepted connection in a task of `conns`, under the router
/// configured now (its header_timeout; each request then takes the
/// configuration current at its arrival).
fn spawn_connection(
    conns: &mut tokio::task::JoinSet<()>,
    http: &hyper::server::conn::http1::Builder,
    live: &Arc<Live>,
    stop: &watch::Receiver<bool>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let router = live.get();
    let client = Arc::new(Client {
        _open: Open::new(&router.stats),
        live: live.clone(),
        router: router.clone(),
        upstreams: Arc::new(Upstreams::default()),
        clocks: Clocks::new(router.spec.header_timeout),
        peer,
        peer_ip: routes::peer_value(peer.ip()),
        permit: Arc::new(permit),
    });
    // The connection's task watches its clocks and the stop.
    let own = client.clone();
    let svc = hyper::service::service_fn(move |req| handle(client.clone(), req));
    let conn = http.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    let mut stopping = stop.clone();
    conns.spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let mut stop = std::pin::pin!(stopping.changed());
        let (mut stopped, mut closing, mut stop_registered) = (false, false, false);
        let mut grace = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut timer = clocks::Timer::new();
        let result = std::future::poll_fn(|cx| loop {
            // The stop future is polled once, to register this
            // task's waker (which does not change); after that
            // the flag is enough, without the watch's lock.
            let stop_seen = if stop_registered {
                own.router.is_stopping()
            } else {
                stop_registered = true;
                stop.as_mut().poll(cx).is_ready()
            };
            if !stopped && stop_seen {
                // Answers now say Connection: close; an idle
                // connection gets KEEPALIVE_GRACE for a request
                // that may already be on its way.
                stopped = true;
                grace.as_mut().reset(tokio::time::Instant::now() + KEEPALIVE_GRACE);
            }
            if stopped && !closing && grace.as_mut().poll(cx).is_ready() {
                // Finish the request in flight, then close.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(done) = conn.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            match timer.poll(&own.clocks, cx) {
                Poll::Pending => return Poll::Pending,
                // The exchange fails when next polled.
                Poll::Ready(Expiry::Exchange) => {}
                Poll::Ready(Expiry::HeaderTimeout) => {
                    tracing::debug!(
                        "router: connection from {peer}: no request head within header_timeout; closing it"
                    );
                    return Poll::Ready(Ok(()));
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::debug!("router: connection from {peer}: {e}");
        }
    });
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Counts a client connection open in its router's stats while it lives.
struct Open(Arc<RouterStats>);

impl Open {
    fn new(stats: &Arc<RouterStats>) -> Open {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Open(stats.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the requests of one client connection share.
struct Client {
    _open: Open,
    /// The router at the accept: its stop signal, shared by every
    /// configuration.
    router: Arc<Router>,
    /// The configuration requests take.
    live: Arc<Live>,
    /// The connection's place under `max_connections`, held by its task
    /// and by a tunnel that outlives it.
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    upstreams: Arc<Upstreams>,
    peer: SocketAddr,
    /// `peer`'s address for X-Forwarded-For, made once.
    peer_ip: HeaderValue,
    clocks: Clocks,
}

/// A response body that tells the connection's clocks when it ends, and
/// writes the request's access log line then, with the bytes it passed,
/// and ends the request's count in its unit's traffic.
struct Answer {
    body: Body,
    client: Arc<Client>,
    /// Boxed: the response is moved a few times, and most of the time
    /// (no access log, a skipped path) there is none.
    log: Option<Box<Access>>,
    _unit: Option<TrafficGuard>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.client.clocks.response_done();
        if let Some(access) = self.log.take() {
            self.client.router.log(*access);
        }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&polled, &mut self.log) {
            log.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn handle(c: Arc<Client>, req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    c.clocks.request_started();
    let (res, log, unit) = {
        let r = &c.live.get();
        r.stats.requests.fetch_add(1, Ordering::Relaxed);
        r.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&r.stats.in_flight);
        let id = routes::sane_request_id(req.headers()).cloned().unwrap_or_else(request_id::fresh);
        let logged = (r.spec.access_log && !r.spec.access_log_skip.iter().any(|p| p == req.uri().path()))
            .then(|| (Instant::now(), req.method().clone(), req.uri().path().to_string()));
        let mut unit = None;
        let started = Instant::now();
        let (mut res, reached) = route(&c, r, req, &id, &mut unit).await;
        // Counted whether or not the access log is on: what /metrics shows.
        let prefix = reached.and_then(|(i, _)| r.spec.routes.get(i)).map_or("", |route| route.prefix.as_str());
        r.stats.route(prefix).observe(res.status().as_u16(), started.elapsed());
        if r.is_stopping() && res.status() != StatusCode::SWITCHING_PROTOCOLS {
            res.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The router's id, also over one the upstream sent: the client
        // gets the id its request has in the access log.
        res.headers_mut().insert(routes::X_REQUEST_ID, id.clone());
        let log = logged.map(|(start, method, path)| {
            Box::new(Access {
                spec: r.spec.clone(),
                peer: c.peer,
                method,
                path,
                route: reached,
                status: res.status().as_u16(),
                head: start.elapsed(),
                bytes: 0,
                request_id: id,
            })
        });
        (res, log, unit)
    };
    // The body tells the connection's clocks when it ends, and logs.
    Ok(res.map(|body| Answer { body, client: c, log, _unit: unit }))
}

/// A refusal of the client's request, after which the connection closes
/// (what follows on it cannot be trusted to be framed as we think).
fn refused(status: StatusCode, why: &str) -> Response<Body> {
    let mut res = json(status, serde_json::json!({"error": why}));
    res.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Answers a request; with the route it took, if any, and whether that
/// route's upstream was used (forwarded to, or its unit's 503). `unit`: set
/// to the request's count in its unit's traffic when it goes to a unit
/// that is up.
async fn route(
    c: &Client,
    r: &Router,
    mut req: Request<Incoming>,
    id: &HeaderValue,
    unit: &mut Option<TrafficGuard>,
) -> (Response<Body>, Option<(usize, bool)>) {
    if req.method().as_str().len() > routes::MAX_METHOD_LEN {
        return (refused(StatusCode::NOT_IMPLEMENTED, "unknown method"), None);
    }
    if let Err((status, why)) = routes::check_framing(req.headers()) {
        return (refused(status, why), None);
    }
    if let Err(why) = routes::check_host(req.headers()) {
        return (refused(StatusCode::BAD_REQUEST, why), None);
    }
    let Some((index, route)) = routes::pick_indexed(&r.spec.routes, req.uri().path()) else {
        return (json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no route for this path"})), None);
    };
    if let Some(name) = &route.unit {
        let entered = r.enter_unit(name);
        if let Some((state, _)) = entered.as_ref().filter(|(s, _)| !s.is_up()) {
            let (unit, state) = (name, state.as_str());
            r.stats.not_ready.fetch_add(1, Ordering::Relaxed);
            let mut res = json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "service not ready", "unit": unit, "state": state}),
            );
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            return (res, Some((index, true)));
        }
        *unit = entered.and_then(|(_, guard)| guard);
    }
    // The upstream gets the origin form (path and query); most requests
    // already have it and keep their URI as it is.
    let uri = req.uri();
    if route.strip_prefix || uri.scheme().is_some() || uri.authority().is_some() {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        match routes::upstream_path(route, pq).parse::<Uri>() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => {
                let res = json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "bad request target"}));
                return (res, Some((index, false)));
            }
        }
    }
    let upgrade = routes::wants_upgrade(req.headers());
    routes::drop_underscored(req.headers_mut());
    routes::strip_hop_by_hop(req.headers_mut(), upgrade);
    routes::set_forwarded(req.headers_mut(), &c.peer_ip, r.spec.trust_forwarded);
    // After the hop-by-hop headers went: a client cannot name it away.
    req.headers_mut().insert(routes::X_REQUEST_ID, id.clone());
    if !req.headers().contains_key(hyper::header::HOST) {
        // HTTP/1.0 without Host: name the upstream, as HTTP/1.1 requires.
        if let Ok(host) = HeaderValue::from_str(&route.upstream) {
            req.headers_mut().insert(hyper::header::HOST, host);
        }
    }
    // Boxed where rare (an upgrade, a new connection): the future of every
    // request is kept per client connection, and its size is theirs.
    let res = if upgrade { Box::pin(tunnel(c, r, route, req)).await } else { forward(c, r, route, req).await };
    (res, Some((index, true)))
}

fn bad_gateway(r: &Router, route: &Route, detail: upstream::UpstreamError) -> Response<Body> {
    r.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
    r.stats.route(&route.prefix).upstream_errors.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("router: upstream {} failed: {detail}", route.upstream);
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"error": "bad gateway", "upstream": route.upstream, "detail": detail.to_string()}),
    )
}

/// `upstream::exchange` within upstream_timeout, which the connection's
/// task watches (`clocks`); its failure in a few words for the 502.
async fn exchange_within(
    c: &Client,
    r: &Router,
    ups: &Arc<Upstreams>,
    route: &Route,
    req: Request<Incoming>,
) -> Result<Exchanged, ExchangeError> {
    c.clocks.exchange_started(r.spec.upstream_timeout);
    let mut exchange = std::pin::pin!(upstream::exchange(ups, &route.upstream, req, r.spec.connect_timeout));
    let outcome = std::future::poll_fn(|cx| {
        if c.clocks.exchange_expired() {
            Poll::Ready(None)
        } else {
            exchange.as_mut().poll(cx).map(Some)
        }
    })
    .await;
    c.clocks.exchange_done();
    outcome.unwrap_or_else(|| {
        Err(ExchangeError::Upstream(upstream::UpstreamError::NoResponseWithin(r.spec.upstream_timeout)))
    })
}

/// An upstream's answer as the client gets it.
fn passed_on(mut response: Response<UpstreamBody>) -> Response<Body> {
    routes::strip_hop_by_hop(response.headers_mut(), false);
    response.map(Either::Left)
}

async fn forward(c: &Client, r: &Router, route: &Route, req: Request<Incoming>) -> Response<Body> {
    match exchange_within(c, r, &c.upstreams, route, req).await {
        Ok(Exchanged { response, upgraded: None }) => passed_on(response),
        Ok(Exchanged { upgraded: Some(_), .. }) => bad_gateway(r, route, upstream::UpstreamError::UnaskedUpgrade),
        Err(e) => failed(c, r, route, e),
    }
}

/// The answer to an exchange that failed: a 502 for the upstream's
/// failure, a 400 for the client's (not counted as an upstream error).
fn failed(c: &Client, r: &Router, route: &Route, e: ExchangeError) -> Response<Body> {
    match e {
        ExchangeError::Upstream(detail) => bad_gateway(r, route, detail),
        ExchangeError::Client(why) => {
            tracing::debug!("router: connection from {}: {why}", c.peer);
            refused(StatusCode::BAD_REQUEST, "bad request body")
        }
    }
}

/// Passes an Upgrade request on a connection of its own; on 101 both sides
/// are joined byte for byte until either closes.
async fn tunnel(c: &Client, r: &Router, route: &Route, mut req: Request<Incoming>) -> Response<Body> {
    let client_side = hyper::upgrade::on(&mut req);
    // Never a kept connection: on 101 it becomes the tunnel.
    let own = Arc::new(Upstreams::default());
    match exchange_within(c, r, &own, route, req).await {
        Ok(Exchanged { response, upgraded: Some(conn) }) => {
            let permit = c.permit.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let client = match client_side.await {
                    Ok(c) => c,
                    Err(e) => return tracing::debug!("router: upgrade failed on the client's side: {e}"),
                };
                let mut client = TokioIo::new(client);
                let (early, mut upstream) = conn.into_parts();
                // What the upstream sent right behind its 101 came with it.
                if !early.is_empty() && client.write_all(&early).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
            response.map(Either::Left)
        }
        Ok(Exchanged { response, upgraded: None }) => passed_on(response),
        Err(e) => failed(c, r, route, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_limit_leaves_the_supervisor_its_reserve() {
        // (RLIMIT_NOFILE, reserve, connections)
        for (nofile, reserve, limit) in
            [(1024, 256, 384), (4096, 1024, 1536), (65536, 16384, 24576), (1_048_576, 262_144, 393_216), (256, 256, 1)]
        {
            assert_eq!(fd_reserve(nofile), reserve, "{nofile}");
            assert_eq!(derived_limit(nofile), limit, "{nofile}");
        }
    }

    #[test]
    fn the_gate_follows_its_limit_down_and_up() {
        let mut gate = Gate::new(2);
        let (a, b) = (gate.try_take().unwrap(), gate.try_take().unwrap());
        assert!(gate.try_take().is_none());
        gate.resize(1);
        drop(a);
        assert!(gate.try_take().is_none(), "a permit returned while one is owed is taken out");
        drop(b);
        let c = gate.try_take().unwrap();
        assert!(gate.try_take().is_none());
        gate.resize(3);
        let (d, e) = (gate.try_take().unwrap(), gate.try_take().unwrap());
        assert!(gate.try_take().is_none());
        drop((c, d, e));
    }
}
