#!/usr/bin/env python3
"""flowinit's router side by side with nginx as a reverse proxy.

Started by bench/router.sh (which installs nginx and wrk when missing).
Everything runs on 127.0.0.1, in one temporary directory, and every process
started here is stopped by its pid on exit.

Peers, all in front of the same backend (nginx, 1 worker, a fixed 200):
  direct        wrk -> backend
  nginx         wrk -> nginx (1 worker, upstream keepalive 64) -> backend
  flowinit      wrk -> flowinit router (access_log = false) -> backend
  flowinit+log  wrk -> flowinit router (default access log on) -> backend

Environment: FLOWINIT (binary), ROUTER_BENCH_SECS (10), ROUTER_BENCH_WARMUP (2),
ROUTER_BENCH_REPS (3), ROUTER_BENCH_RECORD (1: rewrite the table in
docs/router.md), ROUTER_BENCH_KEEP (1: keep the temp dir),
ROUTER_BENCH_ALT (another flowinit binary, e.g. a patched build: added as
peer "alt", access_log = false, for an A/B comparison in the same run;
ROUTER_BENCH_ALT_LOG=1 gives alt the default access log instead),
ROUTER_BENCH_PEERS (space-separated subset, e.g. "direct nginx flowinit alt").
"""

import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FLOWINIT = os.environ.get("FLOWINIT") or os.path.join(ROOT, "target/release/flowinit")
SECS = int(os.environ.get("ROUTER_BENCH_SECS", "10"))
WARMUP = int(os.environ.get("ROUTER_BENCH_WARMUP", "2"))
REPS = int(os.environ.get("ROUTER_BENCH_REPS", "3"))
RECORD = os.environ.get("ROUTER_BENCH_RECORD", "1") == "1"
KEEP = os.environ.get("ROUTER_BENCH_KEEP", "0") == "1"
LOADS = [(1, 32), (2, 256)]  # (wrk threads, connections)
CLK = os.sysconf("SC_CLK_TCK")
DOC = os.path.join(ROOT, "docs/router.md")
BEGIN, END = "<!-- router-bench:begin -->", "<!-- router-bench:end -->"

procs = []  # (name, Popen) started here, stopped by pid


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def start(name, argv, **kw):
    p = subprocess.Popen(argv, **kw)
    procs.append((name, p))
    return p


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for name, p in reversed(procs):
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {p.pid}) did not stop: SIGKILL")
            p.kill()
            p.wait()


NGINX_COMMON = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""

BACKEND = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "hello from the backend\\n"; }}
    }}
"""

PROXY = """
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""

ROUTER = """[unit]
description = "router under benchmark"

[router]
listen = "127.0.0.1:{port}"
{extra}
[[router.routes]]
prefix = "/"
upstream = "http://127.0.0.1:{backend}"
"""


def nginx(tmp, name, body):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(dir=d, body=body))
    # -p: its own prefix; -e: no write to the system error log at start.
    return start(name, ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf])


def flowinit(tmp, name, port, backend, extra, binary=FLOWINIT):
    d = os.path.join(tmp, name)
    units = os.path.join(d, "units")
    os.makedirs(units)
    with open(os.path.join(units, "router.toml"), "w") as f:
        f.write(ROUTER.format(port=port, backend=backend, extra=extra))
    out = open(os.path.join(d, "stdout.log"), "wb")
    err = open(os.path.join(d, "stderr.log"), "wb")
    sock = os.path.join(d, "ctl.sock")
    p = start(name, [binary, "up", "--units", units, "--socket", sock], stdout=out, stderr=err)
    return p, sock, os.path.join(d, "stdout.log")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(port, threads, conns, secs, sample=None):
    argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    if sample:
        # Sample the router's RSS while the connections are open.
        while p.poll() is None:
            peak = max(peak, sample())
            time.sleep(0.5)
    try:
        out, _ = p.communicate(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("wrk did not finish")
    r = {"raw": out, "rss_kib": peak}
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}"] = to_ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    r["errors"] = m.group(1).strip() if m else ""
    return r


def measure(peer, port, threads, conns, pids_fn, rss_pid=None):
    warm = wrk(port, threads, conns, WARMUP)
    pids = pids_fn() if pids_fn else []
    before = cpu_ticks(pids) if pids else 0
    r = wrk(port, threads, conns, SECS, (lambda: rss_kib(rss_pid)) if rss_pid else None)
    after = cpu_ticks(pids) if pids else 0
    r["cpu_us_per_req"] = ((after - before) / CLK * 1e6 / r["requests"]) if pids and r["requests"] else None
    r["cpu_s"] = (after - before) / CLK if pids else None
    r["warmup_requests"] = warm["requests"]
    if r["non2xx"] or r["errors"]:
        log(f"  {peer} c={conns}: {r['non2xx']} non-2xx, socket errors: {r['errors'] or 'none'}")
    return r


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, unit=""):
    return "-" if v is None else format(v, spec) + unit


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, load average {os.getloadavg()[0]:.1f} at the end"


def versions():
    nv = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", "")
    wv = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].split(" [")[0]
    return nv, wv


def main():
    if not os.access(FLOWINIT, os.X_OK):
        raise SystemExit(f"no flowinit binary at {FLOWINIT} (cargo build --release, or FLOWINIT=...)")
    tmp = tempfile.mkdtemp(prefix="flowinit-router-bench-")
    try:
        run(tmp)
    finally:
        stop_all()
        if KEEP:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    bport, nport, fport, lport = free_port(), free_port(), free_port(), free_port()
    backend = nginx(tmp, "backend", BACKEND.format(port=bport))
    proxy = nginx(tmp, "nginx-proxy", PROXY.format(port=nport, backend=bport))
    fl, fsock, _ = flowinit(tmp, "flowinit", fport, bport, "access_log = false\n")
    fl_log, lsock, llog = flowinit(tmp, "flowinit-log", lport, bport, "")
    alt_bin = os.environ.get("ROUTER_BENCH_ALT")
    aport = free_port()
    alt_extra = "" if os.environ.get("ROUTER_BENCH_ALT_LOG") == "1" else "access_log = false\n"
    alt = flowinit(tmp, "alt", aport, bport, alt_extra, alt_bin)[0] if alt_bin else None
    for port, what in ((bport, "backend nginx"), (nport, "nginx proxy"), (fport, "flowinit"),
                       (lport, "flowinit (access log)")) + (((aport, "alt"),) if alt else ()):
        wait_port(port, what)
    time.sleep(0.3)
    proxy_pids = lambda: [proxy.pid] + children(proxy.pid)  # master + worker
    peers = [
        ("direct", bport, None, None),
        ("nginx", nport, proxy_pids, None),
        ("flowinit", fport, lambda: [fl.pid], fl.pid),
        ("flowinit+log", lport, lambda: [fl_log.pid], fl_log.pid),
    ]
    if alt:
        peers.append(("alt", aport, lambda: [alt.pid], alt.pid))
    wanted = os.environ.get("ROUTER_BENCH_PEERS", "").split()
    if wanted:
        peers = [p for p in peers if p[0] in wanted or p[0] == "direct"]
    idle_rss = {p[0]: rss_kib(p[3]) for p in peers if p[3]}
    results = {}  # (peer, conns) -> [result per rep]
    for rep in range(REPS):
        log(f"repetition {rep + 1}/{REPS}")
        for threads, conns in LOADS:
            for peer, port, pids_fn, rss_pid in peers:
                r = measure(peer, port, threads, conns, pids_fn, rss_pid if conns == 256 else None)
                results.setdefault((peer, conns), []).append(r)
                cpu = fmt(r["cpu_us_per_req"], ".1f", " µs/req")
                log(f"  {peer:13} -t{threads} -c{conns:<4} {r['rps']:9.0f} req/s  p50 {r['p50']:.2f} ms"
                    f"  p99 {r['p99']:.2f} ms  cpu {cpu}")
    lines_logged = sum(1 for _ in open(llog, "rb"))
    hwms = {p[0]: rss_kib(p[3], "VmHWM") for p in peers if p[3]}
    logged_requests = sum(r["requests"] + r["warmup_requests"]
                          for (p, c), rs in results.items() if p == "flowinit+log" for r in rs)
    status = subprocess.run([FLOWINIT, "status", "router", "--socket", fsock], capture_output=True, text=True).stdout

    summary = {}
    for (peer, conns), rs in results.items():
        summary[(peer, conns)] = {
            "rps": med([r["rps"] for r in rs]),
            "p50": med([r["p50"] for r in rs]),
            "p99": med([r["p99"] for r in rs]),
            "cpu": med([r["cpu_us_per_req"] for r in rs]),
            "rss": med([r["rss_kib"] or None for r in rs]),
            "non2xx": sum(r["non2xx"] for r in rs),
        }

    rows = []
    header = ("| peer | conns | req/s | × direct | p50 | p99 | CPU/req (proxy) | flowinit RSS |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|")
    for threads, conns in LOADS:
        direct = summary[("direct", conns)]["rps"]
        for peer, *_ in peers:
            s = summary[(peer, conns)]
            rss = fmt(s["rss"] / 1024 if s["rss"] else None, ".1f", " MiB")
            rows.append(f"| {peer} | {conns} | {s['rps']:,.0f} | {s['rps'] / direct:.2f} | {s['p50']:.2f} ms"
                        f" | {s['p99']:.2f} ms | {fmt(s['cpu'], '.1f', ' µs')} | {rss} |")
    table = header + "\n" + "\n".join(rows)

    goals = []
    have = {p[0] for p in peers}
    for threads, conns in LOADS:
        if not {"flowinit", "nginx"} <= have:
            break
        f, n = summary[("flowinit", conns)], summary[("nginx", conns)]
        goals.append((f"req/s ≥ nginx at {conns} conns", f["rps"] >= n["rps"],
                      f"{f['rps']:,.0f} vs {n['rps']:,.0f}"))
        goals.append((f"CPU/req ≤ nginx at {conns} conns", f["cpu"] <= n["cpu"],
                      f"{f['cpu']:.1f} µs vs {n['cpu']:.1f} µs"))
        goals.append((f"p99 ≤ 1.2 × nginx at {conns} conns", f["p99"] <= 1.2 * n["p99"],
                      f"{f['p99']:.2f} ms vs {1.2 * n['p99']:.2f} ms"))
    rss = summary.get(("flowinit", 256), {}).get("rss") or 0
    if "flowinit" in have:
        goals.append(("RSS < 20 MiB at 256 conns", rss < 20 * 1024, f"{rss / 1024:.1f} MiB (VmHWM {hwms.get('flowinit', 0) / 1024:.1f} MiB)"))
    goal_lines = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name} ({detail})" for name, ok, detail in goals)

    nv, wv = versions()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f"{when}; {machine()}; nginx {nv}, {wv}; wrk keep-alive, {SECS} s per run after a {WARMUP} s warm-up, "
            f"median of {REPS}; load generator on the same cores.")
    logpct = 100.0 * lines_logged / logged_requests if logged_requests else 0
    rss_note = "; ".join(f"{k}: {idle_rss[k] / 1024:.1f} MiB idle before the load, peak (VmHWM) {hwms[k] / 1024:.1f} MiB"
                         for k in idle_rss)
    extra = f"RSS {rss_note}." if rss_note else ""
    if logged_requests:
        extra += (f"\nAccess log run: {lines_logged:,} lines written for {logged_requests:,} requests"
                  f" (warm-ups included; {logpct:.1f} %; lines beyond the 4096-line queue are dropped,"
                  " never waited for).")

    print()
    print(table)
    print()
    print(goal_lines)
    print()
    print(note)
    print(extra)
    print()
    print("flowinit status router (throughput instance, after the run):")
    print(status)

    if RECORD:
        record(table, goal_lines, note, extra)
    with open(os.path.join(tmp, "results.json"), "w") as f:
        json.dump({f"{p}/{c}": rs for (p, c), rs in results.items()}, f, indent=1)


def record(table, goal_lines, note, extra):
    try:
        text = open(DOC).read()
    except FileNotFoundError:
        log(f"{DOC} missing: not recorded")
        return
    if BEGIN not in text or END not in text:
        log(f"{DOC} has no {BEGIN} … {END} markers: not recorded")
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = (f"{BEGIN}\n{table}\n\nGoals (from issue 5):\n\n{goal_lines}\n\n{note}\n{extra}\n{END}")
    with open(DOC, "w") as f:
        f.write(head + block + tail)
    log(f"recorded in {DOC}")


if __name__ == "__main__":
    main()
