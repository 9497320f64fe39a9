#!/usr/bin/env python3
"""Builds the seed corpora under fuzz/corpus/<target>/ from real inputs.

    python3 fuzz/make_corpus.py        # rewrites fuzz/corpus/ (seeds only)

Sources: units/ and examples/demo/ unit files, the unit snippets of
tests/bad_units.rs, control requests valid and invalid, request heads a
browser, curl, a WebSocket client and a hostile client send, and log output
shaped like the tests' fixtures. Seed names are content hashes, as libFuzzer
names its own, so rerunning is idempotent. The fuzzers' grown corpora live in
fuzz/work/ (not committed); these seeds are read-only inputs to every run.
"""

import hashlib
import json
import re
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def unit_files():
    files = {}
    for p in sorted(list((ROOT / "units").glob("*.toml")) + list((ROOT / "examples/demo").glob("*.toml"))):
        files[p.stem] = p.read_text()
    return files


def named(name, text):
    return f"#> {name}\n{text}"


def rust_str(lit):
    """The value of a Rust string literal body (between the quotes)."""
    out, i = [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
    while i < len(lit):
        c = lit[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = lit[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == "u":
            j = lit.index("}", i)
            out.append(chr(int(lit[i + 3:j], 16)))
            i = j + 1
        elif e == "x":
            out.append(chr(int(lit[i + 2:i + 4], 16)))
            i += 4
        elif e == "\n":
            i += 2
            while i < len(lit) and lit[i] in " \t\n":
                i += 1
        else:
            raise ValueError(f"escape \\{e} in {lit!r}")
    return "".join(out)


def bad_unit_snippets():
    """The plain string literals passed to .unit(NAME, "…") in tests/bad_units.rs."""
    src = (ROOT / "tests/bad_units.rs").read_text()
    svc = '[service]\ncommand = ["true"]\n'
    out = []
    for m in re.finditer(r'\.unit\(\s*"([a-z0-9_.-]+)\.toml",\s*("(?:[^"\\]|\\.)*")', src, re.S):
        name, lit = m.group(1), m.group(2)
        out.append((name, rust_str(lit[1:-1])))
    for m in re.finditer(r'\.unit\(\s*"([a-z0-9_.-]+)\.toml",\s*&format!\("((?:[^"\\]|\\.)*)"\)', src, re.S):
        name, fmt = m.group(1), rust_str(m.group(2))
        out.append((name, fmt.replace("{SVC}", svc)))
    return out


def seeds_unit_file():
    files = unit_files()
    for name, text in files.items():
        write("unit_file", named(name, text))
    # Pairs that resolve each other's dependencies.
    for a, b in [("api", "migrate"), ("migrate", "db"), ("flowise", "postgres"), ("router", "flowise"),
                 ("postgres-setup", "postgres"), ("seed-admin", "flowise")]:
        if a in files and b in files:
            write("unit_file", named(a, files[a]) + "\0" + named(b, files[b]))
    for name, text in bad_unit_snippets():
        write("unit_file", named(name, text))
    svc = '[service]\ncommand = ["true"]\n'
    extra = [
        # A cycle over three files, and one over two.
        named("a", '[unit]\nafter = ["b"]\n' + svc) + "\0" + named("b", '[unit]\nafter = ["c"]\n' + svc)
        + "\0" + named("c", '[unit]\nrequires = ["a"]\n' + svc),
        named("a", '[unit]\nwants = ["b"]\n' + svc) + "\0" + named("b", '[unit]\nrequires = ["a"]\n' + svc),
        # Disabled unit required by an enabled one.
        named("web", '[unit]\nrequires = ["pg"]\n' + svc) + "\0"
        + named("pg", '[unit]\nprofiles = ["prod"]\n[service]\ncommand = ["postgres"]\n'),
        # Probes of every kind, with expansion.
        '[service]\ncommand = ["sleep", "${PORT}"]\n[readiness]\ntcp = "${HOST}:${PORT:-80}"\n'
        'interval = "100ms"\n[liveness]\nexec = ["true", "${EMPTY:-x}"]\nfailures = 2\n',
        '[service]\nshell = "exec sleep 1"\n[readiness]\nlog = "ready (to|for) \\\\d+ conn"\nstart_timeout = "1m"\n',
        '[service]\ntype = "notify"\ncommand = ["true"]\n[readiness]\nstart_timeout = "5s"\n',
        '[service]\ntype = "oneshot"\ncommand = ["true"]\nrestart = "always"\n[readiness]\nhttp = "http://[::1]:8080/x"\n',
        '[service]\ncommand = ["true"]\nuser = "nobody"\ngroup = 65534\n',
        '[service]\ncommand = ["true"]\nenv_file = ["-/nonexistent/env"]\nenv = { "A=B" = "1", "" = "2" }\n',
        '[service]\ncommand = ["true"]\nworking_dir = "${HOME}/x"\nstop_signal = "9"\n[log]\nfile = "/tmp/x.log"\nrotate = "daily"\n',
        # Routers.
        '[router]\nlisten = "127.0.0.1:${PORT}"\naccess_log_skip = ["/health"]\ntrust_forwarded = true\n'
        '[[router.routes]]\nprefix = "/api/"\nupstream = "http://127.0.0.1:3001"\nstrip_prefix = true\n'
        '[[router.routes]]\nprefix = "/api/"\nupstream = "https://x:1/p"\n[[router.routes]]\nprefix = "nope"\n'
        'upstream = "http://h"\nunit = "ghost"\n',
        '[router]\nlisten = "[::]:80"\nheader_timeout = "5 parsecs"\n[service]\ncommand = ["true"]\n',
        # Expansion edge cases.
        '[service]\ncommand = ["echo", "$$", "${", "${1X}", "${:-}", "$}", "${A:-${B}}", "cost $5"]\n',
        # TOML edge cases: spans on multi-byte text, bad UTF-8 escapes, deep nesting.
        '[unit]\ndescription = "café ☕ 🚀"\n[service]\ncommand = ["é", "🚀"]\nstop_timeout = "🚀"\n',
        '[service]\ncommand = ["true"]\n"é" = 1\n',
        'x = [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]\n',
        '[service]\ncommand = """\nmulti\n"""\n',
    ]
    for text in extra:
        write("unit_file", text)


def seeds_control_request():
    reqs = [
        {"cmd": "status"},
        {"cmd": "status", "units": ["web", "db"]},
        {"cmd": "logs", "lines": 10},
        {"cmd": "logs", "units": ["web"], "lines": 0, "follow": True},
        {"cmd": "start", "units": ["web"]},
        {"cmd": "stop", "units": ["web", "db"]},
        {"cmd": "restart", "units": []},
        {"cmd": "reload"},
    ]
    for r in reqs:
        write("control_request", json.dumps({"v": 1, "request": r}, separators=(",", ":")))
    write("control_request", json.dumps({"request": {"units": ["é\u2028"], "cmd": "status"}, "v": 1}, indent=2))
    bad = [
        b'{"v":1,"request":{"cmd":"selfdestruct"}}',
        b'{"v":9,"request":{"cmd":"reload"}}',
        b'{"v":1,"request":{"cmd":"reload","x":1}}',
        b'{"v":1,"request":{"cmd":"logs"}}',
        b'{"v":1,"request":{"cmd":"logs","lines":-1}}',
        b'{"v":1,"request":{"cmd":"logs","lines":18446744073709551616}}',
        b'{"v":4294967296,"request":{"cmd":"status"}}',
        b'{"v":1,"request":{"cmd":"start","units":"web"}}',
        b'{"v":1,"request":{"cmd":"status","units":["\\ud800"]}}',
        b'{"v":1,"v":1,"request":{"cmd":"status"}}',
        b'{"v":1,"request":{"cmd":"status"},"extra":true}',
        b'{"v":1,"request":["status"]}',
        b'[]',
        b'',
        b'{"v":1,"request":{"cmd":"status"}}\n{"v":1}',
        b'\xef\xbb\xbf{"v":1,"request":{"cmd":"status"}}',
    ]
    for b in bad:
        write("control_request", b)
    # Responses, as the client decodes them.
    write("control_request", b'{"v":1,"ok":false,"error":"unknown unit \\"zzz\\""}')
    write("control_request", b'{"v":1,"ok":true,"message":"reloading"}')
    write("control_request", b'{"v":1,"ok":true,"log":{"ts":"2024-01-01T00:00:00Z","unit":"web","stream":"stdout","msg":"hi"}}')
    write("control_request", b'{"v":1,"ok":true,"end":true}')
    unit = {"name": "web", "state": "running", "pid": 42, "ready": True, "restarts": 1, "since": "2024-01-01T00:00:00Z",
            "reason": None, "description": "d", "type": "simple", "critical": False, "active": True, "profiles": [],
            "requires": ["db"], "wants": [], "after": [], "command": ["sleep", "1"], "user": None, "last_exit": "exited 0",
            "readiness": "tcp 127.0.0.1:80", "liveness": None, "probe_error": None, "probe_ok_at": None,
            "status_text": None, "main_pid": None,
            "router": {"listen": "0.0.0.0:3000", "routes": ["/ -> 127.0.0.1:8080 (unit ui)"], "requests": 3,
                       "in_flight": 0, "upstream_errors": 1, "not_ready": 2}}
    write("control_request", json.dumps({"v": 1, "ok": True, "status": {"units": [unit], "shutting_down": True}}))


def seeds_router_request():
    heads = [
        "GET / HTTP/1.1\r\nHost: localhost:3000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n",
        "GET /api/v1/ping HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        "Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: a=b; c=d\r\n"
        "Sec-Fetch-Mode: cors\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\n",
        "GET /ws/socket?x=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        "GET /svc HTTP/1.1\r\nConnection: keep-alive, Upgrade, X-Secret-Hop\r\nUpgrade: h2c\r\nX-Secret-Hop: 1\r\n"
        "TE: trailers\r\nTrailer: X-Checksum\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n",
        "POST /api/v1/prediction/abc HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 12\r\n",
        "GET /api/v1/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7\r\nX-Forwarded-For: 8.8.8.8\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=1.2.3.4\r\n",
        "GET /static/app.js HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\nConnection: x-a,  x-b ,,\r\n"
        "X-A: 1\r\nX-B: 2\r\nProxy-Connection: keep-alive\r\n",
        "GET /%C3%A9/x HTTP/1.1\r\nHost: h\r\n",
        "/é/x?q=1",
        "GET http://h/abs HTTP/1.1\r\nHost: h\r\n",
        "OPTIONS * HTTP/1.1\r\n",
        "GET /api/ HTTP/1.1\r\nConnection: \x80x-secret, keep-alive\r\nX-Secret: 1\r\n",
        "GET /api/ HTTP/1.1\r\nConnection: connection, upgrade, host\r\nUpgrade: websocket\r\nHost: h\r\n",
        "GET / HTTP/1.1\r\nX-Forwarded-For: \t\r\nHost: \r\n",
    ]
    for h in heads:
        write("router_request", h.encode("utf-8", "surrogateescape") if isinstance(h, str) else h)
    write("router_request", b"GET / HTTP/1.1\r\nConnection: te\xff\r\nX-Bin: \xfe\xff\r\n")


def seeds_line_splitter():
    # [limit][chunk seed] stream
    streams = [
        b"".join(b"line %d\n" % i for i in range(1, 30)),
        b"no final newline",
        b"\n\n\n",
        b"abcdefghij\n" * 3,
        "caf\u00e9 na\u00efve \u2603 \U0001F680 ok\n".encode() * 4,
        "\U0001F680\U0001F680\U0001F680\U0001F680".encode(),
        b"crlf\r\nline\r\n",
        b"\xff\xfe\xe2\x82\n\xc3",
        b"x" * 200 + b"\n" + b"y" * 7,
        b"\x1b[31mred\x1b[0m\n\tTab\0nul\n",
    ]
    for i, s in enumerate(streams):
        for limit in (0, 4, 5, 8, 16):
            write("line_splitter", bytes([limit, (i * 37 + limit) & 0xFF]) + s)


if __name__ == "__main__":
    seeds_unit_file()
    seeds_control_request()
    seeds_router_request()
    seeds_line_splitter()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {sum(1 for _ in d.iterdir())} seeds")
