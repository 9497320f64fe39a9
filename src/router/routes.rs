//! Pure routing decisions: which route a path takes, the upstream path,
//! and the header rewriting of a proxy (hop-by-hop removal, forwarding
//! headers). No I/O; table-tested.

use crate::config::unit::Route;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};

/// The longest prefix that matches `path`.
pub fn pick<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    pick_indexed(routes, path).map(|(_, r)| r)
}

/// [`pick`], with the route's place in `routes`.
pub fn pick_indexed<'a>(routes: &'a [Route], path: &str) -> Option<(usize, &'a Route)> {
    routes.iter().enumerate().filter(|(_, r)| path.starts_with(&r.prefix)).max_by_key(|(_, r)| r.prefix.len())
}

/// The path and query to request from the upstream.
pub fn upstream_path(route: &Route, path_and_query: &str) -> String {
    if !route.strip_prefix {
        return path_and_query.to_string();
    }
    let rest = path_and_query.strip_prefix(route.prefix.as_str()).unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is not one of them: it announces end-to-end trailer fields,
/// and hyper sends a response's trailers only when it names them.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
];

/// Headers a `Connection` value may not remove (RFC 9110 §7.6.1 lets a
/// sender name any field, but a proxy must not let a client strip what the
/// next hop relies on): the Host the upstream routes by, and the
/// forwarding headers a trusted proxy in front of us added (naming
/// `X-Forwarded-For` would otherwise erase the load balancer's record of
/// the real client, with `trust_forwarded = true`).
pub fn protected(name: &HeaderName) -> bool {
    let n = name.as_str();
    *name == HOST || n.starts_with("x-forwarded-") || n == "forwarded" || n == "x-real-ip"
}

/// Removes the headers named in `Connection` (any but the `protected`
/// ones), and the fixed hop-by-hop set. `Upgrade` goes too unless this is an
/// upgrade being passed through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let hop = |k: &HeaderName| (*k == UPGRADE && !keep_upgrade) || HOP_BY_HOP.contains(&k.as_str());
    // Usually there are none, or just `Connection` and what it names: one
    // look at each name present, then a removal for each one found, with
    // no allocation (a name is cloned, not built). Headers named in
    // `Connection` only count when `Connection` is there, which `hop` sees,
    // and go first, while it is still there to name them.
    if !headers.keys().any(hop) {
        if keep_upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    let named = |headers: &HeaderMap| {
        connection_tokens(headers).find_map(|t| {
            headers
                .keys()
                .find(|k| {
                    *k != CONNECTION
                        && !protected(k)
                        && !(keep_upgrade && *k == UPGRADE)
                        && t.eq_ignore_ascii_case(k.as_str().as_bytes())
                })
                .cloned()
        })
    };
    while let Some(name) = named(headers) {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|k| hop(k)).cloned() {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Longest request method accepted. The longest registered one
/// (`UPDATEREDIRECTREF`, IANA's method registry) has 17 characters;
/// anything much longer is garbage or an attack on the logs.
pub const MAX_METHOD_LEN: usize = 32;

/// The request's `Host`: exactly one, and a valid `host[:port]`
/// (RFC 9110 §7.2, RFC 3986 §3.2.2), or the client gets a 400 as from
/// nginx. No Host at all is left to the caller (HTTP/1.0).
pub fn check_host(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut all = headers.get_all(HOST).iter();
    let Some(host) = all.next() else { return Ok(()) };
    if all.next().is_some() {
        return Err("more than one Host header");
    }
    if valid_host(host.as_bytes()) {
        Ok(())
    } else {
        Err("invalid Host header")
    }
}

/// `reg-name / IPv4 / [IPv6]`, then an optional `:port`; not empty.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.first() {
        Some(b'[') => match memchr::memchr(b']', v) {
            Some(end) => {
                let inner = &v[1..end];
                let ok = !inner.is_empty() && inner.iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b));
                if !ok {
                    return false;
                }
                (&v[..=end], &v[end + 1..])
            }
            None => return false,
        },
        _ => match memchr::memrchr(b':', v) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &b""[..]),
        },
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
    let port_ok = port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    !host.is_empty() && (host[0] == b'[' || host.iter().all(reg_name)) && port_ok
}

/// Removes request headers whose name has an underscore, as nginx does by
/// default (`underscores_in_headers off`): CGI, WSGI, PHP and others map
/// `X-Forwarded-For` and `X_Forwarded_For` to the same variable
/// (`HTTP_X_FORWARDED_FOR`), so a client could smuggle a value past the
/// header the router set. True if any was removed.
pub fn drop_underscored(headers: &mut HeaderMap) -> bool {
    let underscored = |k: &HeaderName| memchr::memchr(b'_', k.as_str().as_bytes()).is_some();
    if !headers.keys().any(underscored) {
        return false;
    }
    while let Some(name) = headers.keys().find(|k| underscored(k)).cloned() {
        headers.remove(name);
    }
    true
}

/// Request smuggling defences for what reaches us: a request may not carry
/// both Content-Length and Transfer-Encoding, and the only transfer-coding
/// we re-frame is plain `chunked` (forwarding others would drop them).
pub fn check_framing(headers: &HeaderMap) -> Result<(), (hyper::StatusCode, &'static str)> {
    let te: Vec<&HeaderValue> = headers.get_all(hyper::header::TRANSFER_ENCODING).iter().collect();
    if te.is_empty() {
        return Ok(());
    }
    if headers.contains_key(hyper::header::CONTENT_LENGTH) {
        return Err((hyper::StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding"));
    }
    let only_chunked = te.len() == 1 && te[0].to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if only_chunked {
        Ok(())
    } else {
        Err((hyper::StatusCode::NOT_IMPLEMENTED, "unsupported Transfer-Encoding (only chunked)"))
    }
}

/// The comma-separated tokens of every `Connection` value, as bytes: a
/// value with an obs-text byte must still have its other tokens honoured
/// (found by fuzzing: `Connection: x-secret, \xac` forwarded X-Secret).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// True for a request that asks to switch protocols (WebSocket and others).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Client-supplied forwarding headers we do not set ourselves: dropped
/// unless the client is a trusted proxy, so nobody can claim another IP.
const UNTRUSTED_FORWARDING: [&str; 4] = ["forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-prefix"];

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XF_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XF_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client's address as a header value, made once per connection.
pub fn peer_value(peer: std::net::IpAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::from_str(&peer.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets X-Forwarded-For/-Proto/-Host; `peer` is the client's address
/// (`peer_value`). Untrusted clients' values are replaced (and other
/// forwarding headers dropped); behind a trusted proxy the peer is appended
/// to its list.
pub fn set_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, trust: bool) {
    if !trust && headers.keys().any(|k| UNTRUSTED_FORWARDING.contains(&k.as_str())) {
        for h in UNTRUSTED_FORWARDING {
            headers.remove(h);
        }
    }
    let prior = trust
        .then(|| headers.get_all(XFF).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", "))
        .filter(|s| !s.is_empty());
    let value = match prior {
        Some(p) => HeaderValue::from_str(&format!("{p}, {}", peer.to_str().unwrap_or_default())).ok(),
        None => Some(peer.clone()),
    };
    if let Some(v) = value {
        headers.insert(XFF, v);
    }
    if !(trust && headers.contains_key(XF_PROTO)) {
        headers.insert(XF_PROTO, HeaderValue::from_static("http"));
    }
    if !(trust && headers.contains_key(XF_HOST)) {
        match headers.get(HOST).cloned() {
            Some(h) => {
                headers.insert(XF_HOST, h);
            }
            None => {
                headers.remove(XF_HOST);
            }
        }
    }
}

/// The request id header: taken from a client when sane, else made by
/// the router; sent upstream and returned to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id passed on (Heroku's limit).
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// A byte of a sane request id: letters, digits and `._:/+=-`. That holds
/// UUIDs, nginx's hex ids, base64 and ids with a prefix (`web:1234`), and
/// nothing that needs escaping in a log line or JSON, nor a space that
/// would split the plain access line's fields.
fn request_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._:/+=-".contains(&b)
}

/// The client's `X-Request-Id`, if it is to be passed on: exactly one
/// such header, of 1 to [`MAX_REQUEST_ID_LEN`] sane bytes. Anything else
/// (several headers, an empty or too long one, control characters,
/// spaces, quotes) is replaced by a fresh id, never echoed or logged.
pub fn sane_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut all = headers.get_all(X_REQUEST_ID).iter();
    let id = all.next()?;
    let b = id.as_bytes();
    (all.next().is_none() && (1..=MAX_REQUEST_ID_LEN).contains(&b.len()) && b.iter().all(|&c| request_id_byte(c)))
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, strip: bool) -> Route {
        Route { prefix: prefix.into(), upstream: "u:1".into(), unit: None, strip_prefix: strip }
    }

    #[test]
    fn longest_prefix_wins() {
        let routes = [route("/", false), route("/api/", false), route("/api/v2/", false)];
        let table =
            [("/", "/"), ("/index.html", "/"), ("/api/v1/ping", "/api/"), ("/api/v2/x", "/api/v2/"), ("/apix", "/")];
        for (path, want) in table {
            assert_eq!(pick(&routes, path).map(|r| r.prefix.as_str()), Some(want), "{path}");
        }
        assert!(pick(&[route("/api/", false)], "/other").is_none());
    }

    #[test]
    fn strip_prefix() {
        assert_eq!(upstream_path(&route("/svc/", true), "/svc/a?b=1"), "/a?b=1");
        assert_eq!(upstream_path(&route("/svc", true), "/svc"), "/");
        assert_eq!(upstream_path(&route("/svc/", false), "/svc/a"), "/svc/a");
    }

    #[test]
    fn hop_by_hop_named_in_connection_goes_first() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("trailer", HeaderValue::from_static("x-sum"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["trailer", "x-kept"]);
    }

    #[test]
    fn connection_cannot_name_host_or_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, Host, X-Forwarded-For, Forwarded, x-real-ip, X-Other"));
        for name in ["host", "x-forwarded-for", "forwarded", "x-real-ip", "x-other"] {
            h.insert(name, HeaderValue::from_static("v"));
        }
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["forwarded", "host", "x-forwarded-for", "x-real-ip"]);
    }

    #[test]
    fn hosts() {
        for ok in ["a.example", "a.example:8080", "127.0.0.1:3000", "[::1]:3000", "[::1]", "xn--bcher-kva.example"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a.example b", "a/b", "a.example:80x", "[::1", "[]:80", "a@b", "a\\b", ":80", "[::1]x"] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        assert!(check_host(&h).is_ok());
        h.append(HOST, HeaderValue::from_static("a.example"));
        assert!(check_host(&h).is_ok());
        h.append(HOST, HeaderValue::from_static("a.example"));
        assert_eq!(check_host(&h), Err("more than one Host header"));
    }

    #[test]
    fn underscored_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.append("a_b", HeaderValue::from_static("1"));
        h.append("a_b", HeaderValue::from_static("2"));
        assert!(drop_underscored(&mut h));
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        assert!(!drop_underscored(&mut h));
    }

    #[test]
    fn connection_values_with_obs_text_still_strip_what_they_name() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_bytes(b"x-secret, \xac").unwrap());
        h.insert("x-secret", HeaderValue::from_static("leaked"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
    }

    #[test]
    fn upgrade_survives_when_passed_through() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn framing_checks() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(check_framing(&h(&[])).is_ok());
        assert!(check_framing(&h(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(check_framing(&h(&[("content-length", "3")])).is_ok());
        assert_eq!(check_framing(&h(&[("transfer-encoding", "chunked"), ("content-length", "3")])).unwrap_err().0, 400);
        assert_eq!(check_framing(&h(&[("transfer-encoding", "gzip, chunked")])).unwrap_err().0, 501);
        assert_eq!(
            check_framing(&h(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")])).unwrap_err().0,
            501
        );
    }

    #[test]
    fn forwarded_headers_replaced_unless_trusted() {
        let peer = peer_value("10.1.2.3".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(HOST, HeaderValue::from_static("example.com"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let mut untrusted = h.clone();
        set_forwarded(&mut untrusted, &peer, false);
        assert!(untrusted.get("forwarded").is_none() && untrusted.get("x-real-ip").is_none());
        assert_eq!(untrusted.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(untrusted.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(untrusted.get("x-forwarded-host").unwrap(), "example.com");
        set_forwarded(&mut h, &peer, true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "6.6.6.6, 10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn sane_request_ids_pass_the_rest_do_not() {
        let one = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
            h
        };
        let long = "a".repeat(MAX_REQUEST_ID_LEN);
        for ok in [
            "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99",
            "f9ed4675-f1c5-3513-c61a-3b3b4e25b4c0",
            "x",
            "web:1234/ab+cd==",
            "A.b_C-9",
            long.as_str(),
        ] {
            assert_eq!(sane_request_id(&one(ok.as_bytes())).map(|v| v.as_bytes()), Some(ok.as_bytes()), "{ok}");
        }
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in
            [&b""[..], too_long.as_bytes(), b"a b", b"a\tb", b"a\"b", b"id;x", b"\xc3\xa9t\xc3\xa9", b"a,b", b"<x>"]
        {
            assert!(sane_request_id(&one(bad)).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut two = one(b"abc");
        two.append(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert!(sane_request_id(&two).is_none(), "two headers, even equal ones");
        assert!(sane_request_id(&HeaderMap::new()).is_none());
    }
}
