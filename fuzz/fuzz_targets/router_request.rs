//! Router request path: route choice and header rewriting on whatever a
//! client can send. Never panics; after `strip_hop_by_hop(…, false)` no
//! hop-by-hop header is left, nor any header an original `Connection`
//! value names, except the `protected` ones (Host and the forwarding
//! headers), which stay; `set_forwarded` always leaves exactly one
//! X-Forwarded-For ending with the peer and never trusts a client's
//! forwarding headers unless told to; `check_framing` passes only a body
//! framed by at most one of Content-Length and a lone `chunked`;
//! `sane_request_id` passes only a lone X-Request-Id of 1 to 200 bytes that
//! need no escaping (no space, quote, backslash, control byte or obs-text).
//!
//! Input: a raw request head, so seeds are real requests. The first line is
//! the request line (its second word is the path; a line without spaces is
//! the path itself); each later line `name: value` is a header, taken as
//! bytes and kept when hyper accepts the name and the value, as its parser
//! would. Lines end in "\n" with an optional "\r".
#![no_main]

use flowinit::config::unit::Route;
use flowinit::router::routes::{
    check_framing, peer_value, pick, sane_request_id, set_forwarded, strip_hop_by_hop, upstream_path, wants_upgrade,
    HOP_BY_HOP, MAX_REQUEST_ID_LEN, X_REQUEST_ID, protected,
};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;

fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let r = |prefix: &str, strip: bool| Route {
            prefix: prefix.into(),
            upstream: "127.0.0.1:3000".into(),
            unit: Some("web".into()),
            strip_prefix: strip,
        };
        vec![
            r("/", false),
            r("/api/", false),
            r("/api/v1/", true),
            r("/svc", true),
            r("/ws/", true),
            r("/static/", false),
            r("/é/", true),
        ]
    })
}

/// Findings reported but not fixed yet, named in `FUZZ_KNOWN` (comma
/// separated) to keep fuzzing past them; see fuzz/README.md.
fn known(finding: &str) -> bool {
    static KNOWN: OnceLock<Vec<String>> = OnceLock::new();
    KNOWN
        .get_or_init(|| std::env::var("FUZZ_KNOWN").unwrap_or_default().split(',').map(str::to_owned).collect())
        .iter()
        .any(|k| k == finding)
}

/// Every header name a Connection value names, read as bytes: a token list
/// split on commas, whitespace trimmed, names that hyper cannot hold skipped.
/// A value with bytes above 0x7E (obs-text, which hyper's parser accepts)
/// still names its ASCII tokens.
fn named_in_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter(|v| !known("connection-obs-text") || v.to_str().is_ok())
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect()
}

fn parse_head(data: &[u8]) -> (String, HeaderMap) {
    let mut lines = data.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let words: Vec<&[u8]> = first.split(|b| *b == b' ').filter(|w| !w.is_empty()).collect();
    let target = if words.len() >= 2 { words[1] } else { first };
    let path = String::from_utf8_lossy(target).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    (path, headers)
}

fn check_forwarded(original: &HeaderMap, peer: IpAddr, trust: bool) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let proto = HeaderName::from_static("x-forwarded-proto");
    let xhost = HeaderName::from_static("x-forwarded-host");
    let mut h = original.clone();
    set_forwarded(&mut h, &peer_value(peer), trust);
    let values: Vec<&HeaderValue> = h.get_all(&xff).iter().collect();
    assert_eq!(values.len(), 1, "X-Forwarded-For must be one header, got {values:?}");
    let v = values[0].to_str().expect("X-Forwarded-For is ASCII");
    let peer_s = peer.to_string();
    assert!(v == peer_s || v.ends_with(&format!(", {peer_s}")), "X-Forwarded-For {v:?} does not end with {peer}");
    if !trust {
        assert_eq!(v, peer_s, "an untrusted client's X-Forwarded-For leaked");
        assert_eq!(h.get_all(&proto).iter().collect::<Vec<_>>(), ["http"], "untrusted X-Forwarded-Proto");
        let want: Vec<&HeaderValue> = original.get(HOST).into_iter().collect();
        assert_eq!(h.get_all(&xhost).iter().collect::<Vec<_>>(), want, "untrusted X-Forwarded-Host");
    } else {
        assert!(h.contains_key(&proto), "X-Forwarded-Proto missing");
    }
}

fuzz_target!(|data: &[u8]| {
    let (path, headers) = parse_head(data);

    if let Some(route) = pick(routes(), &path) {
        assert!(path.starts_with(&route.prefix));
        assert!(
            routes().iter().filter(|r| path.starts_with(&r.prefix)).all(|r| r.prefix.len() <= route.prefix.len()),
            "{path:?} took {:?}, not the longest prefix",
            route.prefix
        );
        let up = upstream_path(route, &path);
        if route.strip_prefix {
            assert!(up.starts_with('/'), "upstream path {up:?} of {path:?} does not start with /");
        } else {
            assert_eq!(up, path);
        }
    } else {
        assert!(!path.starts_with('/'), "{path:?} starts with / but matched no route");
    }

    if check_framing(&headers).is_ok() {
        let te: Vec<&HeaderValue> = headers.get_all(TRANSFER_ENCODING).iter().collect();
        assert!(te.is_empty() || !headers.contains_key(CONTENT_LENGTH), "framing passed with both CL and TE");
        assert!(te.len() <= 1, "framing passed with {} Transfer-Encoding headers", te.len());
        if let Some(v) = te.first() {
            assert!(v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"), "framing passed TE {v:?}");
        }
    }

    let upgrade = wants_upgrade(&headers);
    if upgrade {
        assert!(headers.contains_key(UPGRADE));
    }

    let named = named_in_connection(&headers);
    let mut plain = headers.clone();
    strip_hop_by_hop(&mut plain, false);
    for n in HOP_BY_HOP.iter().copied().chain(["upgrade"]) {
        assert!(!plain.contains_key(n), "hop-by-hop {n} survived strip_hop_by_hop");
    }
    for n in &named {
        if protected(n) {
            // Host and the forwarding headers stay whatever Connection says.
            assert_eq!(plain.contains_key(n), headers.contains_key(n), "{n} is protected, yet Connection removed it");
        } else {
            assert!(!plain.contains_key(n), "{n}, named in Connection, survived strip_hop_by_hop");
        }
    }
    for (n, v) in &plain {
        assert!(headers.get_all(n).iter().any(|x| x == v), "strip_hop_by_hop invented {n}: {v:?}");
    }

    let mut kept = headers.clone();
    strip_hop_by_hop(&mut kept, true);
    assert_eq!(kept.get_all(CONNECTION).iter().collect::<Vec<_>>(), ["upgrade"]);
    assert_eq!(
        kept.get_all(UPGRADE).iter().collect::<Vec<_>>(),
        headers.get_all(UPGRADE).iter().collect::<Vec<_>>(),
        "Upgrade must pass through untouched"
    );
    for n in HOP_BY_HOP.iter().copied().filter(|n| *n != "connection") {
        assert!(!kept.contains_key(n), "hop-by-hop {n} survived strip_hop_by_hop(keep_upgrade)");
    }
    for n in named.iter().filter(|n| **n != UPGRADE && **n != CONNECTION && !protected(n)) {
        assert!(!kept.contains_key(n), "{n}, named in Connection, survived strip_hop_by_hop(keep_upgrade)");
    }

    if let Some(id) = sane_request_id(&headers) {
        assert_eq!(headers.get_all(X_REQUEST_ID).iter().count(), 1, "a sane id from several headers");
        let b = id.as_bytes();
        assert!((1..=MAX_REQUEST_ID_LEN).contains(&b.len()), "a sane id of {} bytes", b.len());
        assert!(
            b.iter().all(|c| c.is_ascii_graphic() && !b"\"\\,;<>'`{}()[]".contains(c)),
            "a sane id {id:?} that needs escaping or splits a field"
        );
    }

    for peer in [IpAddr::from([10, 1, 2, 3]), IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1])] {
        check_forwarded(&headers, peer, false);
        check_forwarded(&headers, peer, true);
    }
});
