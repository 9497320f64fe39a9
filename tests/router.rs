//! The built-in router through the real binary and real sockets: routing,
//! strip_prefix, 503 while starting, 502 with the upstream down, SSE
//! timing, WebSocket, large streamed bodies with flat memory, header
//! hygiene, slowloris, graceful drain, a busy port at start-up, and the
//! upstream connections of a keep-alive client connection (reused, replaced
//! when the upstream closed them, closed with the client connection).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

struct Stack {
    // Declared before the temp dir: flowinit stops before its files go.
    f: Flowinit,
    _d: TempDir,
    port: u16,
}

/// A backend unit (tests/fixtures/backend.py) and a router in front of it.
fn stack(tag: &str, backend_delay: &str, extra_router: &str, extra_routes: &str) -> Stack {
    let d = TempDir::new(tag);
    let (port, be) = (free_port(), free_port());
    d.unit(
        "backend",
        &format!(
            "[service]\nshell = \"sleep {backend_delay}; exec python3 {} {be}\"\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"100ms\"\n",
            fixture("backend.py")
        ),
    );
    d.unit(
        "router",
        &format!(
            "[router]\nlisten = \"127.0.0.1:{port}\"\n{extra_router}\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"backend\"\n[[router.routes]]\nprefix = \"/svc/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"backend\"\nstrip_prefix = true\n[[router.routes]]\nprefix = \"/down/\"\nupstream = \"http://127.0.0.1:{}\"\n{extra_routes}",
            free_port()
        ),
    );
    let f = Flowinit::up(&d, Opts::default());
    Stack { f, _d: d, port }
}

impl Stack {
    fn ready(&self) {
        self.f.wait_state("backend", "ready");
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `raw` (a full request with `Connection: close`) and reads the
/// whole answer; decodes a chunked body.
fn send(port: u16, raw: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut body = all[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

fn get(port: u16, path: &str) -> Reply {
    send(port, &format!("GET {path} HTTP/1.1\r\nHost: flowstack.test\r\nConnection: close\r\n\r\n"))
}

#[test]
fn routes_503_while_starting_then_proxies_and_502s() {
    let mut s = stack("route", "1", "", "");
    wait_for("router listening", T, || TcpStream::connect(("127.0.0.1", s.port)).ok());
    let r = get(s.port, "/echo");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("2"));
    assert_eq!(r.json()["unit"], "backend");
    assert_eq!(r.json()["state"], "starting");
    s.ready();
    let r = get(s.port, "/echo/a?b=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/echo/a?b=1");
    assert_eq!(r.json()["headers"]["host"], "flowstack.test", "Host is preserved");
    let r = get(s.port, "/svc/echo?x=2");
    assert_eq!(r.json()["path"], "/echo?x=2", "strip_prefix");
    let r = get(s.port, "/down/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad gateway");
    assert_eq!(r.json()["detail"], "connection refused");
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains("answered 503 (unit not ready)") && details.contains("1 upstream errors"), "{details}");
    // The access log is written asynchronously.
    wait_for("the 503 in the access log", T, || {
        s.f.stdout().lines().any(|l| l.starts_with("router ") && l.contains("GET /echo 503")).then_some(())
    });
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn headers_hop_by_hop_dropped_and_forwarded_set() {
    let mut s = stack("headers", "0", "", "");
    s.ready();
    let r = send(
        s.port,
        "GET /echo HTTP/1.1\r\nHost: h.test\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Kept: yes\r\n\r\n",
    );
    let h = &r.json()["headers"];
    for gone in ["x-drop-me", "keep-alive", "te", "proxy-authorization", "forwarded", "x-real-ip"] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "a client's X-Forwarded-For is replaced");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "h.test");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn sse_events_arrive_one_by_one() {
    let mut s = stack("sse", "0", "", "");
    s.ready();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(c);
    let mut arrivals = Vec::new();
    let start = Instant::now();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("data: event") {
            arrivals.push(start.elapsed());
        }
        line.clear();
    }
    assert_eq!(arrivals.len(), 3);
    for w in arrivals.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(200), "events arrived together: {arrivals:?}");
    }
    assert_eq!(s.f.stop(T), 0);
}

/// Awaits `f` for at most `WS_T`, panicking with `what` past it.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WS_T, f).await.unwrap_or_else(|_| panic!("timed out after {WS_T:?}: {what}"))
}

const WS_T: Duration = Duration::from_secs(10);

/// What the WebSocket upstream saw: the request target, the request
/// headers, and the client's close frame.
type WsSeen = (String, tokio_tungstenite::tungstenite::http::HeaderMap, Option<ws::CloseFrame>);

mod ws {
    pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    pub use tokio_tungstenite::tungstenite::Message;
}

/// A WebSocket echo server on `listener` for one connection: greets with
/// "welcome" right after the handshake, echoes text and binary messages
/// (tungstenite answers pings and the close), and returns what it saw.
async fn ws_echo_upstream(listener: tokio::net::TcpListener) -> WsSeen {
    use futures_util::{SinkExt, StreamExt};
    let (tcp, _) = listener.accept().await.unwrap();
    let mut request = None;
    // The callback's signature (its Err is an HTTP response) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                    mut res: tokio_tungstenite::tungstenite::handshake::server::Response| {
        request = Some((req.uri().to_string(), req.headers().clone()));
        if let Some(p) = req.headers().get("sec-websocket-protocol") {
            res.headers_mut().insert("sec-websocket-protocol", p.clone());
        }
        Ok(res)
    };
    let mut conn = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
    let (target, headers) = request.unwrap();
    conn.send(ws::Message::text("welcome")).await.unwrap();
    let mut close = None;
    while let Some(msg) = conn.next().await {
        match msg.unwrap() {
            m @ (ws::Message::Text(_) | ws::Message::Binary(_)) => conn.send(m).await.unwrap(),
            ws::Message::Close(frame) => close = frame,
            _ => {}
        }
    }
    (target, headers, close)
}

#[test]
fn websocket_echo_through_the_router() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use ws::Message;
    // The upstream and the client run here; the real binary is between them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let up = listener.local_addr().unwrap().port();
    let route = format!("[[router.routes]]\nprefix = \"/ws\"\nupstream = \"http://127.0.0.1:{up}\"\n");
    let mut s = stack("ws", "0", "", &route);
    s.ready();
    let upstream = rt.spawn(ws_echo_upstream(listener));
    let port = s.port;

    let (target, headers, close) = rt.block_on(async {
        let mut req = format!("ws://127.0.0.1:{port}/ws/chat?room=1").into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
        let key = req.headers()["sec-websocket-key"].clone();
        // connect_async checks the 101, Upgrade, Connection and
        // Sec-WebSocket-Accept (derived from our key by the upstream).
        let (mut c, res) = within("the upgrade", tokio_tungstenite::connect_async(req)).await.unwrap();
        assert_eq!(res.status(), 101);
        assert_eq!(res.headers()["sec-websocket-protocol"], "chat.v1", "the upstream's 101 headers pass");
        assert_eq!(
            within("welcome", c.next()).await.unwrap().unwrap(),
            Message::text("welcome"),
            "the upstream speaks first"
        );
        for m in ["one", "two", "three"] {
            within("send", c.send(Message::text(m))).await.unwrap();
            assert_eq!(within("echo", c.next()).await.unwrap().unwrap(), Message::text(m));
        }
        // Larger than one read of either side: many TCP segments.
        let blob: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        within("send", c.send(Message::binary(blob.clone()))).await.unwrap();
        assert_eq!(within("echo", c.next()).await.unwrap().unwrap(), Message::binary(blob));
        within("ping", c.send(Message::Ping(b"still there?"[..].into()))).await.unwrap();
        assert_eq!(within("pong", c.next()).await.unwrap().unwrap(), Message::Pong(b"still there?"[..].into()));
        // A plain request through the same router while the tunnel is open;
        // the WebSocket then still works.
        let r =
            within("a plain GET beside the WebSocket", tokio::task::spawn_blocking(move || get(port, "/echo/beside")))
                .await
                .unwrap();
        assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/echo/beside")));
        within("send", c.send(Message::text("after"))).await.unwrap();
        assert_eq!(within("echo", c.next()).await.unwrap().unwrap(), Message::text("after"));
        // Close: the upstream's answer comes back, then the tunnel ends.
        let bye = ws::CloseFrame { code: ws::CloseCode::Normal, reason: "bye".into() };
        within("close", c.close(Some(bye.clone()))).await.unwrap();
        assert_eq!(within("the close answer", c.next()).await.unwrap().unwrap(), Message::Close(Some(bye)));
        assert!(within("the end of the tunnel", c.next()).await.is_none());
        let (target, headers, close) = within("the upstream's end", upstream).await.unwrap();
        assert_eq!(headers["sec-websocket-key"], key);
        (target, headers, close)
    });
    assert_eq!(target, "/ws/chat?room=1", "the path and query reach the upstream");
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    assert_eq!(h("upgrade"), "websocket", "{headers:?}");
    assert!(h("connection").split(',').any(|t| t.trim() == "upgrade"), "{headers:?}");
    assert_eq!(h("sec-websocket-version"), "13");
    assert_eq!(h("sec-websocket-protocol"), "chat.v1");
    assert_eq!(h("host"), format!("127.0.0.1:{port}"), "Host is preserved");
    assert_eq!(h("x-forwarded-for"), "127.0.0.1");
    assert_eq!(h("x-forwarded-proto"), "http");
    let close = close.expect("the upstream got the client's close frame");
    assert_eq!((close.code, close.reason.as_str()), (ws::CloseCode::Normal, "bye"));

    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains("2 served, 0 in flight, 0 upstream errors"), "{details}");
    wait_for("the upgrade and the plain GET in the access log", T, || {
        let out = s.f.stdout();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("router ")).collect();
        let to = format!("-> 127.0.0.1:{up}");
        let logged = lines.iter().any(|l| l.contains("GET /ws/chat 101 ") && l.ends_with(&to));
        (logged && lines.iter().any(|l| l.contains("GET /echo/beside 200"))).then_some(())
    });
    assert_eq!(s.f.stop(T), 0);
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()))
        .unwrap()
}

#[test]
fn hundred_mib_each_way_streams_with_flat_memory() {
    let mut s = stack("big", "0", "", "");
    s.ready();
    let before = rss_kib(s.f.pid);
    // Upload 100 MiB with Content-Length, read back the byte count.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let size = 100 << 20;
    c.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let block = vec![7u8; 1 << 20];
    let mut peak = before;
    for i in 0..100 {
        c.write_all(&block).unwrap();
        if i % 10 == 0 {
            peak = peak.max(rss_kib(s.f.pid));
        }
    }
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(&format!("\"received\": {size}")), "{answer}");
    // Download 100 MiB, reading slowly at first.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET /download?mb=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let mut reads = 0;
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        reads += 1;
        if reads == 10 {
            std::thread::sleep(Duration::from_millis(500));
            peak = peak.max(rss_kib(s.f.pid));
        }
        if reads % 200 == 0 {
            peak = peak.max(rss_kib(s.f.pid));
        }
    }
    assert!(total > 100 << 20, "got {total} bytes");
    assert!(peak < before + 30 * 1024, "flowinit buffered: RSS {before} KiB -> peak {peak} KiB");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn slowloris_is_cut_off_and_others_still_served() {
    let mut s = stack("slowloris", "0", "header_timeout = \"1s\"", "");
    s.ready();
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(8), "the slow client was not cut off ({waited:?})");
    assert_eq!(get(s.port, "/echo").status, 200);
    // Oversized headers are refused, not buffered.
    let big = format!("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(200_000));
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let _ = c.write_all(big.as_bytes());
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn the_header_clock_waits_for_answers_and_closes_idle_connections() {
    let mut s = stack("clocks", "0", "header_timeout = \"1s\"\nupstream_timeout = \"2s\"", "");
    s.ready();
    let mut c = KeepAlive::open(s.port);
    // Answers that take longer than header_timeout are not cut off: the
    // header clock only runs while the router waits for a request head.
    let r = c.get("/slow?ms=1300");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slow done"[..]));
    let r = c.get("/slow?ms=1300");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slow done"[..]), "second slow answer on the same connection");
    // An exchange that outlasts upstream_timeout gets its 502, and the
    // connection goes on serving.
    let r = c.get("/slow?ms=4000");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["detail"], "no response within 2s");
    assert_eq!(c.get("/echo/after").status, 200);
    // Idle, the connection is closed once header_timeout has passed.
    let idle = Instant::now();
    let mut rest = Vec::new();
    let n = c.0.read_to_end(&mut rest).unwrap();
    let waited = idle.elapsed();
    assert_eq!(n, 0, "nothing more was sent");
    assert!(waited > Duration::from_millis(500), "closed too soon: {waited:?}");
    assert!(waited < Duration::from_secs(8), "not closed: {waited:?}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn graceful_drain_lets_a_slow_request_finish() {
    let mut s = stack("drain", "0", "stop_timeout = \"5s\"", "");
    s.ready();
    let port = s.port;
    let slow = std::thread::spawn(move || get(port, "/slow?ms=1500"));
    wait_for("slow request in flight", T, || s.f.ctl(&["status", "router"]).1.contains("1 in flight").then_some(()));
    s.f.signal(libc::SIGTERM);
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"slow done");
    assert_eq!(s.f.wait_exit(T).0, 0);
    let err = s.f.stderr();
    let router_stopped = err.find("unit router stopped").unwrap();
    let backend_stopping = err.find("unit backend: stopping").unwrap();
    assert!(router_stopped < backend_stopping, "the backend must outlive the router's drain:\n{err}");
}

#[test]
fn busy_port_is_a_start_up_error() {
    let d = TempDir::new("busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    d.unit("app", "[service]\nshell = \"touch {dir}/ran; exec sleep 1000\"\n");
    d.unit("router", &format!("[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n"));
    let mut f = Flowinit::up(&d, Opts::default());
    let (code, _) = f.wait_exit(T);
    assert_eq!(code, 2);
    assert!(
        f.stderr().contains(&format!(
            "router.toml:2:10: unit router: cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{}",
        f.stderr()
    );
    assert!(!d.file("ran").exists());
}

#[test]
fn moving_listen_down_a_line_is_not_a_change_on_reload() {
    let d = TempDir::new("relisten");
    let port = free_port();
    let text = format!("[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n");
    d.unit("router", &text);
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("router", "running");
    d.unit("router", &format!("# the public port\n{text}"));
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "added: none; removed: none; changed: none; unchanged: 1");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn bad_hosts_are_400_and_connection_cannot_strip_host() {
    let mut s = stack("hosts", "0", "", "");
    s.ready();
    for (raw, why) in [
        (
            "GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            "more than one Host header",
        ),
        ("GET /echo HTTP/1.1\r\nHost: a.example b\r\nConnection: close\r\n\r\n", "invalid Host header"),
        ("GET /echo HTTP/1.1\r\nHost: a.example/x\r\nConnection: close\r\n\r\n", "invalid Host header"),
    ] {
        let r = send(s.port, raw);
        // The router's own answer: the request never reached the backend.
        assert_eq!(r.status, 400, "{raw:?}: {}", r.head);
        assert_eq!(r.json()["error"], why, "{raw:?}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{raw:?}");
    }
    let r = send(
        s.port,
        "GET /echo HTTP/1.1\r\nHost: h.test:3000\r\nConnection: close, Host, X-Forwarded-Host\r\nX-Drop-Me: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let h = &r.json()["headers"];
    assert_eq!(h["host"], "h.test:3000", "Connection named Host: {h}");
    assert_eq!(h["x-forwarded-host"], "h.test:3000", "{h}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn underscored_headers_are_dropped_before_forwarding() {
    let mut s = stack("underscore", "0", "", "");
    s.ready();
    let r = send(
        s.port,
        "GET /echo HTTP/1.1\r\nHost: h.test\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom: 1\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let h = &r.json()["headers"];
    assert!(h.get("x_forwarded_for").is_none() && h.get("x_custom").is_none(), "{h}");
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_malformed_client_chunk_is_a_400_not_an_upstream_error() {
    let mut s = stack("badclientchunk", "0", "", "");
    s.ready();
    let r = send(
        s.port,
        "POST /echo HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    assert_eq!(r.json()["error"], "bad request body");
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(" 0 upstream errors"), "{details}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_huge_method_is_refused_and_not_logged_whole() {
    let mut s = stack("hugemethod", "0", "", "");
    s.ready();
    let method = "A".repeat(70_000);
    let r = send(s.port, &format!("{method} /echo HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n"));
    assert_eq!(r.status, 501, "{}", r.head);
    assert_eq!(r.json()["error"], "unknown method");
    // The longest registered method (17 characters) is still proxied (the
    // backend answers it with a 501 of its own).
    let r = send(s.port, "UPDATEREDIRECTREF /echo HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n");
    assert!(!String::from_utf8_lossy(&r.body).contains("unknown method"), "{}", r.head);
    let lines = wait_for("both access log lines", T, || {
        let out = s.f.stdout();
        let refused = out.lines().find(|l| l.contains(" /echo 501 ") && l.contains("AAAA"))?.to_string();
        let proxied = out.lines().find(|l| l.contains(" UPDATEREDIRECTREF /echo "))?.to_string();
        Some((refused, proxied))
    });
    assert!(lines.0.len() < 200, "{} bytes: {}", lines.0.len(), &lines.0[..200]);
    assert!(lines.0.ends_with("-> -"), "{}", lines.0);
    assert!(lines.1.contains("-> 127.0.0.1:"), "{}", lines.1);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn request_smuggling_is_refused_or_reframed() {
    let mut s = stack("smuggle", "0", "", "");
    s.ready();
    // CL.TE: whatever the router does, the backend must never see a request
    // it did not forward as one, nor Content-Length and chunking together.
    let r = send(
        s.port,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.status == 400 || r.status == 200, "{}", r.head);
    if r.status == 200 {
        let h = &r.json()["headers"];
        assert!(h.get("content-length").is_none() || h.get("transfer-encoding").is_none(), "{h}");
    }
    // Unknown transfer-codings are refused, not silently dropped.
    let r = send(
        s.port,
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 501, "{}", r.head);
    // Two different Content-Lengths are refused.
    let r = send(
        s.port,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    // The backend saw no smuggled request.
    assert!(!s.f.stdout().contains("/echo/smuggled"), "{}", s.f.stdout());
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn an_upgrade_to_a_silent_upstream_gets_a_502_in_time() {
    // An upstream that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let extra = format!("[[router.routes]]\nprefix = \"/silent/\"\nupstream = \"http://127.0.0.1:{port}\"\n");
    let mut s = stack("silentup", "0", "upstream_timeout = \"1s\"", &extra);
    s.ready();
    for (what, req) in [
        ("plain", "GET /silent/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("upgrade", "GET /silent/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n"),
    ] {
        let start = Instant::now();
        let r = send(s.port, req);
        assert_eq!(r.status, 502, "{what}: {}", r.head);
        assert_eq!(r.json()["detail"], "no response within 1s", "{what}");
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
    }
    drop(silent);
    assert_eq!(s.f.stop(T), 0);
}

/// Upstreams (tests/fixtures/keepalive_upstream.py) `a` and `b` (idle
/// connections kept), `idle` (closes them after 300 ms) and `rude` (closes
/// each connection after one answer), behind /a/, /b/, /idle/ and /rude/.
fn keepalive_stack(tag: &str) -> Stack {
    let d = TempDir::new(tag);
    let port = free_port();
    let mut routes = String::new();
    for (name, idle) in [("a", "60"), ("b", "60"), ("idle", "0.3"), ("rude", "0"), ("drop", "-1")] {
        let up = free_port();
        d.unit(
            name,
            &format!(
                "[service]\ncommand = [\"python3\", \"{}\", \"{up}\", \"{name}\", \"{idle}\"]\n[readiness]\ntcp = \"127.0.0.1:{up}\"\ninterval = \"100ms\"\n",
                fixture("keepalive_upstream.py")
            ),
        );
        routes += &format!(
            "[[router.routes]]\nprefix = \"/{name}/\"\nupstream = \"http://127.0.0.1:{up}\"\nunit = \"{name}\"\n"
        );
    }
    d.unit("router", &format!("[router]\nlisten = \"127.0.0.1:{port}\"\naccess_log = false\n{routes}"));
    let f = Flowinit::up(&d, Opts::default());
    for name in ["a", "b", "idle", "rude", "drop"] {
        f.wait_state(name, "ready");
    }
    Stack { f, _d: d, port }
}

/// One client connection kept alive across requests.
struct KeepAlive(BufReader<TcpStream>);

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        KeepAlive(BufReader::new(s))
    }

    /// GET `path` on this connection; the answer must have a Content-Length.
    fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: ka.test\r\n\r\n"))
    }

    fn post(&mut self, path: &str, body: &str) -> Reply {
        let len = body.len();
        self.send(format!("POST {path} HTTP/1.1\r\nHost: ka.test\r\nContent-Length: {len}\r\n\r\n{body}"))
    }

    fn send(&mut self, request: String) -> Reply {
        self.0.get_mut().write_all(request.as_bytes()).unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "connection closed after: {head}");
            if line == "\r\n" {
                break;
            }
            head += &line;
        }
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut reply = Reply { status, head, body: Vec::new() };
        let len: usize = reply.header("content-length").expect("a Content-Length").parse().unwrap();
        reply.body.resize(len, 0);
        self.0.read_exact(&mut reply.body).unwrap();
        reply
    }
}

#[test]
fn upstreams_closing_idle_keepalive_connections_are_reconnected() {
    let mut s = keepalive_stack("kaclose");
    let mut c = KeepAlive::open(s.port);
    // An upstream that closes idle connections (Node's keep-alive timeout).
    let first = c.get("/idle/x").json();
    assert_eq!(first["name"], "idle");
    std::thread::sleep(Duration::from_secs(1));
    let r = c.get("/idle/x");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let second = r.json();
    assert_ne!(second["port"], first["port"], "the closed connection was replaced");
    let third = c.get("/idle/x").json();
    assert_eq!((&third["port"], &third["n"]), (&second["port"], &serde_json::json!(2)), "and reused");
    // An upstream that closes each connection right after its answer.
    for i in 0..20 {
        let r = c.get("/rude/x");
        assert_eq!(r.status, 200, "request {i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["n"], 1);
    }
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(" 0 upstream errors"), "{details}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_request_lost_on_a_kept_connection_is_sent_again_only_if_idempotent() {
    let mut s = keepalive_stack("kadrop");
    let mut c = KeepAlive::open(s.port);
    // `drop` closes a connection under its second request, unanswered.
    let first = c.get("/drop/1").json();
    assert_eq!(first["n"], 1);
    let r = c.get("/drop/2");
    assert_eq!(r.status, 200, "a GET is sent again: {}", String::from_utf8_lossy(&r.body));
    let again = r.json();
    assert_eq!(again["n"], 1, "on a new connection");
    assert_ne!(again["port"], first["port"]);
    // That new connection is kept; a POST with a body dropped on it is not
    // sent twice: the client gets the 502.
    let r = c.post("/drop/3", "pay once");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(" 1 upstream errors"), "{details}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_request_sent_on_an_idle_connection_as_the_router_stops_is_answered() {
    let mut s = keepalive_stack("kagrace");
    let mut c = KeepAlive::open(s.port);
    assert_eq!(c.get("/a/1").status, 200);
    s.f.signal(libc::SIGTERM);
    // The listener closes first; the idle connection is still there.
    wait_for("the listener closed", T, || TcpStream::connect(("127.0.0.1", s.port)).is_err().then_some(()));
    let r = c.get("/a/2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{}", r.head);
    let mut rest = Vec::new();
    c.0.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "then the router closes the connection");
    assert_eq!(s.f.wait_exit(T).0, 0);
}

#[test]
fn one_client_connection_to_two_upstreams_keeps_a_connection_to_each() {
    let mut s = keepalive_stack("katwo");
    let mut c = KeepAlive::open(s.port);
    let seen: Vec<serde_json::Value> =
        ["/a/1", "/b/1", "/a/2", "/b/2", "/a/3"].iter().map(|p| c.get(p).json()).collect();
    let names: Vec<&str> = seen.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "a", "b", "a"]);
    let n: Vec<u64> = seen.iter().map(|v| v["n"].as_u64().unwrap()).collect();
    assert_eq!(n, [1, 1, 2, 2, 3], "each upstream connection is reused: {seen:?}");
    assert_eq!(seen[0]["port"], seen[4]["port"]);
    assert_eq!(seen[1]["port"], seen[3]["port"]);
    assert_eq!(s.f.stop(T), 0);
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn upstream_connections_close_with_their_client_connection() {
    let mut s = keepalive_stack("kafds");
    let mut warm = KeepAlive::open(s.port);
    assert_eq!(warm.get("/a/warm").status, 200);
    drop(warm);
    let pid = s.f.pid;
    let before = wait_for("the warm-up connections closed", T, || {
        let n = open_fds(pid);
        std::thread::sleep(Duration::from_millis(200));
        (open_fds(pid) == n).then_some(n)
    });
    let mut clients: Vec<KeepAlive> = (0..20).map(|_| KeepAlive::open(s.port)).collect();
    for c in &mut clients {
        assert_eq!(c.get("/a/x").status, 200);
    }
    let open = open_fds(pid);
    assert!(open >= before + 40, "20 client and 20 upstream connections: {before} -> {open} fds");
    drop(clients);
    wait_for("flowinit back to its fds before the clients", T, || (open_fds(pid) <= before).then_some(()));
    assert_eq!(s.f.stop(T), 0);
}

/// The router unit of `reload_stack`: `/` to the backend, and for each `k`
/// in `extra` a route `/rK/` (prefix stripped); upstream_timeout varies
/// with them, so each version differs in more than its routes.
fn reload_router(listen: u16, be: u16, extra: &[usize]) -> String {
    let mut text = format!(
        "[router]\nlisten = \"127.0.0.1:{listen}\"\naccess_log = false\nupstream_timeout = \"{}s\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"backend\"\n",
        10 + extra.len()
    );
    for k in extra {
        text += &format!(
            "[[router.routes]]\nprefix = \"/r{k}/\"\nupstream = \"http://127.0.0.1:{be}\"\nstrip_prefix = true\n"
        );
    }
    text
}

/// A backend and a router whose unit file the test rewrites.
fn reload_stack(tag: &str) -> (Stack, u16) {
    let d = TempDir::new(tag);
    let (port, be) = (free_port(), free_port());
    d.unit(
        "backend",
        &format!(
            "[service]\ncommand = [\"python3\", \"{}\", \"{be}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"100ms\"\n",
            fixture("backend.py")
        ),
    );
    d.unit("router", &reload_router(port, be, &[]));
    let f = Flowinit::up(&d, Opts::default());
    let s = Stack { f, _d: d, port };
    s.ready();
    s.f.wait_state("router", "running");
    (s, be)
}

/// GET `path` on a fresh connection: the status, or what went wrong.
fn try_get(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&all);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no answer: {head:?}"))
}

#[test]
fn reloads_reconfigure_the_router_without_refusing_a_connection() {
    let (s, be) = reload_stack("reconfigure");
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let (stop, made) = (std::sync::Arc::new(AtomicBool::new(false)), std::sync::Arc::new(AtomicU32::new(0)));
    let (port, flag, count) = (s.port, stop.clone(), made.clone());
    let client = std::thread::spawn(move || {
        let mut failures = Vec::new();
        while !flag.load(Relaxed) {
            match try_get(port, "/echo") {
                Ok(200) => {}
                other => failures.push(format!("{other:?}")),
            }
            count.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
        failures
    });
    let mut extra = Vec::new();
    for k in 0..20 {
        extra.push(k);
        s._d.unit(&format!("extra{k}"), "[service]\ncommand = [\"sleep\", \"1000\"]\n");
        s._d.unit("router", &reload_router(s.port, be, &extra));
        let before = made.load(Relaxed);
        let (code, out, err) = s.f.ctl(&["reload"]);
        assert_eq!(code, 0, "reload {k}: {out}{err}");
        assert!(out.contains("changed: router"), "reload {k}: {out}");
        // The new route answers (the router may take a moment to get it).
        let path = format!("/r{k}/echo");
        wait_for(&format!("route /r{k}/"), T, || (try_get(s.port, &path) == Ok(200)).then_some(()));
        // Requests keep coming in between the reloads.
        wait_for("the client's next requests", T, || (made.load(Relaxed) >= before + 2).then_some(()));
    }
    stop.store(true, Relaxed);
    let failures = client.join().unwrap();
    let total = made.load(Relaxed);
    assert!(failures.is_empty(), "{} of {total} requests failed: {failures:?}", failures.len());
    let router = s.f.wait_state("router", "running");
    assert_eq!(router["restarts"], 0, "{router}");
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains("/r19/"), "{details}");
    let mut s = s;
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_listen_change_moves_the_router_and_closes_the_old_port() {
    let (mut s, be) = reload_stack("relisten");
    let old = s.port;
    // A keep-alive connection on the old port, open across the move.
    let mut kept = TcpStream::connect(("127.0.0.1", old)).unwrap();
    kept.set_read_timeout(Some(T)).unwrap();
    let mut kept_reader = BufReader::new(kept.try_clone().unwrap());
    let ask = |w: &mut TcpStream, r: &mut BufReader<TcpStream>| {
        w.write_all(b"GET /echo HTTP/1.1\r\nHost: h.test\r\n\r\n").unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        status
    };
    assert!(ask(&mut kept, &mut kept_reader).contains(" 200 "));
    // A busy address refuses the reload and changes nothing.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    s._d.unit("router", &reload_router(busy_port, be, &[]));
    let (code, out, err) = s.f.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("router.toml:2:") && err.contains(&format!("cannot listen on 127.0.0.1:{busy_port}")),
        "{err}"
    );
    assert_eq!(try_get(old, "/echo"), Ok(200));
    drop(busy);
    let new = free_port();
    s._d.unit("router", &reload_router(new, be, &[1]));
    let (code, out, err) = s.f.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(try_get(new, "/r1/echo"), Ok(200));
    wait_for("the old port to close", T, || try_get(old, "/echo").is_err().then_some(()));
    assert!(try_get(old, "/echo").unwrap_err().contains("refused"));
    // The connection accepted on the old socket still gets answers.
    assert!(ask(&mut kept, &mut kept_reader).contains(" 200 "));
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(&format!("listen:     127.0.0.1:{new}")), "{details}");
    s.port = new;
    assert_eq!(s.f.stop(T), 0);
}

/// Raises this test process's soft RLIMIT_NOFILE to its hard limit (the
/// flood below needs more than 1024 fds here).
fn raise_own_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// What one flood connection has seen so far: None while nothing came
/// (held by the router), Some(true) for the router's 503 or a close.
fn answered(s: &mut TcpStream) -> Option<bool> {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => Some(true),
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503 ")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(true),
        Err(e) => panic!("reading a flood connection: {e}"),
    }
}

#[test]
fn a_connection_flood_leaves_pid1_its_fds_and_gets_503s() {
    assert!(raise_own_nofile() >= 2400, "the test needs RLIMIT_NOFILE >= 2400");
    let d = TempDir::new("flood");
    let (port, be) = (free_port(), free_port());
    d.unit(
        "backend",
        &format!(
            "[unit]\ncritical = true\n[service]\ncommand = [\"python3\", \"{}\", \"{be}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"100ms\"\n[liveness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nfailures = 1\n",
            fixture("backend.py")
        ),
    );
    d.unit(
        "router",
        &format!("[router]\nlisten = \"127.0.0.1:{port}\"\naccess_log = false\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"backend\"\n"),
    );
    // 1024 fds: the default limit is (1024 - 256) / 2 = 384 connections.
    let opts = Opts { pid1: true, wrap: &["prlimit", "--nofile=1024:1024"], ..Opts::default() };
    let mut f = Flowinit::up(&d, opts);
    f.wait_state("backend", "ready");
    f.wait_state("router", "running");
    let mut flood: Vec<TcpStream> = (0..1100)
        .map(|i| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("flood connection {i}: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut seen = vec![None; flood.len()];
    let (held, refused) = wait_for("the connections over the limit to be answered", T, || {
        for (s, seen) in flood.iter_mut().zip(seen.iter_mut()).filter(|(_, seen)| seen.is_none()) {
            *seen = answered(s);
        }
        let held = seen.iter().filter(|s| s.is_none()).count();
        (held <= 384).then(|| (held, seen.iter().filter(|s| **s == Some(true)).count()))
    });
    assert_eq!(held + refused, flood.len(), "every answer was a 503 or a close: {seen:?}");
    assert!(held >= 300, "the router holds its {held} connections");
    // Hold the flood for ten liveness intervals: the supervisor keeps
    // answering, probing and its reserve of fds.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let (code, out, err) = f.ctl(&["status", "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(open_fds(f.pid) < 1024 - 256, "flowinit holds {} fds", open_fds(f.pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more over the limit: a quick 503, never a hang.
    let start = Instant::now();
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    let _ = extra.read_to_end(&mut all);
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(all.is_empty() || text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.is_empty() || (text.contains("retry-after: 2") && text.contains("connection: close")), "{text}");
    assert!(took < Duration::from_secs(4), "the answer over the limit took {took:?}");
    assert!(f.try_exit().is_none(), "flowinit exited: {}", f.stderr());
    let backend = f.wait_state("backend", "ready");
    assert_eq!(backend["restarts"], 0, "{backend}");
    drop(flood);
    let ok = wait_for("a normal request after the flood", Duration::from_secs(5), || {
        let r = get(port, "/echo");
        (r.status == 200).then_some(r)
    });
    assert_eq!(ok.json()["path"], "/echo");
    eprintln!("flood: {held} held, {refused} answered 503 or closed; one more over the limit answered in {took:?}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn out_of_fds_the_router_backs_off_logs_once_and_recovers() {
    assert!(raise_own_nofile() >= 2400, "the test needs RLIMIT_NOFILE >= 2400");
    let d = TempDir::new("emfile");
    let (port, be) = (free_port(), free_port());
    d.unit(
        "backend",
        &format!(
            "[service]\ncommand = [\"python3\", \"{}\", \"{be}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ready\"\ninterval = \"100ms\"\n",
            fixture("backend.py")
        ),
    );
    // A limit above what 1024 fds allow: the router runs out of fds first.
    d.unit(
        "router",
        &format!("[router]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 5000\naccess_log = false\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\n"),
    );
    let opts = Opts { pid1: true, wrap: &["prlimit", "--nofile=1024:1024"], ..Opts::default() };
    let mut f = Flowinit::up(&d, opts);
    f.wait_state("backend", "ready");
    f.wait_log("max_connections = 5000 is more than the fd limit allows (384", T);
    let flood: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    f.wait_log("cannot accept connections: Too many open files", T);
    // Backing off, it tries again a few times a second: still one line.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(f.try_exit().is_none(), "flowinit exited: {}", f.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(f.stderr().matches("cannot accept connections").count(), 1, "{}", f.stderr());
    drop(flood);
    let ok = wait_for("a normal request after the flood", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()?;
        let r = get(port, "/echo");
        (r.status == 200).then_some(r)
    });
    assert_eq!(ok.json()["path"], "/echo");
    f.wait_log("accepting connections again", T);
    assert_eq!(f.stop(T), 0);
}
