//! Upstream response framing (src/router/framing.rs): any bytes an upstream
//! may send, cut into any pieces. Never panics and never loops; interim
//! (1xx) heads are skipped as the router does; a body is never made of more
//! bytes than were sent; a data frame is never empty; a Content-Length body
//! yields at most its length, and exactly it when complete; a body that is
//! complete leaves what follows it unread (the router then refuses to reuse
//! the connection), so consumed + left = sent.
//!
//! Input: byte 0 = the request method (odd: HEAD, else GET), byte 1 = seed
//! for the piece sizes, the rest = what the upstream sends.
#![no_main]

use bytes::BytesMut;
use flowinit::router::framing::{body_length, check_chunked_start, decode, parse_head, Remaining};
use hyper::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [method, seed, stream @ ..] = data else { return };
    let method = if method % 2 == 1 { Method::HEAD } else { Method::GET };
    let mut rng = u32::from(*seed) | 0x100;
    let mut next_piece = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        (rng % 700) as usize
    };
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut feed = |buf: &mut BytesMut, fed: &mut usize| -> bool {
        if *fed == stream.len() {
            return false;
        }
        let end = (*fed + next_piece()).min(stream.len());
        buf.extend_from_slice(&stream[*fed..end]);
        *fed = end;
        true
    };

    // The head, after any interim responses.
    let head = loop {
        match parse_head(&mut buf) {
            Ok(Some(h)) if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS => continue,
            Ok(Some(h)) => break h,
            Ok(None) => {
                if !feed(&mut buf, &mut fed) {
                    return;
                }
            }
            Err(_) => return,
        }
    };
    let head_end = fed - buf.len();
    let Ok(mut remaining) = body_length(&method, &head) else { return };
    let length = match remaining {
        Remaining::Length(n) => Some(n),
        _ => None,
    };

    let refused_early = matches!(remaining, Remaining::Chunked(_)) && check_chunked_start(&buf).is_err();
    let mut body = 0u64;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 4 * stream.len() + 16, "decode does not progress");
        if remaining == Remaining::Length(0) {
            break;
        }
        match decode(&mut remaining, &mut buf) {
            Ok(Some(Some(frame))) => {
                if let Ok(d) = frame.into_data() {
                    assert!(!d.is_empty(), "empty data frame");
                    body += d.len() as u64;
                }
            }
            Ok(Some(None)) => break,
            Ok(None) => {
                if !feed(&mut buf, &mut fed) {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    assert!(!refused_early, "check_chunked_start refused a body that decodes");
    assert!(body as usize <= stream.len() - head_end, "more body than bytes sent");
    if let Some(n) = length {
        assert!(body <= n, "a Content-Length body overran: {body} > {n}");
        if remaining == Remaining::Length(0) {
            assert_eq!(body, n, "complete but short");
        }
    }
    if remaining == Remaining::Length(0) {
        // Nothing past the body was consumed.
        let consumed = fed - buf.len();
        assert!(consumed <= stream.len());
        if let Some(n) = length {
            assert_eq!(consumed as u64, head_end as u64 + n);
        }
    }
});
