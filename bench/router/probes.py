#!/usr/bin/env python3
"""CPU cost of flowinit's probes (started by bench/probes.sh).

Three units dirs of 50 `sleep` services each:
  http   [readiness] http + [liveness] http, interval = "500ms"
  tcp    [readiness] tcp  + [liveness] tcp,  interval = "500ms"
  none   no probes (idle baseline: flowinit should use 0 ticks)
against one always-up local server (bench/router/probe_server.py) that
counts the attempts it sees. For each: start flowinit, wait until every
unit is ready (`flowinit status` exits 0), then read utime+stime of flowinit
from /proc/PID/stat before and after PROBE_SECS (60) seconds.

Environment: FLOWINIT, PROBE_SECS (60), PROBE_UNITS (50), PROBE_KINDS
("http tcp none").
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FLOWINIT = os.environ.get("FLOWINIT") or os.path.join(ROOT, "target/release/flowinit")
SECS = int(os.environ.get("PROBE_SECS", "60"))
UNITS = int(os.environ.get("PROBE_UNITS", "50"))
KINDS = os.environ.get("PROBE_KINDS", "http tcp none").split()
CLK = os.sysconf("SC_CLK_TCK")
procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def counts(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__count", timeout=5) as r:
        return json.load(r)


def unit_text(kind, port):
    text = '[service]\ncommand = ["sleep", "100000"]\n'
    target = {"http": f'http = "http://127.0.0.1:{port}/health"', "tcp": f'tcp = "127.0.0.1:{port}"'}.get(kind)
    if target:
        text += f'\n[readiness]\n{target}\ninterval = "500ms"\n'
        text += f'\n[liveness]\n{target}\ninterval = "500ms"\n'
    return text


def scenario(tmp, kind, port):
    d = os.path.join(tmp, kind)
    units = os.path.join(d, "units")
    os.makedirs(units)
    for i in range(UNITS):
        with open(os.path.join(units, f"svc{i:02}.toml"), "w") as f:
            f.write(unit_text(kind, port))
    sock = os.path.join(d, "ctl.sock")
    out = open(os.path.join(d, "out.log"), "wb")
    p = subprocess.Popen([FLOWINIT, "up", "--units", units, "--socket", sock], stdout=out, stderr=out)
    procs.append(p)
    try:
        end = time.monotonic() + 60
        while True:
            rc = subprocess.run([FLOWINIT, "status", "--quiet", "--socket", sock], capture_output=True).returncode
            if rc == 0:
                break
            if time.monotonic() > end or p.poll() is not None:
                raise SystemExit(f"{kind}: units not ready within 60 s (status exit {rc}); see {d}/out.log")
            time.sleep(0.2)
        time.sleep(1.0)  # let start-up work settle
        c0, t0, w0 = counts(port), ticks(p.pid), time.monotonic()
        time.sleep(SECS)
        c1, t1, w1 = counts(port), ticks(p.pid), time.monotonic()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    attempts = c1["connections"] - c0["connections"] if kind != "none" else 0
    used = t1 - t0
    return {
        "kind": kind,
        "ticks": used,
        "secs": w1 - w0,
        "ticks_per_s": used / (w1 - w0),
        "attempts": attempts,
        "us_per_attempt": (used / CLK * 1e6 / attempts) if attempts else None,
    }


def main():
    if not os.access(FLOWINIT, os.X_OK):
        raise SystemExit(f"no flowinit binary at {FLOWINIT}")
    tmp = tempfile.mkdtemp(prefix="flowinit-probe-bench-")
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "probe_server.py"), str(port)])
    procs.append(server)
    try:
        for _ in range(100):
            try:
                counts(port)
                break
            except OSError:
                time.sleep(0.05)
        results = []
        for kind in KINDS:
            log(f"{kind}: {UNITS} units, measuring {SECS} s once all are ready")
            results.append(scenario(tmp, kind, port))
            r = results[-1]
            log(f"  {r['ticks']} ticks")
        print()
        print(f"flowinit CPU over {SECS} s with {UNITS} ready units (clock tick = {1000 // CLK} ms)")
        print()
        print("| probes | ticks | ticks/s | probe attempts | attempts/s | CPU per attempt |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            per = "-" if r["us_per_attempt"] is None else f"{r['us_per_attempt']:.0f} µs"
            label = {"http": "http readiness + liveness 500ms", "tcp": "tcp readiness + liveness 500ms",
                     "none": "none (idle baseline)"}[r["kind"]]
            print(f"| {label} | {r['ticks']} | {r['ticks_per_s']:.2f} | {r['attempts']} |"
                  f" {r['attempts'] / r['secs']:.1f} | {per} |")
        idle = [r for r in results if r["kind"] == "none"]
        if idle:
            print()
            print(f"{'PASS' if idle[0]['ticks'] == 0 else 'FAIL'}: idle baseline uses 0 ticks ({idle[0]['ticks']})")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
