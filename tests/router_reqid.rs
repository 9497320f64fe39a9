//! Request ids through the real binary and raw sockets: the router gives a
//! request without a sane `X-Request-Id` a fresh one (32 hex digits), passes
//! a sane one on unchanged, replaces an insane one (too long, a control
//! character, several headers) without echoing it, sends the id upstream,
//! returns it to the client and writes it in the access log line; ids are
//! unique, also per request on one keep-alive connection; in the JSON log
//! format each access line is an object with the request's fields.
//! Upstream: tests/fixtures/reqid_upstream.py (echoes the ids it got).

mod common;

use common::*;
use regex::Regex;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct Stack {
    // Declared before the temp dir: flowinit stops before its files go.
    f: Flowinit,
    _d: TempDir,
    port: u16,
    /// The address of the route `/down/`, where nothing listens.
    dead: u16,
    be: u16,
}

/// The upstream unit and a router with `/app/` (to it, gated by it) and
/// `/down/` (to a port nobody listens on); no `/` route, so other paths
/// get the router's 404.
fn stack(tag: &str, json: bool) -> Stack {
    let d = TempDir::new(tag);
    let (port, be, dead) = (free_port(), free_port(), free_port());
    d.unit(
        "upstream",
        &format!(
            "[service]\ncommand = [\"{}\", \"{}\", \"{be}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"100ms\"\n",
            python(),
            fixture("reqid_upstream.py")
        ),
    );
    d.unit(
        "router",
        &format!(
            "[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/app/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"upstream\"\n[[router.routes]]\nprefix = \"/down/\"\nupstream = \"http://127.0.0.1:{dead}\"\n"
        ),
    );
    let env: &[(&str, &str)] = if json { &[("FLOWINIT_LOG_FORMAT", "json")] } else { &[] };
    let f = Flowinit::up(&d, Opts { env, ..Default::default() });
    f.wait_state("upstream", "ready");
    f.wait_state("router", "running");
    Stack { f, _d: d, port, dead, be }
}

struct Reply {
    status: u16,
    /// Names in lower case, in the order received.
    headers: Vec<(String, String)>,
    /// Decoded when chunked.
    body: Vec<u8>,
}

impl Reply {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The one X-Request-Id the client got.
    fn id(&self) -> String {
        let ids = self.all("x-request-id");
        assert_eq!(ids.len(), 1, "exactly one X-Request-Id in the answer: {:?}", self.headers);
        ids[0].to_string()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The X-Request-Id values the upstream received (its echo).
    fn upstream_got(&self) -> Vec<String> {
        self.json()["request_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }
}

/// A client connection that sends requests one after the other
/// (keep-alive) and reads each answer by its framing.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(T)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Conn { w, r }
    }

    /// `GET path` with `extra` header lines (each ending in \r\n).
    fn get(&mut self, path: &str, extra: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: reqid.test\r\n{extra}\r\n").as_bytes())
    }

    fn send(&mut self, raw: &[u8]) -> Reply {
        self.w.write_all(raw).unwrap();
        self.read_reply()
    }

    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).unwrap();
        assert!(l.ends_with(b"\n"), "the connection ended inside a head: {:?}", String::from_utf8_lossy(&l));
        String::from_utf8_lossy(&l).trim_end_matches(['\r', '\n']).to_string()
    }

    fn read_reply(&mut self) -> Reply {
        let status_line = self.line();
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            panic!("not an HTTP status line: {status_line:?}");
        });
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).unwrap();
                if size == 0 {
                    while !self.line().is_empty() {}
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.r.read_exact(&mut body[start..]).unwrap();
                assert_eq!(self.line(), "", "CRLF after a chunk");
            }
        } else if let Some(n) = value("content-length") {
            body.resize(n.parse().unwrap(), 0);
            self.r.read_exact(&mut body).unwrap();
        } else {
            self.r.read_to_end(&mut body).unwrap();
        }
        Reply { status, headers, body }
    }
}

/// The router's access log lines on flowinit's stdout (plain format),
/// without the `router   | ` prefix.
fn access_lines(f: &Flowinit) -> Vec<String> {
    f.stdout()
        .lines()
        .filter_map(|l| l.split_once(" | ").filter(|(p, _)| p.trim() == "router").map(|(_, rest)| rest.to_string()))
        .collect()
}

/// The access log line of the request with id `id`, once written.
fn access_line(f: &Flowinit, id: &str) -> String {
    wait_for(&format!("the access log line with rid={id}"), T, || {
        access_lines(f).into_iter().find(|l| l.contains(&format!(" rid={id} ")))
    })
}

fn made_by_the_router(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn a_request_without_an_id_gets_one_upstream_back_and_in_the_log() {
    let mut s = stack("reqid-fresh", false);
    let mut c = Conn::open(s.port);
    let r = c.get("/app/echo?secret=1", "");
    assert_eq!(r.status, 200, "{:?}", r.headers);
    let id = r.id();
    assert!(made_by_the_router(&id), "{id:?}");
    assert_eq!(r.upstream_got(), [id.as_str()], "the upstream got the same single id");
    let line = access_line(&s.f, &id);
    assert!(line.contains(" GET /app/echo 200 "), "{line}");
    assert!(!line.contains("secret"), "no query string in the log: {line}");
    assert!(line.ends_with(&format!(" -> 127.0.0.1:{}", s.be)), "{line}");
    // The router's own answers carry an id too, and log it.
    for (path, status) in [("/nothing", 404), ("/down/x", 502)] {
        let r = c.get(path, "");
        assert_eq!(r.status, status, "{path}: {:?}", r.headers);
        let id = r.id();
        assert!(made_by_the_router(&id), "{path}: {id:?}");
        let line = access_line(&s.f, &id);
        assert!(line.contains(&format!(" GET {path} {status} ")), "{line}");
    }
    // An id the upstream sets in its answer is replaced by the request's.
    let r = c.get("/app/own-id", "");
    let id = r.id();
    assert!(made_by_the_router(&id), "{id:?}, not the upstream's");
    assert_eq!(r.upstream_got(), [id.as_str()]);
    access_line(&s.f, &id);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_sane_client_id_is_passed_through_unchanged() {
    let mut s = stack("reqid-sane", false);
    let long = format!("long-{}", "0123456789".repeat(19) + "abcde");
    assert_eq!(long.len(), 200);
    let mut c = Conn::open(s.port);
    for sent in [
        "f9ed4675-f1c5-3513-c61a-3b3b4e25b4c0",
        "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99",
        "web:1234/Ab+cd==",
        "x",
        "A.b_C-9",
        long.as_str(),
    ] {
        let r = c.get("/app/echo", &format!("X-Request-Id: {sent}\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(r.id(), sent, "the client gets its own id back");
        assert_eq!(r.upstream_got(), [sent], "the upstream gets it unchanged");
        let line = access_line(&s.f, sent);
        assert!(line.contains(" GET /app/echo 200 "), "{line}");
    }
    // Also on the router's own answers, and whatever the header's case.
    let r = c.get("/nothing", "x-REQUEST-id: from-the-client-404\r\n");
    assert_eq!((r.status, r.id().as_str()), (404, "from-the-client-404"));
    access_line(&s.f, "from-the-client-404");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn insane_client_ids_are_replaced_and_never_echoed() {
    let mut s = stack("reqid-insane", false);
    let (a300, b201) = ("a".repeat(300), "b".repeat(201));
    // (what, header lines, a part of the sent id that must not come back)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("300 bytes", format!("X-Request-Id: {a300}\r\n"), Some(&a300)),
        ("201 bytes", format!("X-Request-Id: {b201}\r\n"), Some(&b201)),
        ("a tab (a control character)", "X-Request-Id: tab\there\r\n".into(), Some("tab\there")),
        ("two headers", "X-Request-Id: first-of-two\r\nX-Request-Id: second-of-two\r\n".into(), Some("-of-two")),
        ("two equal headers", "X-Request-Id: same-twice\r\nX-Request-Id: same-twice\r\n".into(), Some("same-twice")),
        ("empty", "X-Request-Id: \r\n".into(), None),
        ("a space", "X-Request-Id: two words\r\n".into(), Some("two words")),
        ("a quote", "X-Request-Id: say\"hi\r\n".into(), Some("say\"hi")),
        ("log injection", "X-Request-Id: x -> 6.6.6.6 200\r\n".into(), Some("6.6.6.6")),
        ("not ASCII", "X-Request-Id: caf\u{e9}\r\n".into(), Some("caf\u{e9}")),
    ];
    let mut c = Conn::open(s.port);
    for (what, header, sent) in &cases {
        let r = c.get("/app/echo", header);
        assert_eq!(r.status, 200, "{what}: {:?}", r.headers);
        let id = r.id();
        assert!(made_by_the_router(&id), "{what}: replaced by a fresh id, got {id:?}");
        assert_eq!(r.upstream_got(), [id.as_str()], "{what}: the upstream gets only the fresh id");
        let line = access_line(&s.f, &id);
        assert!(line.contains(" GET /app/echo 200 "), "{what}: {line}");
        if let Some(sent) = sent {
            let echoed = r.headers.iter().any(|(_, v)| v.contains(sent));
            assert!(!echoed, "{what}: echoed in {:?}", r.headers);
            assert!(!line.contains(sent), "{what}: logged: {line}");
        }
    }
    // Other control characters never reach the router's code: hyper's
    // parser refuses the request (400) and nothing is echoed or proxied.
    let mut c = Conn::open(s.port);
    let r = c.send(b"GET /app/echo HTTP/1.1\r\nHost: reqid.test\r\nX-Request-Id: bell\x07here\r\n\r\n");
    assert_eq!(r.status, 400, "{:?}", r.headers);
    assert!(!r.headers.iter().any(|(_, v)| v.contains("bell")), "{:?}", r.headers);
    assert!(!s.f.stdout().contains("bell"), "not logged");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn ids_are_unique_across_a_thousand_requests() {
    let mut s = stack("reqid-unique", false);
    let port = s.port;
    // Four keep-alive connections at once, 250 requests each.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                (0..250)
                    .map(|_| {
                        let r = c.get("/app/echo", "");
                        assert_eq!(r.status, 200);
                        let id = r.id();
                        assert_eq!(r.upstream_got(), [id.as_str()]);
                        id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.iter().all(|id| made_by_the_router(id)), "{:?}", ids.iter().find(|id| !made_by_the_router(id)));
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1000, "every id differs");
    // Every one of them is in the access log, once.
    let rid = Regex::new(r" rid=([0-9a-f]{32}) ").unwrap();
    let logged = wait_for("1000 access log lines", T, || {
        let logged: Vec<String> =
            access_lines(&s.f).iter().filter_map(|l| Some(rid.captures(l)?[1].to_string())).collect();
        (logged.len() >= 1000).then_some(logged)
    });
    assert_eq!(logged.len(), 1000);
    assert_eq!(logged.iter().collect::<HashSet<_>>(), unique);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_keep_alive_connection_gets_a_new_id_per_request() {
    let mut s = stack("reqid-keepalive", false);
    let mut c = Conn::open(s.port);
    let mut ids = Vec::new();
    for i in 0..6 {
        // The fourth brings an id of its own; the next ones do not inherit it.
        let extra = if i == 3 { "X-Request-Id: the-clients-own\r\n" } else { "" };
        let r = c.get("/app/echo", extra);
        assert_eq!(r.status, 200);
        assert!(r.all("connection").iter().all(|v| !v.eq_ignore_ascii_case("close")), "kept alive: {:?}", r.headers);
        assert_eq!(r.upstream_got(), [r.id()]);
        ids.push(r.id());
    }
    assert_eq!(ids[3], "the-clients-own");
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert!(made_by_the_router(id), "request {i}: {id}");
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 6, "{ids:?}");
    let local = c.w.local_addr().unwrap().to_string();
    for id in &ids {
        let line = access_line(&s.f, id);
        assert!(line.starts_with(&format!("{local} GET /app/echo 200 ")), "one connection: {line}");
    }
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn json_access_lines_carry_the_request_fields() {
    let mut s = stack("reqid-json", true);
    let mut c = Conn::open(s.port);
    let local = c.w.local_addr().unwrap().to_string();
    let (app, down) = (format!("127.0.0.1:{}", s.be), format!("127.0.0.1:{}", s.dead));
    // (request target, status, path logged, route, upstream)
    let cases = [
        ("/app/bytes?n=1234&token=secret", 200, "/app/bytes", Some("/app/"), Some(app.as_str())),
        ("/app/chunked?n=5000", 200, "/app/chunked", Some("/app/"), Some(app.as_str())),
        ("/app/bytes?n=0", 200, "/app/bytes", Some("/app/"), Some(app.as_str())),
        ("/app/echo", 200, "/app/echo", Some("/app/"), Some(app.as_str())),
        ("/nothing", 404, "/nothing", None, None),
        ("/down/x", 502, "/down/x", Some("/down/"), Some(down.as_str())),
    ];
    let ts = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    for (target, status, path, route, upstream) in cases {
        let r = c.get(target, "");
        assert_eq!(r.status, status, "{target}");
        let id = r.id();
        let v: serde_json::Value = wait_for(&format!("the JSON access line of {target}"), T, || {
            s.f.stdout()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["request_id"] == id.as_str())
        });
        assert_eq!(v["unit"], "router", "{v}");
        assert_eq!(v["stream"], "stdout", "{v}");
        assert!(ts.is_match(v["ts"].as_str().unwrap_or_default()), "{v}");
        assert_eq!(v["method"], "GET", "{v}");
        assert_eq!(v["path"], path, "{v}");
        assert_eq!(v["route"].as_str(), route, "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["bytes"].as_u64(), Some(r.body.len() as u64), "{target}: bytes is the body's length: {v}");
        let ms = v["duration_ms"].as_f64().unwrap_or(-1.0);
        assert!((0.0..30_000.0).contains(&ms), "{v}");
        assert_eq!(v["upstream"].as_str(), upstream, "{v}");
        assert_eq!(v["client"], local.as_str(), "{v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!(" rid={id} ")) && msg.contains(&format!("GET {path} {status} ")), "{v}");
        assert!(!v.to_string().contains("secret"), "no query string: {v}");
    }
    // The sizes were what was asked for.
    assert_eq!(c.get("/app/chunked?n=5000", "").body.len(), 5000);
    // Every line is a JSON object; every router line an access line.
    let out = s.f.stdout();
    let mut router_lines = 0;
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        if v["unit"] == "router" {
            router_lines += 1;
            for k in [
                "ts",
                "msg",
                "request_id",
                "client",
                "method",
                "path",
                "route",
                "status",
                "bytes",
                "duration_ms",
                "upstream",
            ] {
                assert!(v.get(k).is_some(), "{k} in {v}");
            }
        }
    }
    assert!(router_lines >= 6, "{out}");
    assert_eq!(s.f.stop(T), 0);
}
