//! The router's upstream side: HTTP/1.1 to plain-HTTP upstreams over
//! connections kept per client connection.
//!
//! A client connection's requests come one at a time, so each exchange
//! owns its upstream connection outright: the request head is written, the
//! body streamed while the response head is awaited, and the response body
//! read by [`UpstreamBody`] as the client's connection asks for it, all in
//! the client connection's task. When a response ends cleanly on a
//! connection that may be reused, the connection goes back to the client
//! connection's [`Upstreams`] for its next request, and closes with it.
//!
//! hyper's client connection was used here before; it is made for many
//! callers sharing a connection (a request channel to a connection task),
//! which a proxy exchange does not need and paid for in every request:
//! measured at 32 keep-alive connections, CPU per request went from
//! 14.2 µs to 12.4 µs without it (nginx: 12.1 µs), and at 256 connections
//! the router's RSS from 22.7 to 13.8 MiB (docs/router.md). Response heads,
//! body lengths and chunked bodies are read by `framing` (httparse, the
//! parser inside hyper, for heads and trailers).

use super::framing::{self, body_length, parse_head, Head, Remaining};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use hyper::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// What one read asks the kernel for at first; doubled while reads fill
/// it (a long download), up to MAX_READ_SIZE.
const READ_SIZE: usize = 8 * 1024;
const MAX_READ_SIZE: usize = 64 * 1024;

/// An open connection to an upstream and what was read from it but not
/// yet used.
pub struct UpConn {
    io: TcpStream,
    buf: BytesMut,
    /// What the next read asks for.
    read_size: usize,
}

/// The upstream connections of one client connection, kept between its
/// requests: at most one per upstream address.
#[derive(Default)]
pub struct Upstreams {
    slots: Mutex<Vec<(String, Option<UpConn>)>>,
}

impl Upstreams {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, Option<UpConn>)>> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of `addr`, and the connection kept in it if any.
    fn take(&self, addr: &str) -> (usize, Option<UpConn>) {
        let mut slots = self.lock();
        match slots.iter().position(|(a, _)| a == addr) {
            Some(i) => (i, slots[i].1.take()),
            None => {
                slots.push((addr.to_string(), None));
                (slots.len() - 1, None)
            }
        }
    }

    fn put(&self, slot: usize, conn: UpConn) {
        if let Some(s) = self.lock().get_mut(slot) {
            s.1 = Some(conn);
        }
    }
}

pub use framing::FramingError;

/// Why the upstream gave no usable response (the client's 502), in a few
/// words for the 502 body and the debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("connect timeout")]
    ConnectTimeout,
    #[error("connection refused")]
    Refused,
    #[error("connection reset")]
    Reset,
    #[error("connection closed before a response")]
    ClosedBeforeResponse,
    #[error("connection closed in the response head")]
    ClosedInHead,
    #[error("no response within {}", humantime::format_duration(*.0))]
    NoResponseWithin(Duration),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedUpgrade,
    /// Any other socket error, as the OS words it.
    #[error("{0}")]
    Io(String),
}

/// Why an exchange gave no response.
#[derive(Debug)]
pub enum ExchangeError {
    /// The upstream failed (the client's 502).
    Upstream(UpstreamError),
    /// The client's request body could not be read (bad chunked framing,
    /// the client went away): the client's fault, a 400, not the upstream's.
    Client(String),
}

impl<E: Into<UpstreamError>> From<E> for ExchangeError {
    fn from(why: E) -> ExchangeError {
        ExchangeError::Upstream(why.into())
    }
}

/// Why a request could not be sent.
enum SendError {
    /// Reading the client's body failed.
    Client(hyper::Error),
    /// Writing to the upstream failed.
    Io(std::io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Client(e) => write!(f, "client body: {e}"),
            SendError::Io(e) => e.fmt(f),
        }
    }
}

/// Connects to `addr` within `timeout`, without Nagle.
pub async fn connect(addr: &str, timeout: Duration) -> Result<UpConn, UpstreamError> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(describe_io(&e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout),
    };
    let _ = io.set_nodelay(true);
    Ok(UpConn { io, buf: BytesMut::with_capacity(READ_SIZE), read_size: READ_SIZE })
}

pub fn describe_io(e: &std::io::Error) -> UpstreamError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused,
        std::io::ErrorKind::ConnectionReset => UpstreamError::Reset,
        std::io::ErrorKind::TimedOut => UpstreamError::ConnectTimeout,
        std::io::ErrorKind::UnexpectedEof => UpstreamError::ClosedBeforeResponse,
        _ => UpstreamError::Io(e.to_string()),
    }
}

/// How a request body goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    None,
    /// As it came, under the client's Content-Length.
    Length,
    Chunked,
}

/// The request head in HTTP/1.1 wire form: method, origin-form target,
/// the (already rewritten) headers, and chunked framing when the body has
/// no length.
fn encode_head(req: &hyper::http::request::Parts, framing: RequestFraming) -> Bytes {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if req.method == Method::OPTIONS && req.uri.path() == "*" { "*" } else { target };
    // The exact size: a Vec that is full becomes Bytes without another
    // allocation.
    let fields: usize = req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let te = if framing == RequestFraming::Chunked { CHUNKED_LINE.len() } else { 0 };
    let size = req.method.as_str().len() + 1 + target.len() + 11 + fields + te + 2;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(CHUNKED_LINE);
    }
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), size);
    Bytes::from(out)
}

const CHUNKED_LINE: &[u8] = b"transfer-encoding: chunked\r\n";

/// Reads more of `conn` into its buffer; Ok(0) at the end of the stream.
fn poll_fill(conn: &mut UpConn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if conn.buf.capacity() - conn.buf.len() < conn.read_size / 2 {
        conn.buf.reserve(conn.read_size);
    }
    let room = conn.buf.capacity() - conn.buf.len();
    // tokio's read_buf fills the spare capacity; it reads nothing while
    // pending, so a new one each time is the same as keeping one.
    let n = ready!(std::pin::pin!(conn.io.read_buf(&mut conn.buf)).poll(cx))?;
    if n == room {
        conn.read_size = (conn.read_size * 2).min(MAX_READ_SIZE);
    }
    Poll::Ready(Ok(n))
}

/// True if a kept connection was closed by the upstream (or sent
/// something unasked) while idle. Costs no system call unless the socket
/// has become readable since its last response: the runtime has then seen
/// the upstream's FIN or data.
fn went_stale(conn: &mut UpConn) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if conn.io.poll_read_ready(&mut cx).is_pending() {
        return false;
    }
    let mut probe = [0u8; 1];
    !matches!(conn.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Bytes to write: the request head, or one chunk of the body with its
/// framing.
#[derive(Default)]
struct Pending {
    parts: [Bytes; 3],
    /// The first part not yet written in full.
    at: usize,
}

impl Pending {
    fn of(parts: [Bytes; 3]) -> Pending {
        Pending { parts, at: 0 }
    }

    fn is_empty(&self) -> bool {
        self.parts[self.at.min(3)..].iter().all(Bytes::is_empty)
    }

    fn slices(&self) -> ([IoSlice<'_>; 3], usize) {
        let mut slices = [IoSlice::new(&[]); 3];
        let mut count = 0;
        for part in self.parts.iter().skip(self.at).filter(|p| !p.is_empty()) {
            slices[count] = IoSlice::new(part);
            count += 1;
        }
        (slices, count)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.at < 3 {
            let part = &mut self.parts[self.at];
            let k = n.min(part.len());
            part.advance(k);
            n -= k;
            if part.is_empty() {
                self.at += 1;
            }
        }
    }
}

/// The request on its way out: what is still to write, and the client's
/// body while it has more.
struct Outgoing {
    pending: Pending,
    body: Option<Incoming>,
    framing: RequestFraming,
    /// Bytes of this request accepted by the kernel so far.
    sent: u64,
}

impl Outgoing {
    /// Writes what it can; Ready(Ok) once the whole request is out.
    fn poll_send(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        loop {
            while !self.pending.is_empty() {
                let (slices, count) = self.pending.slices();
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])).map_err(SendError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Io(std::io::ErrorKind::WriteZero.into())));
                }
                self.sent += n as u64;
                self.pending.advance(n);
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.framing == RequestFraming::Chunked => {
                        let size = Bytes::from(format!("{:x}\r\n", data.len()));
                        self.pending = Pending::of([size, data, Bytes::from_static(b"\r\n")]);
                    }
                    Ok(data) => self.pending = Pending::of([data, Bytes::new(), Bytes::new()]),
                    Err(frame) => {
                        if let (Ok(trailers), RequestFraming::Chunked) = (frame.into_trailers(), self.framing) {
                            self.pending =
                                Pending::of([Bytes::from(encode_trailers(&trailers)), Bytes::new(), Bytes::new()]);
                            self.framing = RequestFraming::None;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(SendError::Client(e))),
                None => {
                    self.body = None;
                    if self.framing == RequestFraming::Chunked {
                        self.pending = Pending::of([Bytes::from_static(b"0\r\n\r\n"), Bytes::new(), Bytes::new()]);
                    }
                }
            }
        }
    }
}

/// The last chunk with a trailer section.
fn encode_trailers(trailers: &HeaderMap) -> Vec<u8> {
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How much of the request had gone out when the response head came.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    All,
    /// The upstream answered early; the rest of the body may follow.
    Partly,
    /// A write failed (the upstream answered and stopped reading).
    Failed,
}

/// How an exchange on one connection ended before a response head.
struct Broken {
    why: BrokenWhy,
    /// Nothing of the request reached the kernel: it can go again as is.
    unsent: bool,
    /// A response byte arrived: the upstream answered, however badly.
    answered: bool,
}

/// Whose fault a broken exchange was.
enum BrokenWhy {
    Upstream(UpstreamError),
    /// The client's body failed, not the upstream.
    Client(String),
}

impl From<UpstreamError> for BrokenWhy {
    fn from(e: UpstreamError) -> BrokenWhy {
        BrokenWhy::Upstream(e)
    }
}

impl From<FramingError> for BrokenWhy {
    fn from(e: FramingError) -> BrokenWhy {
        BrokenWhy::Upstream(e.into())
    }
}

impl std::fmt::Display for BrokenWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokenWhy::Upstream(e) => e.fmt(f),
            BrokenWhy::Client(why) => f.write_str(why),
        }
    }
}

/// Sends the request and reads the response head, skipping interim (1xx)
/// responses other than 101. Returns the head and how much of the request
/// went out before it.
async fn round_trip(conn: &mut UpConn, out: &mut Outgoing) -> Result<(Head, Sent), Broken> {
    let (mut sending, mut cut) = (true, false);
    std::future::poll_fn(|cx| loop {
        if sending {
            match out.poll_send(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => sending = false,
                Poll::Ready(Err(SendError::Client(e))) => {
                    let why = BrokenWhy::Client(format!("bad request body ({e})"));
                    return Poll::Ready(Err(Broken { why, unsent: false, answered: false }));
                }
                Poll::Ready(Err(SendError::Io(e))) => {
                    // The upstream may have answered and closed without
                    // reading the body: take what it said, if anything.
                    if conn.buf.is_empty() && !matches!(poll_fill(conn, cx), Poll::Ready(Ok(n)) if n > 0) {
                        let unsent = out.sent == 0;
                        return Poll::Ready(Err(Broken { why: describe_io(&e).into(), unsent, answered: false }));
                    }
                    (sending, cut) = (false, true);
                }
                Poll::Pending => {}
            }
        }
        match parse_head(&mut conn.buf) {
            Ok(Some(head)) => {
                let s = head.status.as_u16();
                if (100..200).contains(&s) && s != 101 {
                    continue;
                }
                let sent = match (cut, sending) {
                    (true, _) => Sent::Failed,
                    (false, true) => Sent::Partly,
                    (false, false) => Sent::All,
                };
                return Poll::Ready(Ok((head, sent)));
            }
            Ok(None) => {}
            Err(why) => return Poll::Ready(Err(Broken { why: why.into(), unsent: false, answered: true })),
        }
        let answered = !conn.buf.is_empty();
        match ready!(poll_fill(conn, cx)) {
            Ok(0) => {
                let why = if answered { UpstreamError::ClosedInHead } else { UpstreamError::ClosedBeforeResponse };
                return Poll::Ready(Err(Broken { why: why.into(), unsent: out.sent == 0, answered }));
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Broken { why: describe_io(&e).into(), unsent: out.sent == 0, answered })),
        }
    })
    .await
}

/// A GET, HEAD, OPTIONS, TRACE, PUT or DELETE (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// What [`exchange`] got: the response, and for a 101 the connection,
/// now the upstream's side of a tunnel.
pub struct Exchanged {
    pub response: Response<UpstreamBody>,
    pub upgraded: Option<UpConn>,
}

/// Sends `req` to `addr` on the client connection's kept connection to it,
/// or a new one, and returns the response once its head is in; its body
/// follows as the client reads it. A kept connection the upstream closed
/// while idle is replaced first; one closed under a request is replaced
/// and the request sent again only if none of it was sent, or if sending
/// it twice is harmless (an idempotent method without a body: what nginx
/// does). Anything else is the caller's 502.
pub async fn exchange(
    ups: &Arc<Upstreams>,
    addr: &str,
    req: Request<Incoming>,
    connect_timeout: Duration,
) -> Result<Exchanged, ExchangeError> {
    let framing = if req.body().is_end_stream() {
        RequestFraming::None
    } else if req.headers().contains_key(CONTENT_LENGTH) {
        RequestFraming::Length
    } else {
        RequestFraming::Chunked
    };
    let (parts, body) = req.into_parts();
    let replayable = framing == RequestFraming::None && idempotent(&parts.method);
    let body = (framing != RequestFraming::None).then_some(body);
    let first = |parts| Pending::of([encode_head(parts, framing), Bytes::new(), Bytes::new()]);
    let mut out = Outgoing { pending: first(&parts), body, framing, sent: 0 };
    let (slot, kept) = ups.take(addr);
    let mut conn = kept.and_then(|mut c| (!went_stale(&mut c)).then_some(c));
    let (conn, mut head, sent) = loop {
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => connect(addr, connect_timeout).await?,
        };
        match round_trip(&mut c, &mut out).await {
            Ok((h, sent)) => break (c, h, sent),
            Err(Broken { why: BrokenWhy::Client(why), .. }) => return Err(ExchangeError::Client(why)),
            Err(b) if reused && !b.answered && (b.unsent || replayable) => {
                tracing::debug!(
                    "router: {addr} closed a kept connection under a request ({}); sending it again on a new one",
                    b.why
                );
                out.pending = first(&parts);
                out.sent = 0;
            }
            Err(Broken { why: BrokenWhy::Upstream(why), .. }) => return Err(ExchangeError::Upstream(why)),
        }
    };
    let remaining = body_length(&parts.method, &head)?;
    if let Remaining::Chunked(_) = remaining {
        // Chunked wins over a Content-Length beside it (RFC 9112 §6.3); the
        // client gets its own framing, never the upstream's length.
        head.headers.remove(CONTENT_LENGTH);
        framing::check_chunked_start(&conn.buf)?;
    }
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let mut response = Response::new(UpstreamBody::empty());
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        return Ok(Exchanged { response, upgraded: Some(conn) });
    }
    // An upstream that answered before the whole body was in and did not
    // say it closes may still read the rest (a streaming upstream, full
    // duplex): the body keeps going out while the response comes in
    // (RFC 9112 §9.3). One that said `Connection: close` gets no more.
    let rest = (sent == Sent::Partly && head.keep_alive).then_some(out);
    // Reused only if nothing of the exchange is left over on it.
    let reuse = (head.keep_alive && sent != Sent::Failed && !matches!(remaining, Remaining::UntilClose))
        .then(|| (ups.clone(), slot));
    let mut body = UpstreamBody { conn: None, remaining, reuse, rest };
    if body.remaining == Remaining::Length(0) {
        body.finish(conn);
    } else {
        body.conn = Some(conn);
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(Exchanged { response, upgraded: None })
}

impl UpConn {
    /// Bytes read past the response head (a tunnel's first bytes), and the
    /// socket.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        (self.buf.freeze(), self.io)
    }
}

/// A response body streamed from the upstream connection as the client's
/// connection polls for it; nothing is buffered beyond one read.
pub struct UpstreamBody {
    conn: Option<UpConn>,
    remaining: Remaining,
    /// Where the connection goes when the body ended cleanly.
    reuse: Option<(Arc<Upstreams>, usize)>,
    /// The rest of the request, still going out (the upstream answered
    /// before it had all of it).
    rest: Option<Outgoing>,
}

impl UpstreamBody {
    fn empty() -> UpstreamBody {
        UpstreamBody { conn: None, remaining: Remaining::Length(0), reuse: None, rest: None }
    }

    /// The body is complete: keep the connection for the next request if
    /// it may be, the request went out whole and nothing beyond the
    /// response came.
    fn finish(&mut self, conn: UpConn) {
        self.remaining = Remaining::Length(0);
        if let Some((ups, slot)) = self.reuse.take() {
            if conn.buf.is_empty() && self.rest.is_none() {
                ups.put(slot, conn);
            }
        }
        self.rest = None;
    }

    /// Sends more of the rest of the request, if any.
    fn poll_rest(&mut self, cx: &mut Context<'_>) {
        let (Some(rest), Some(conn)) = (self.rest.as_mut(), self.conn.as_mut()) else { return };
        match rest.poll_send(&mut conn.io, cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.rest = None,
            Poll::Ready(Err(e)) => {
                tracing::debug!("router: the rest of a request body was not sent: {e}");
                (self.rest, self.reuse) = (None, None);
            }
        }
    }

    /// Makes one step with what is buffered: a frame, the end, or None
    /// when more must be read; gives the connection back once the body is
    /// complete.
    fn step(&mut self) -> Result<Option<Option<Frame<Bytes>>>, std::io::Error> {
        let Some(conn) = self.conn.as_mut() else { return Ok(Some(None)) };
        let out = framing::decode(&mut self.remaining, &mut conn.buf)?;
        if self.remaining == Remaining::Length(0) {
            if let Some(c) = self.conn.take() {
                self.finish(c);
            }
        }
        Ok(out)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            self.poll_rest(cx);
            match self.step() {
                Ok(Some(frame)) => return Poll::Ready(frame.map(Ok)),
                Ok(None) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let until_close = self.remaining == Remaining::UntilClose;
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match ready!(poll_fill(conn, cx)) {
                Ok(0) if until_close => {
                    self.conn = None;
                    self.remaining = Remaining::Length(0);
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed in the body");
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Remaining::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
