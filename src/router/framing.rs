//! HTTP/1.1 response framing, as the router reads upstream responses:
//! the head (status and headers), how long the body is, and the body's
//! chunked coding. Pure: bytes in, parts out; no I/O. Unit-tested here and
//! fuzzed (fuzz/fuzz_targets/upstream_response.rs).

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, StatusCode};
use std::mem::MaybeUninit;

/// Largest response head (status line and headers), or trailer section.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What is wrong with an upstream's response framing, in a few words for
/// the 502 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("response head too large")]
    HeadTooLarge,
    #[error("malformed response head ({0})")]
    MalformedHead(String),
    #[error("malformed response status")]
    MalformedStatus,
    #[error("malformed response header")]
    MalformedHeader,
    #[error("malformed response header name")]
    MalformedHeaderName,
    #[error("malformed response header value")]
    MalformedHeaderValue,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    #[error("unsupported Transfer-Encoding in the response (only chunked)")]
    UnsupportedTransferEncoding,
    #[error("malformed Content-Length in the response")]
    MalformedLength,
    #[error("conflicting Content-Length in the response")]
    ConflictingLength,
    #[error("chunk-size line too long")]
    ChunkLineTooLong,
    #[error("malformed chunk size in the response")]
    MalformedChunkSize,
    #[error("no CRLF after a chunk in the response")]
    NoCrlfAfterChunk,
}

/// A response head as read.
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// HTTP/1.1 without `Connection: close`: the connection may be reused.
    pub keep_alive: bool,
    /// The status line says HTTP/1.1 (not 1.0).
    pub http11: bool,
}

/// Takes a response head off the front of `buf`, or None while it is
/// incomplete. Header values share the bytes read (no copy).
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, FramingError> {
    // Uninitialised slots: 128 headers are 4 KiB to clear otherwise, for
    // the few a response has.
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(FramingError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(FramingError::MalformedHead(e.to_string())),
    };
    let status = res.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(FramingError::MalformedStatus)?;
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
        let name = raw.get(name_at..name_at + name_len).ok_or(FramingError::MalformedHeader)?;
        let name = HeaderName::from_bytes(name).map_err(|_| FramingError::MalformedHeaderName)?;
        let value = if value_len == 0 {
            HeaderValue::from_static("")
        } else {
            let bytes = raw.get(value_at..value_at + value_len).ok_or(FramingError::MalformedHeader)?;
            HeaderValue::from_maybe_shared(raw.slice_ref(bytes)).map_err(|_| FramingError::MalformedHeaderValue)?
        };
        headers.append(name, value);
    }
    let close = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    Ok(Some(Head { status, headers, keep_alive: http11 && !close, http11 }))
}

/// How a response body is delimited (RFC 9112 §6.3).
pub fn body_length(method: &Method, head: &Head) -> Result<Remaining, FramingError> {
    let s = head.status.as_u16();
    if *method == Method::HEAD || s == 204 || s == 304 || (100..200).contains(&s) {
        return Ok(Remaining::Length(0));
    }
    let te: Vec<&HeaderValue> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    if !te.is_empty() && !head.http11 {
        // HTTP/1.0 has no transfer-codings (RFC 9112 §6.1): a sender that
        // uses one anyway cannot be trusted to frame it (hyper refuses it
        // too).
        return Err(FramingError::TransferEncodingInHttp10);
    }
    if !te.is_empty() {
        // The router forwards no transfer-coding but chunked, which it
        // decodes (the client gets its own framing).
        let chunked = te.len() == 1 && te[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        return if chunked {
            Ok(Remaining::Chunked(Chunk::Size))
        } else {
            Err(FramingError::UnsupportedTransferEncoding)
        };
    }
    let mut length = None;
    for v in head.headers.get_all(CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(FramingError::MalformedLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(FramingError::ConflictingLength);
        }
        length = Some(n);
    }
    Ok(length.map_or(Remaining::UntilClose, Remaining::Length))
}

/// The size of a chunk-size line (CRLF or LF excluded; extensions
/// allowed), or None when it is not 1 to 16 hex digits.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 16)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
}

/// Checks the chunked framing of the body bytes that came with a response
/// head (`buf`, not consumed), as far as they go: every complete chunk-size
/// line, and the CRLF after each complete chunk. A body whose framing is
/// already broken there is refused before its head goes to the client
/// (a 502 instead of a 200 cut off at once); what comes later can only cut
/// the client's connection. Nothing is copied.
pub fn check_chunked_start(mut buf: &[u8]) -> Result<(), FramingError> {
    loop {
        let Some(eol) = memchr::memchr(b'\n', buf) else {
            return if buf.len() > MAX_CHUNK_LINE { Err(FramingError::ChunkLineTooLong) } else { Ok(()) };
        };
        let size = chunk_size(&buf[..eol]).ok_or(FramingError::MalformedChunkSize)?;
        if size == 0 {
            // The trailers are checked as they are decoded.
            return Ok(());
        }
        let rest = &buf[eol + 1..];
        let Some(end) = usize::try_from(size).ok().filter(|s| *s < rest.len()) else { return Ok(()) };
        let crlf = &rest[end..rest.len().min(end + 2)];
        if !b"\r\n".starts_with(crlf) {
            return Err(FramingError::NoCrlfAfterChunk);
        }
        if crlf.len() < 2 {
            return Ok(());
        }
        buf = &rest[end + 2..];
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
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
pub enum Remaining {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// One step of decoding a response body from what `buf` holds: a frame
/// (data, or trailers at the end), the end, or None when more must be
/// read. `remaining` is `Length(0)` once the body is complete; whatever
/// follows it stays in `buf`.
pub fn decode(remaining: &mut Remaining, buf: &mut BytesMut) -> Result<Option<Option<Frame<Bytes>>>, std::io::Error> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("upstream body: {what}"));
    match *remaining {
        Remaining::Length(0) => {}
        Remaining::Length(n) => {
            if buf.is_empty() {
                return Ok(None);
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let data = buf.split_to(take).freeze();
            *remaining = Remaining::Length(n - take as u64);
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
            let size = chunk_size(&buf[..eol]).ok_or_else(|| bad("malformed chunk size"))?;
            buf.advance(eol + 1);
            *remaining = Remaining::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
            return decode(remaining, buf);
        }
        Remaining::Chunked(Chunk::Data(n)) => {
            if buf.is_empty() {
                return Ok(None);
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let data = buf.split_to(take).freeze();
            let left = n - take as u64;
            *remaining = Remaining::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
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
            *remaining = Remaining::Chunked(Chunk::Size);
            return decode(remaining, buf);
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
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(bad("trailers too large")),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(bad(&format!("malformed trailers ({e})"))),
            };
            buf.advance(len);
            *remaining = Remaining::Length(0);
            return Ok(Some((!trailers.is_empty()).then(|| Frame::trailers(trailers))));
        }
    }
    Ok(Some(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, FramingError> {
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

    /// Decodes `wire` fed in pieces of `step` bytes, as the body would:
    /// the data, the trailers, and how many bytes were left after the end.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), std::io::Error> {
        let mut remaining = Remaining::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let (mut data, mut trailers, mut fed) = (Vec::new(), None, 0);
        loop {
            match decode(&mut remaining, &mut buf)? {
                Some(Some(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Some(None) => return Ok((data, trailers, wire.len() - fed + buf.len())),
                None => {
                    if fed == wire.len() {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
            if remaining == Remaining::Length(0) {
                return Ok((data, trailers, wire.len() - fed + buf.len()));
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, left) = decode_all(wire, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(trailers.is_none());
            assert_eq!(left, 0);
        }
        let (data, trailers, _) = decode_all(b"3\r\nabc\r\n0\r\nX-Sum: 7\r\n\r\n", 2).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "7");
        for bad in [&b"zz\r\nabc\r\n0\r\n\r\n"[..], b"3\r\nabcXY0\r\n\r\n", b"\r\n", b"11111111111111111\r\n"] {
            assert!(decode_all(bad, 4).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode_all(b"3\r\nab", 1).is_err(), "a truncated body is an error");
    }

    #[test]
    fn the_start_of_a_chunked_body_is_checked_as_far_as_it_goes() {
        for ok in [&b""[..], b"5", b"5\r\nhel", b"5\r\nhello\r", b"5\r\nhello\r\n3;x=y\r\nab", b"0\r\nX: 1\r\n"] {
            assert_eq!(check_chunked_start(ok), Ok(()), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [&b"zz\r\nhello"[..], b"5\r\nhelloXY", b"5\r\nhello\rX", b"\r\n", b"11111111111111111\r\n"] {
            assert!(check_chunked_start(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(decode_all(bad, 3).is_err(), "decode agrees on {:?}", String::from_utf8_lossy(bad));
        }
        assert!(check_chunked_start(&[b'1'; MAX_CHUNK_LINE + 1]).is_err());
    }

    #[test]
    fn transfer_encoding_on_http10_is_refused() {
        let h = head("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(body_length(&Method::GET, &h).is_err());
    }
}
