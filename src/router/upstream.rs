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
//! 14.9 µs to ~13 µs without it, and at 256 connections its per-connection
//! channel blocks were 4.5 MB of the router's RSS (docs/router.md).
//! Response heads and trailers are parsed by httparse, hyper's own parser.

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// Largest response head (status line and headers), or trailer section.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// What one read asks the kernel for at first; doubled while reads fill
/// it (a long download), up to MAX_READ_SIZE.
const READ_SIZE: usize = 8 * 1024;
const MAX_READ_SIZE: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

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

/// Why an exchange failed, in a few words for the 502 body.
pub type Failure = String;

/// Connects to `addr` within `timeout`, without Nagle.
pub async fn connect(addr: &str, timeout: Duration) -> Result<UpConn, Failure> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(describe_io(&e)),
        Err(_) => return Err("connect timeout".into()),
    };
    let _ = io.set_nodelay(true);
    Ok(UpConn { io, buf: BytesMut::with_capacity(READ_SIZE), read_size: READ_SIZE })
}

pub fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "connect timeout".into(),
        std::io::ErrorKind::UnexpectedEof => "connection closed before a response".into(),
        _ => e.to_string(),
    }
}

/// How a request body goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    /// As it came, under the client's Content-Length.
    Length,
    Chunked,
}

/// The request head in HTTP/1.1 wire form: method, origin-form target,
/// the (already rewritten) headers, and chunked framing when the body has
/// no length.
fn encode_head(req: &hyper::http::request::Parts, framing: Framing) -> Bytes {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if req.method == Method::OPTIONS && req.uri.path() == "*" { "*" } else { target };
    // The exact size: a Vec that is full becomes Bytes without another
    // allocation.
    let fields: usize = req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let te = if framing == Framing::Chunked { CHUNKED_LINE.len() } else { 0 };
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
    if framing == Framing::Chunked {
        out.extend_from_slice(CHUNKED_LINE);
    }
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), size);
    Bytes::from(out)
}

const CHUNKED_LINE: &[u8] = b"transfer-encoding: chunked\r\n";

/// A response head as read.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    /// HTTP/1.1 without `Connection: close`: the connection may be reused.
    keep_alive: bool,
}

/// Takes a response head off the front of `buf`, or None while it is
/// incomplete. Header values share the bytes read (no copy).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Failure> {
    // Uninitialised slots: 128 headers are 4 KiB to clear otherwise, for
    // the few a response has.
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err("response head too large".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head ({e})")),
    };
    let status = res.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or("malformed response status")?;
    let http11 = res.version == Some(1);
    // Where each name and value lies in `buf`, to slice them out of the
    // head once it is split off.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
    let spans: Vec<(usize, usize, usize, usize)> =
        res.headers.iter().map(|h| (at(h.name.as_bytes()), h.name.len(), at(h.value), h.value.len())).collect();
    let raw = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name_at, name_len, value_at, value_len) in &spans {
        let name = raw.get(name_at..name_at + name_len).ok_or("malformed response header")?;
        let name = HeaderName::from_bytes(name).map_err(|_| "malformed response header name")?;
        let value = if value_len == 0 {
            HeaderValue::from_static("")
        } else {
            let bytes = raw.get(value_at..value_at + value_len).ok_or("malformed response header")?;
            HeaderValue::from_maybe_shared(raw.slice_ref(bytes)).map_err(|_| "malformed response header value")?
        };
        headers.append(name, value);
    }
    let close = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    Ok(Some(Head { status, headers, keep_alive: http11 && !close }))
}

/// How a response body is delimited (RFC 9112 §6.3).
fn body_length(method: &Method, head: &Head) -> Result<Remaining, Failure> {
    let s = head.status.as_u16();
    if *method == Method::HEAD || s == 204 || s == 304 || (100..200).contains(&s) {
        return Ok(Remaining::Length(0));
    }
    let te: Vec<&HeaderValue> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    if !te.is_empty() {
        // The router forwards no transfer-coding but chunked, which it
        // decodes (the client gets its own framing).
        let chunked = te.len() == 1 && te[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        return if chunked {
            Ok(Remaining::Chunked(Chunk::Size))
        } else {
            Err("unsupported Transfer-Encoding in the response (only chunked)".into())
        };
    }
    let mut length = None;
    for v in head.headers.get_all(CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("malformed Content-Length in the response")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length in the response".into());
        }
        length = Some(n);
    }
    Ok(length.map_or(Remaining::UntilClose, Remaining::Length))
}

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
    framing: Framing,
    /// Bytes of this request accepted by the kernel so far.
    sent: u64,
}

impl Outgoing {
    /// Writes what it can; Ready(Ok) once the whole request is out.
    fn poll_send(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            while !self.pending.is_empty() {
                let (slices, count) = self.pending.slices();
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.sent += n as u64;
                self.pending.advance(n);
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.framing == Framing::Chunked => {
                        let size = Bytes::from(format!("{:x}\r\n", data.len()));
                        self.pending = Pending::of([size, data, Bytes::from_static(b"\r\n")]);
                    }
                    Ok(data) => self.pending = Pending::of([data, Bytes::new(), Bytes::new()]),
                    Err(frame) => {
                        if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing) {
                            self.pending =
                                Pending::of([Bytes::from(encode_trailers(&trailers)), Bytes::new(), Bytes::new()]);
                            self.framing = Framing::None;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(format!("client body: {e}")))),
                None => {
                    self.body = None;
                    if self.framing == Framing::Chunked {
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

/// How an exchange on one connection ended before a response head.
struct Broken {
    why: Failure,
    /// Nothing of the request reached the kernel: it can go again as is.
    unsent: bool,
    /// A response byte arrived: the upstream answered, however badly.
    answered: bool,
}

/// Sends the request and reads the response head, skipping interim (1xx)
/// responses other than 101. Returns the head and whether the whole
/// request went out before it.
async fn round_trip(conn: &mut UpConn, out: &mut Outgoing) -> Result<(Head, bool), Broken> {
    let (mut sending, mut cut) = (true, false);
    std::future::poll_fn(|cx| loop {
        if sending {
            match out.poll_send(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => sending = false,
                Poll::Ready(Err(e)) => {
                    // The upstream may have answered and closed without
                    // reading the body: take what it said, if anything.
                    if conn.buf.is_empty() && !matches!(poll_fill(conn, cx), Poll::Ready(Ok(n)) if n > 0) {
                        let unsent = out.sent == 0;
                        return Poll::Ready(Err(Broken { why: describe_io(&e), unsent, answered: false }));
                    }
                    (sending, cut) = (false, true);
                    out.body = None;
                    out.pending = Pending::default();
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
                let complete = !sending && !cut && out.pending.is_empty() && out.body.is_none();
                return Poll::Ready(Ok((head, complete)));
            }
            Ok(None) => {}
            Err(why) => return Poll::Ready(Err(Broken { why, unsent: false, answered: true })),
        }
        let answered = !conn.buf.is_empty();
        match ready!(poll_fill(conn, cx)) {
            Ok(0) => {
                let why = if answered {
                    "connection closed in the response head"
                } else {
                    "connection closed before a response"
                };
                return Poll::Ready(Err(Broken { why: why.into(), unsent: out.sent == 0, answered }));
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Broken { why: describe_io(&e), unsent: out.sent == 0, answered })),
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
) -> Result<Exchanged, Failure> {
    let framing = if req.body().is_end_stream() {
        Framing::None
    } else if req.headers().contains_key(CONTENT_LENGTH) {
        Framing::Length
    } else {
        Framing::Chunked
    };
    let (parts, body) = req.into_parts();
    let replayable = framing == Framing::None && idempotent(&parts.method);
    let body = (framing != Framing::None).then_some(body);
    let first = |parts| Pending::of([encode_head(parts, framing), Bytes::new(), Bytes::new()]);
    let mut out = Outgoing { pending: first(&parts), body, framing, sent: 0 };
    let (slot, kept) = ups.take(addr);
    let mut conn = kept.and_then(|mut c| (!went_stale(&mut c)).then_some(c));
    let (conn, head, complete) = loop {
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => connect(addr, connect_timeout).await?,
        };
        match round_trip(&mut c, &mut out).await {
            Ok((h, complete)) => break (c, h, complete),
            Err(b) if reused && !b.answered && (b.unsent || replayable) => {
                tracing::debug!(
                    "router: {addr} closed a kept connection under a request ({}); sending it again on a new one",
                    b.why
                );
                out.pending = first(&parts);
                out.sent = 0;
            }
            Err(b) => return Err(b.why),
        }
    };
    let remaining = body_length(&parts.method, &head)?;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let mut response = Response::new(UpstreamBody::empty());
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        return Ok(Exchanged { response, upgraded: Some(conn) });
    }
    // Reused only if nothing of the exchange is left over on it.
    let reuse =
        (head.keep_alive && complete && !matches!(remaining, Remaining::UntilClose)).then(|| (ups.clone(), slot));
    let mut body = UpstreamBody { conn: None, remaining, reuse };
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

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this much left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remaining {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// A response body streamed from the upstream connection as the client's
/// connection polls for it; nothing is buffered beyond one read.
pub struct UpstreamBody {
    conn: Option<UpConn>,
    remaining: Remaining,
    /// Where the connection goes when the body ended cleanly.
    reuse: Option<(Arc<Upstreams>, usize)>,
}

impl UpstreamBody {
    fn empty() -> UpstreamBody {
        UpstreamBody { conn: None, remaining: Remaining::Length(0), reuse: None }
    }

    /// The body is complete: keep the connection for the next request if
    /// it may be and nothing beyond the response came.
    fn finish(&mut self, conn: UpConn) {
        self.remaining = Remaining::Length(0);
        if let Some((ups, slot)) = self.reuse.take() {
            if conn.buf.is_empty() {
                ups.put(slot, conn);
            }
        }
    }

    /// Makes one step with what is buffered: a frame, the end, or None
    /// when more must be read.
    fn step(&mut self) -> Result<Option<Option<Frame<Bytes>>>, std::io::Error> {
        let Some(conn) = self.conn.as_mut() else { return Ok(Some(None)) };
        let buf = &mut conn.buf;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("upstream body: {what}"));
        match self.remaining {
            Remaining::Length(0) => {}
            Remaining::Length(n) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                self.remaining = Remaining::Length(n - take as u64);
                if self.remaining != Remaining::Length(0) {
                    return Ok(Some(Some(Frame::data(data))));
                }
                if let Some(c) = self.conn.take() {
                    self.finish(c);
                }
                return Ok(Some(Some(Frame::data(data))));
            }
            Remaining::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Some(Frame::data(buf.split().freeze()))));
            }
            Remaining::Chunked(Chunk::Size) => {
                let Some(eol) = memchr::memchr(b'\n', buf) else {
                    return if buf.len() > MAX_CHUNK_LINE { Err(bad("chunk-size line too long")) } else { Ok(None) };
                };
                let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
                let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
                let size = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.len() <= 16)
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or_else(|| bad("malformed chunk size"))?;
                buf.advance(eol + 1);
                self.remaining = Remaining::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                return self.step();
            }
            Remaining::Chunked(Chunk::Data(n)) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                let left = n - take as u64;
                self.remaining = Remaining::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                return Ok(Some(Some(Frame::data(data))));
            }
            Remaining::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return if buf.first().is_none_or(|b| *b == b'\r') {
                        Ok(None)
                    } else {
                        Err(bad("no CRLF after a chunk"))
                    };
                }
                if &buf[..2] != b"\r\n" {
                    return Err(bad("no CRLF after a chunk"));
                }
                buf.advance(2);
                self.remaining = Remaining::Chunked(Chunk::Size);
                return self.step();
            }
            Remaining::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut map = HeaderMap::new();
                        for f in fields {
                            if let (Ok(n), Ok(v)) =
                                (HeaderName::from_bytes(f.name.as_bytes()), HeaderValue::from_bytes(f.value))
                            {
                                map.append(n, v);
                            }
                        }
                        (len, map)
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                        return Err(bad("trailers too large"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(e) => return Err(bad(&format!("malformed trailers ({e})"))),
                };
                buf.advance(len);
                if let Some(c) = self.conn.take() {
                    self.finish(c);
                }
                return Ok(Some((!trailers.is_empty()).then(|| Frame::trailers(trailers))));
            }
        }
        Ok(Some(None))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, Failure> {
        parse_head(&mut BytesMut::from(raw))
    }

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes()) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("{raw:?}: incomplete"),
            Err(e) => panic!("{raw:?}: {e}"),
        }
    }

    #[test]
    fn response_heads() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.keep_alive);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(body_length(&Method::GET, &h), Ok(Remaining::Length(5)));
        assert_eq!(body_length(&Method::HEAD, &h), Ok(Remaining::Length(0)));
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(body_length(&Method::GET, &h), Ok(Remaining::UntilClose));
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(body_length(&Method::GET, &h), Ok(Remaining::Length(0)));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(body_length(&Method::GET, &h), Ok(Remaining::Chunked(Chunk::Size)));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(body_length(&Method::GET, &h).is_err());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(body_length(&Method::GET, &h).is_err());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n");
        assert!(body_length(&Method::GET, &h).is_err());
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None)));
        assert!(parse(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(parse(huge.as_bytes()).is_err());
        // The head is taken off the buffer; what follows stays; values are
        // whole, empty ones too.
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-B: b b\r\n\r\nbody"[..]);
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"body");
        assert_eq!(h.headers.get("x-empty").unwrap(), "");
        assert_eq!(h.headers.get("x-b").unwrap(), "b b");
    }

    /// Decodes `wire` fed in pieces of `step` bytes, as the body would.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), std::io::Error> {
        // A connected socket pair gives the UpConn a real TcpStream; the
        // decoder itself only reads `buf`.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(std::io::Error::other)?;
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let io = TcpStream::connect(l.local_addr()?).await?;
            let mut body = UpstreamBody {
                conn: Some(UpConn { io, buf: BytesMut::new(), read_size: READ_SIZE }),
                remaining: Remaining::Chunked(Chunk::Size),
                reuse: None,
            };
            let (mut data, mut trailers, mut fed) = (Vec::new(), None, 0);
            loop {
                match body.step()? {
                    Some(Some(f)) => match f.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(f) => trailers = f.into_trailers().ok(),
                    },
                    Some(None) => {
                        let left = body.conn.as_ref().map_or(0, |c| c.buf.len());
                        return Ok((data, trailers, wire.len() - fed + left));
                    }
                    None => {
                        if fed == wire.len() {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        let end = (fed + step).min(wire.len());
                        if let Some(c) = body.conn.as_mut() {
                            c.buf.extend_from_slice(&wire[fed..end]);
                        }
                        fed = end;
                    }
                }
            }
        })
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, left) = decode(wire, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(trailers.is_none());
            assert_eq!(left, 0);
        }
        let (data, trailers, _) = decode(b"3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n", 2).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "7");
        for bad in [&b"zz\r\nabc\r\n0\r\n\r\n"[..], b"3\r\nabcXY0\r\n\r\n", b"\r\n", b"11111111111111111\r\n"] {
            assert!(decode(bad, 4).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode(b"3\r\nab", 1).is_err(), "a truncated body is an error");
    }
}
