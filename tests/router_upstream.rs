//! The router's upstream side (src/router/upstream.rs) through the real
//! binary, against tests/fixtures/raw_upstream.py, an upstream that answers
//! with canned raw bytes: chunked and close-delimited bodies, HTTP/1.0 and
//! `Connection: close` answers, interim (1xx) answers, bodiless answers
//! (HEAD, 204, 304), an answer before the request body is in, malformed and
//! conflicting framing (502), bodies cut short, bytes beyond an answer, a
//! chunked upload of megabytes, and which upstream connections are reused.
//!
//! The fixture numbers its connections (`X-Conn`) and the requests on each
//! (`X-Req`), and keeps a connection open even after an answer that tells
//! the router not to reuse it: a router that reused it anyway is seen.

mod common;

use common::*;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Bound on flowinit's start and stop.
const T: Duration = Duration::from_secs(30);
/// Bound on each read from a socket.
const IO: Duration = Duration::from_secs(10);

struct Stack {
    // Declared before the temp dir: flowinit stops before its files go.
    f: Flowinit,
    _d: TempDir,
    /// The router's port.
    port: u16,
    /// The raw upstream's port.
    up: u16,
}

/// The raw upstream as unit `raw`, and a router sending every path to it.
fn raw_stack(tag: &str) -> Stack {
    let d = TempDir::new(tag);
    let (port, up) = (free_port(), free_port());
    d.unit(
        "raw",
        &format!(
            "[service]\ncommand = [\"python3\", \"{}\", \"{up}\"]\n[readiness]\ntcp = \"127.0.0.1:{up}\"\ninterval = \"100ms\"\n",
            fixture("raw_upstream.py")
        ),
    );
    d.unit(
        "router",
        &format!(
            "[router]\nlisten = \"127.0.0.1:{port}\"\nupstream_timeout = \"5s\"\naccess_log = false\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{up}\"\nunit = \"raw\"\n"
        ),
    );
    let f = Flowinit::up(&d, Opts::default());
    f.wait_state("raw", "ready");
    f.wait_state("router", "running");
    Stack { f, _d: d, port, up }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// The trailer section of a chunked body, as sent.
    trailers: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}\n{}", self.head, self.text()))
    }

    /// The upstream connection (fixture's number) that answered.
    fn conn(&self) -> u64 {
        self.header("x-conn").unwrap_or_else(|| panic!("no X-Conn in:\n{}", self.head)).parse().unwrap()
    }

    /// The number of this request on its upstream connection.
    fn req(&self) -> u64 {
        self.header("x-req").unwrap_or_else(|| panic!("no X-Req in:\n{}", self.head)).parse().unwrap()
    }
}

/// One client connection to the router, kept alive across requests; each
/// answer is read by its own framing.
struct Client(BufReader<TcpStream>);

impl Client {
    fn open(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(IO)).unwrap();
        Client(BufReader::new(s))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    fn request(&mut self, method: &str, path: &str) -> Reply {
        self.write(format!("{method} {path} HTTP/1.1\r\nHost: raw.test\r\n\r\n").as_bytes());
        self.reply(method == "HEAD")
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.0.read_line(&mut line).unwrap_or_else(|e| panic!("reading from the router: {e}"));
        assert!(n > 0, "the router closed the connection");
        line
    }

    /// A response head: the status and the head's text.
    fn head(&mut self) -> (u16, String) {
        let mut head = String::new();
        loop {
            let line = self.line();
            if line == "\r\n" {
                break;
            }
            head += &line;
        }
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head)
    }

    /// A whole response; `to_head` if it answers a HEAD.
    fn reply(&mut self, to_head: bool) -> Reply {
        let (status, head) = self.head();
        let mut reply = Reply { status, head, body: Vec::new(), trailers: String::new() };
        let chunked = reply.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if to_head || status == 204 || status == 304 || (100..200).contains(&status) {
            return reply;
        }
        if chunked {
            loop {
                let line = self.line();
                let size = line.trim_end().split(';').next().unwrap();
                let size = usize::from_str_radix(size, 16).unwrap_or_else(|e| panic!("{e}: chunk size {line:?}"));
                if size == 0 {
                    break;
                }
                let mut data = vec![0; size + 2];
                self.0.read_exact(&mut data).unwrap();
                assert_eq!(&data[size..], b"\r\n", "a chunk ends in CRLF");
                reply.body.extend_from_slice(&data[..size]);
            }
            loop {
                let line = self.line();
                if line == "\r\n" {
                    break;
                }
                reply.trailers += &line;
            }
        } else if let Some(len) = reply.header("content-length") {
            reply.body.resize(len.parse().unwrap(), 0);
            self.0.read_exact(&mut reply.body).unwrap();
        } else {
            self.0.read_to_end(&mut reply.body).unwrap();
        }
        reply
    }

    /// Everything until the router ends the connection (a close or a
    /// reset): fails if it is still open after IO.
    fn rest_until_closed(&mut self) -> Vec<u8> {
        let mut rest = self.0.buffer().to_vec();
        let len = rest.len();
        self.0.consume(len);
        let mut buf = [0u8; 4096];
        loop {
            match self.0.get_mut().read(&mut buf) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return rest,
                Err(e) => panic!("the connection was not ended ({e}); got {:?}", String::from_utf8_lossy(&rest)),
            }
        }
    }
}

/// GET on the fixture itself, not through the router.
fn direct_get(port: u16, path: &str) -> Reply {
    let mut c = Client::open(port);
    c.get(path)
}

/// Upstream connections the fixture accepted so far, this query's own
/// connection included.
fn upstream_conns(s: &Stack) -> u64 {
    direct_get(s.up, "/conns").text().parse().unwrap()
}

#[test]
fn a_chunked_response_is_decoded_and_its_connection_reused() {
    let mut s = raw_stack("upchunked");
    let mut c = Client::open(s.port);
    // The fixture sends it in pieces cut inside a size line, between CR and
    // LF, inside the data and inside the trailer section; the first chunk
    // has an extension and the second an upper-case size (1A).
    c.write(b"GET /chunked HTTP/1.1\r\nHost: raw.test\r\nTE: trailers\r\n\r\n");
    let r = c.reply(false);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "helloabcdefghijklmnopqrstuvwxyz");
    // The client asked for trailers (TE: trailers): the upstream's reach it.
    assert!(r.head.to_ascii_lowercase().contains("trailer: x-sum"), "{}", r.head);
    assert!(r.trailers.to_ascii_lowercase().starts_with("x-sum: "), "trailers: {:?}", r.trailers);
    let first = r.conn();
    // The body ended cleanly at its last chunk and trailers: the next
    // request goes on the same upstream connection.
    let r = c.get("/id");
    assert_eq!(r.text(), format!("conn={first} req=2"));
    let r = c.get("/chunked");
    assert_eq!((r.text().len(), r.conn(), r.req()), (31, first, 3));
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_close_delimited_response_is_passed_whole_and_its_connection_not_reused() {
    let mut s = raw_stack("upclose");
    let mut c = Client::open(s.port);
    let r = c.get("/close");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "until the end", "{}", r.head);
    // The client's connection is still good, and the next request needs a
    // new upstream connection.
    let next = c.get("/id");
    assert_eq!(next.status, 200, "{}", next.head);
    assert_ne!(next.conn(), r.conn(), "a close-delimited body's connection was reused");
    assert_eq!(next.req(), 1);
    // On a kept connection, the same: /id's connection serves /close, and
    // is not used again after it.
    let again = c.get("/close");
    assert_eq!(again.text(), "until the end");
    assert_eq!((again.conn(), again.req()), (next.conn(), 2));
    let after = c.get("/id");
    assert_ne!(after.conn(), again.conn(), "a close-delimited body's connection was reused");
    assert_eq!(after.req(), 1);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn an_http10_or_connection_close_answer_is_not_reused_even_when_left_open() {
    let mut s = raw_stack("uphttp10");
    let mut c = Client::open(s.port);
    for path in ["/http10", "/conn-close"] {
        let r = c.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{path}: {}", r.head);
        let next = c.get("/id");
        assert_eq!(next.status, 200, "{path}: {}", next.head);
        assert_ne!(next.conn(), r.conn(), "{path}: its upstream connection was reused");
        assert_eq!(next.req(), 1, "{path}");
    }
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn interim_responses_are_skipped_and_the_final_one_forwarded() {
    let mut s = raw_stack("upinterim");
    let mut c = Client::open(s.port);
    // The fixture sends 100 Continue, then 103 Early Hints, then 200, 50 ms
    // apart. The client reads the first head the router sends: the 200.
    let r = c.get("/interim");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "finally");
    assert!(r.header("link").is_none(), "a 103's header leaked into the final answer:\n{}", r.head);
    let next = c.get("/id");
    assert_eq!((next.conn(), next.req()), (r.conn(), 2), "the connection is reused after interim answers");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_head_answer_with_a_content_length_has_no_body_and_keeps_the_connection() {
    let mut s = raw_stack("uphead");
    let mut c = Client::open(s.port);
    // Content-Length: 1000 and no body: a router waiting for the 1000 bytes
    // would leave the next request unanswered until the read timeout.
    let r = c.request("HEAD", "/head");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-length").as_deref(), Some("1000"), "{}", r.head);
    let start = Instant::now();
    let next = c.get("/id");
    assert_eq!(next.text(), format!("conn={} req=2", r.conn()));
    assert!(start.elapsed() < Duration::from_secs(3), "the next answer took {:?}", start.elapsed());
    let full = c.get("/head");
    assert_eq!((full.body.len(), full.conn(), full.req()), (1000, r.conn(), 3));
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn no_content_and_not_modified_answers_have_no_body_and_keep_the_connection() {
    let mut s = raw_stack("up204");
    let mut c = Client::open(s.port);
    let r = c.get("/204");
    assert_eq!(r.status, 204, "{}", r.head);
    let first = r.conn();
    // The 304 says Content-Length: 1000, and has no body.
    let r = c.get("/304");
    assert_eq!(r.status, 304, "{}", r.head);
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!((r.conn(), r.req()), (first, 2));
    let r = c.get("/id");
    assert_eq!(r.text(), format!("conn={first} req=3"));
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn an_upstream_answering_before_the_body_is_in_gets_its_answer_through_and_no_more_body() {
    let mut s = raw_stack("upearly");
    let mut c = Client::open(s.port);
    let total = 8 << 20;
    let sent = 64 * 1024;
    c.write(format!("POST /early HTTP/1.1\r\nHost: raw.test\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    c.write(&vec![b'x'; sent]);
    // The rest of the body is held back until the answer is in: a router
    // that waited for the whole request before reading the answer would
    // never answer.
    let start = Instant::now();
    let r = c.reply(false);
    assert_eq!((r.status, r.text().as_str()), (413, "too large"), "{}", r.head);
    assert!(start.elapsed() < Duration::from_secs(5), "the 413 took {:?}", start.elapsed());
    // What the client sends now is not forwarded: the fixture counts the
    // body bytes that reach it until the router closes that connection.
    let _ = c.0.get_mut().write_all(&vec![b'y'; 1 << 20]);
    let received: usize = wait_for("the early upstream's count on flowinit's stdout", T, || {
        s.f.stdout().lines().find_map(|l| l.split("early: received ").nth(1)?.split_whitespace().next()?.parse().ok())
    });
    assert!(received <= sent, "the upstream got {received} body bytes; {sent} were sent before the answer");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn conflicting_or_malformed_response_framing_is_a_502_naming_the_problem() {
    let mut s = raw_stack("upbadlen");
    let mut c = Client::open(s.port);
    for (path, detail) in [
        ("/badlen", "conflicting Content-Length in the response"),
        ("/pluslen", "malformed Content-Length in the response"),
        ("/gzip", "unsupported Transfer-Encoding in the response (only chunked)"),
        ("/101", "101 Switching Protocols to a request that asked for no upgrade"),
        ("/hangup", "connection closed before a response"),
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 502, "{path}: {}\n{}", r.head, r.text());
        let j = r.json();
        assert_eq!(j["error"], "bad gateway", "{path}");
        assert_eq!(j["upstream"], format!("127.0.0.1:{}", s.up), "{path}");
        assert_eq!(j["detail"], detail, "{path}");
    }
    // The client's connection outlives its upstream's failures.
    let r = c.get("/id");
    assert_eq!((r.status, r.req()), (200, 1), "{}", r.head);
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(" 5 upstream errors"), "{details}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_chunked_answer_with_a_content_length_reaches_the_client_chunked_and_whole() {
    let mut s = raw_stack("upclchunked");
    let mut c = Client::open(s.port);
    // Content-Length: 3 beside chunked "hello": chunked wins (RFC 9112
    // §6.3), and the client must not be told 3 bytes.
    let r = c.get("/cl-chunked");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    assert_eq!(r.text(), "hello", "{}", r.head);
    // The connection is still in step: the next answer is whole too.
    let r = c.get("/id");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn bad_chunk_framing_before_anything_was_sent_is_a_502() {
    let mut s = raw_stack("upbadfirst");
    let mut c = Client::open(s.port);
    for (path, detail) in [
        ("/badchunk-first", "malformed chunk size in the response"),
        ("/http10-chunked", "Transfer-Encoding in an HTTP/1.0 response"),
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 502, "{path}: {}\n{}", r.head, r.text());
        assert_eq!(r.json()["detail"], detail, "{path}");
    }
    assert_eq!(c.get("/id").status, 200);
    let (_, details, _) = s.f.ctl(&["status", "router"]);
    assert!(details.contains(" 2 upstream errors"), "{details}");
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn an_upstream_that_does_not_speak_http_gets_a_502_at_once() {
    let mut s = raw_stack("upgarbage");
    let mut c = Client::open(s.port);
    // The fixture sends an SSH banner and keeps the connection open: the
    // router must not wait for more (upstream_timeout is 5s here).
    let start = Instant::now();
    let r = c.get("/garbage");
    assert_eq!(r.status, 502, "{}", r.head);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.starts_with("malformed response head"), "{detail}");
    assert!(start.elapsed() < Duration::from_secs(3), "the 502 took {:?}", start.elapsed());
    assert_eq!(c.get("/id").status, 200);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn a_response_cut_short_ends_the_client_connection_short() {
    let mut s = raw_stack("uptrunc");
    // Content-Length: 100, 5 bytes, close: the client gets the head and the
    // 5 bytes, then the connection ends: it must not look complete, nor
    // hang.
    let mut c = Client::open(s.port);
    c.write(b"GET /truncated HTTP/1.1\r\nHost: raw.test\r\n\r\n");
    let (status, head) = c.head();
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 100"), "{head}");
    let rest = c.rest_until_closed();
    assert_eq!(rest, b"hello");
    // Chunked, cut before the last chunk, or with a chunk size that is not
    // hex: the client must not get a last chunk either.
    for path in ["/truncated-chunked", "/badchunk"] {
        let mut c = Client::open(s.port);
        c.write(format!("GET {path} HTTP/1.1\r\nHost: raw.test\r\n\r\n").as_bytes());
        let (status, head) = c.head();
        assert_eq!(status, 200, "{path}: {head}");
        let rest = String::from_utf8_lossy(&c.rest_until_closed()).into_owned();
        assert!(rest.contains("hello"), "{path}: {rest:?}");
        assert!(!rest.ends_with("0\r\n\r\n"), "{path}: a cut body was ended as if complete: {rest:?}");
    }
    assert_eq!(s.f.stop(T), 0);
}

/// A payload of `n` bytes, not the same from one block to the next.
fn payload(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    let d = TempDir::new("sha");
    let path = d.file("payload");
    std::fs::write(&path, data).unwrap();
    #[allow(clippy::disallowed_methods)]
    let out = std::process::Command::new("sha256sum").arg(&path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_chunked_upload_of_megabytes_arrives_intact_and_keeps_the_connection() {
    let mut s = raw_stack("upupload");
    let mut c = Client::open(s.port);
    let data = payload((4 << 20) + 12_345);
    let want = sha256_hex(&data);
    // Uneven chunks, some with an extension, and a trailer.
    let mut wire = b"POST /echo-body HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let sizes = [1, 4095, 65_536, 1_000_003, 7, 300_000];
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        let ext = if i % 2 == 0 { ";ext=\"quoted\"" } else { "" };
        wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        wire.extend_from_slice(&data[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    wire.extend_from_slice(b"0\r\nX-Checksum: abc\r\n\r\n");
    c.write(&wire);
    let r = c.reply(false);
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.text());
    let j = r.json();
    assert_eq!(j["framing"], "chunked", "{j}");
    assert_eq!(j["length"], data.len(), "{j}");
    assert_eq!(j["sha256"], want.as_str(), "{j}");
    assert_eq!(j["trailers"]["x-checksum"], "abc", "the request's trailer was not passed on: {j}");
    assert!(j["headers"].get("content-length").is_none(), "{j}");
    let first = r.conn();
    // Then a body with Content-Length, on the same upstream connection.
    let data = payload(1 << 20);
    c.write(format!("POST /echo-body HTTP/1.1\r\nHost: raw.test\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes());
    c.write(&data);
    let r = c.reply(false);
    let j = r.json();
    assert_eq!((j["framing"].as_str(), j["length"].as_u64()), (Some("length"), Some(1 << 20)), "{j}");
    assert_eq!(j["sha256"], sha256_hex(&data).as_str());
    assert_eq!((r.conn(), r.req()), (first, 2));
    let r = c.get("/id");
    assert_eq!(r.text(), format!("conn={first} req=3"));
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn bytes_beyond_an_answer_keep_its_connection_from_reuse() {
    let mut s = raw_stack("upextra");
    let mut c = Client::open(s.port);
    // "okEXTRA" under Content-Length: 2, in one write: reused, the next
    // answer would be read from "EXTRA".
    let r = c.get("/extra");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    let next = c.get("/id");
    assert_eq!(next.status, 200, "{}\n{}", next.head, next.text());
    assert_ne!(next.conn(), r.conn());
    // A clean answer, then an unasked-for one 200 ms later, while the
    // connection is idle: it must be dropped, not read as the answer to the
    // next request.
    let r = c.get("/extra-late");
    assert_eq!(r.text(), "ok");
    std::thread::sleep(Duration::from_secs(1));
    let next = c.get("/id");
    assert_eq!(next.status, 200, "{}\n{}", next.head, next.text());
    assert_ne!(next.text(), "stale");
    assert_ne!(next.conn(), r.conn());
    assert_eq!(next.req(), 1);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn many_requests_on_one_client_connection_use_one_upstream_connection() {
    let mut s = raw_stack("upmany");
    let before = upstream_conns(&s);
    let mut c = Client::open(s.port);
    let mut seen = Vec::new();
    for i in 0..5 {
        seen.push(c.get("/id"));
        seen.push(c.get("/chunked"));
        seen.push(c.get("/204"));
        seen.push(c.request("HEAD", "/head"));
        seen.push(c.get("/interim"));
        assert_eq!(seen.last().unwrap().text(), "finally", "round {i}");
    }
    let conns: Vec<u64> = seen.iter().map(Reply::conn).collect();
    let reqs: Vec<u64> = seen.iter().map(Reply::req).collect();
    assert!(conns.iter().all(|&n| n == conns[0]), "{conns:?}");
    assert_eq!(reqs, (1..=25).collect::<Vec<u64>>());
    // The router's one connection, and this count's own.
    assert_eq!(upstream_conns(&s), before + 2);
    assert_eq!(s.f.stop(T), 0);
}

#[test]
fn an_upstream_answering_early_while_it_reads_the_body_gets_the_rest_of_it() {
    let mut s = raw_stack("upduplex");
    let mut c = Client::open(s.port);
    // The fixture answers at once and echoes each request chunk as it
    // comes: each piece must travel on after the answer's head, or the
    // echo never comes (and the read times out).
    c.write(b"POST /duplex HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.write(b"5\r\nfirst\r\n");
    let (status, head) = c.head();
    assert_eq!(status, 200, "{head}");
    let mut echoed = Vec::new();
    for piece in ["second", "third"] {
        let size = usize::from_str_radix(c.line().trim_end(), 16).unwrap();
        let mut data = vec![0; size + 2];
        c.0.read_exact(&mut data).unwrap();
        echoed.push(String::from_utf8_lossy(&data[..size]).into_owned());
        c.write(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
    }
    c.write(b"0\r\n\r\n");
    let size = usize::from_str_radix(c.line().trim_end(), 16).unwrap();
    let mut data = vec![0; size + 2];
    c.0.read_exact(&mut data).unwrap();
    echoed.push(String::from_utf8_lossy(&data[..size]).into_owned());
    assert_eq!(echoed, ["first", "second", "third"]);
    assert_eq!(c.line(), "0\r\n", "the echo ends");
    assert_eq!(c.line(), "\r\n");
    // Sent whole and answered whole: the upstream connection is kept.
    let first = head.lines().find_map(|l| l.strip_prefix("x-conn: ")).unwrap().trim().to_string();
    let r = c.get("/id");
    assert_eq!(r.text(), format!("conn={first} req=2"));
    assert_eq!(s.f.stop(T), 0);
}
