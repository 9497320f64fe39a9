//! Log forwarding through the real binary: every line once and in order,
//! prefixes, partial and over-long lines, invalid UTF-8, JSON output, the
//! optional file copy, and back-pressure when nobody reads flowinit's stdout.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The message part of `prefix | msg` lines of one unit.
fn messages(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(" | ").filter(|(p, _)| p.trim_end() == prefix).map(|(_, m)| m.to_string()))
        .collect()
}

#[test]
fn the_line_that_makes_a_unit_ready_comes_before_it_is_ready() {
    // Both on stderr (one output, one writer): the unit's line must be out
    // before flowinit's "unit db is ready", as a reader expects. Before,
    // the probe fired while the line was still being queued.
    let d = TempDir::new("ready-order");
    for i in 0..5 {
        d.unit(
            &format!("db{i}"),
            "[service]\nshell = \"echo warming up >&2; echo ready to accept connections >&2; exec sleep 1000\"\n[readiness]\nlog = \"ready to accept\"\n",
        );
    }
    let mut f = Flowinit::up(&d, Opts::default());
    for i in 0..5 {
        f.wait_log(&format!("unit db{i} is ready"), T);
    }
    let err = f.stderr();
    let lines: Vec<&str> = err.lines().collect();
    for i in 0..5 {
        let name = format!("db{i}");
        let at = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
        let line = at(&|l| messages(l, &name) == ["ready to accept connections"]).expect("the unit's line");
        let ready = at(&|l| l.ends_with(&format!("unit {name} is ready"))).expect("ready");
        assert!(line < ready, "{name} was ready before its line was out:\n{err}");
    }
    assert_eq!(f.stop(T), 0);
}

#[test]
fn two_hundred_thousand_lines_per_stream_arrive_once_in_order() {
    let d = TempDir::new("flood");
    d.unit(
        "numbered",
        &format!("[service]\ncommand = [\"{}\", \"200000\"]\nrestart = \"no\"\n", fixture("numbered.py")),
    );
    d.unit("longer-name", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit numbered exited 0", T);
    assert_eq!(f.stop(T), 0);
    for (text, tag) in [(f.stdout(), "out"), (f.stderr(), "err")] {
        let msgs = messages(&text, "numbered");
        assert_eq!(msgs.len(), 200_000, "{tag}: every line exactly once");
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(*m, format!("{tag} {i:07}"), "{tag}: line {i} out of order or mangled");
        }
        // Prefixes are padded to the widest unit name.
        assert!(text.lines().any(|l| l.starts_with("numbered    | ")), "{tag}: padded prefix");
    }
}

#[test]
fn partial_long_and_invalid_lines() {
    let d = TempDir::new("odd");
    d.unit("partial", "[service]\nshell = \"printf 'first\\\\nno newline at end'\"\nrestart = \"no\"\n");
    d.unit("long", "[service]\ncommand = [\"python3\", \"-c\", \"import sys; sys.stdout.write('a' * 1048576 + '\\\\nshort\\\\n')\"]\nrestart = \"no\"\n");
    d.unit("bytes", "[service]\ncommand = [\"python3\", \"-c\", \"import sys; sys.stdout.buffer.write(b'\\\\xff\\\\xfe ok \\\\xc3\\\\xa9\\\\n')\"]\nrestart = \"no\"\n");
    d.unit("custom", "[service]\nshell = \"echo hello\"\nrestart = \"no\"\n[log]\nprefix = \"core\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    for u in ["partial", "long", "bytes", "custom"] {
        f.wait_log(&format!("unit {u} exited 0"), T);
    }
    assert_eq!(f.stop(T), 0);
    let out = f.stdout();
    assert_eq!(messages(&out, "partial"), ["first", "no newline at end"]);
    let long = messages(&out, "long");
    assert_eq!(long.len(), 17, "1 MiB cut into 64 KiB pieces, then the short line");
    assert!(long[..16].iter().all(|l| l.len() == 65536 && l.bytes().all(|b| b == b'a')));
    assert_eq!(long[16], "short");
    assert_eq!(messages(&out, "bytes"), ["\u{FFFD}\u{FFFD} ok é"]);
    assert_eq!(messages(&out, "core"), ["hello"]);
}

#[test]
fn json_format_is_one_object_per_line() {
    let d = TempDir::new("json");
    d.unit("svc", "[service]\nshell = \"echo 'a \\\"quoted\\\" line'; echo oops >&2\"\nrestart = \"no\"\n");
    let mut f = Flowinit::up(&d, Opts { env: &[("FLOWINIT_LOG_FORMAT", "json")], ..Opts::default() });
    f.wait_log("unit svc exited 0", T);
    assert_eq!(f.stop(T), 0);
    let parse = |text: String| -> Vec<serde_json::Value> {
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
    };
    let out = parse(f.stdout());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["unit"], "svc");
    assert_eq!(out[0]["stream"], "stdout");
    assert_eq!(out[0]["msg"], "a \"quoted\" line");
    assert!(out[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')));
    let err = parse(f.stderr());
    assert!(err.iter().any(|v| v["unit"] == "svc" && v["stream"] == "stderr" && v["msg"] == "oops"));
    assert!(err.iter().any(|v| v["unit"] == "flowinit" && v["level"] == "info" && v["msg"] == "unit svc exited 0"));
}

#[test]
fn log_file_gets_a_copy_of_the_lines() {
    let d = TempDir::new("logfile");
    d.unit(
        "svc",
        "[service]\nshell = \"echo one; echo two >&2\"\nrestart = \"no\"\n[log]\nfile = \"{dir}/logs/svc.log\"\n",
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit svc exited 0", T);
    assert_eq!(f.stop(T), 0);
    let copy = std::fs::read_to_string(d.file("logs/svc.log")).unwrap();
    let mut lines: Vec<&str> = copy.lines().collect();
    lines.sort();
    assert_eq!(lines, ["one", "two"]);
}

#[test]
fn a_stalled_reader_blocks_the_service_without_losing_lines() {
    let d = TempDir::new("backpressure");
    // Writes numbered lines and records its progress every 1000 lines.
    d.unit(
        "writer",
        &format!(
            "[service]\ncommand = [\"python3\", \"-c\", \"import sys\\nfor i in range(300000):\\n    sys.stdout.write('line %07d %s\\\\n' % (i, 'x' * 100))\\n    if i % 1000 == 0:\\n        open('{}/progress', 'w').write(str(i))\\n\"]\nrestart = \"no\"\n",
            d.path().display()
        ),
    );
    // A router (with its access log on) must keep answering meanwhile.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    d.unit("router", &format!("[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n"));
    let socket = d.file("ctl.sock");
    let err = std::fs::File::create(d.file("flowinit.err")).unwrap();
    let mut child = Command::new(BIN)
        .args(["up", "--units", d.units().to_str().unwrap(), "--socket", socket.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Nobody reads: progress must stall well before the end.
    let progress = || d.read("progress").trim().parse::<u64>().unwrap_or(0);
    let stalled = wait_for("writer to stall", T, || {
        let before = progress();
        std::thread::sleep(Duration::from_millis(300));
        let after = progress();
        (after == before && after > 0).then_some(after)
    });
    assert!(stalled < 290_000, "the writer was not held back (progress {stalled})");
    let stall_started = std::time::Instant::now();
    let rss_kib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()))
            .unwrap()
    };
    // Keep nobody reading for 30 s: the writer stays blocked, memory stays
    // flat, and the control socket and the router keep answering.
    let mut peak = 0;
    while stall_started.elapsed() < Duration::from_secs(30) {
        peak = peak.max(rss_kib());
        assert!(peak < 64 * 1024, "flowinit buffered without bound: RSS {peak} KiB");
        assert_eq!(progress(), stalled, "the writer got ahead although nobody reads");
        let (code, out, _) = ctl_at(&socket, &["status", "--json"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("\"name\": \"writer\""), "{out}");
        for _ in 0..5 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::io::Write::write_all(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // Resume reading: everything arrives, in order.
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    wait_for("writer done", T, || d.read("flowinit.err").contains("unit writer exited 0").then_some(()));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = reader.join().unwrap();
    #[allow(clippy::disallowed_methods)]
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let msgs = messages(&out, "writer");
    assert_eq!(msgs.len(), 300_000);
    for (i, m) in msgs.iter().enumerate().step_by(997) {
        assert!(m.starts_with(&format!("line {i:07} ")), "line {i}: {m:?}");
    }
}
