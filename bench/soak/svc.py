#!/usr/bin/env python3
"""Service fixture for bench/soak.py and bench/shutdown_stress.py.

  svc.py tcp PORT               accept and close TCP connections on 127.0.0.1:PORT
  svc.py http PORT              HTTP/1.1 on 127.0.0.1:PORT: 200 "ok PID PATH" on any GET;
                                /slow?ms=N answers after N ms
  svc.py file PATH              remove PATH, create it again, sleep (exec probe: test -e PATH)
  svc.py workers K MODE         K children `sleep 100000`; MODE failfast: exit 1 when one
                                dies; respawn: start a new one instead
Every mode reaps its own children; none ignores SIGTERM.
"""
import http.server, os, socket, subprocess, sys, threading, time


def serve_tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        c.close()


def serve_http(port):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(int(self.path.partition("ms=")[2] or "1000") / 1000)
            body = b"ok %d %s\n" % (os.getpid(), self.path.encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class S(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 128

    S(("127.0.0.1", port), H).serve_forever()


def file(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    time.sleep(0.2)
    open(path, "w").close()
    while True:
        time.sleep(3600)


def workers(k, mode):
    kids = {subprocess.Popen(["sleep", "100000"]).pid for _ in range(k)}
    print("workers", sorted(kids), flush=True)
    while True:
        pid, _ = os.wait()
        if pid not in kids:
            continue
        kids.discard(pid)
        if mode == "failfast":
            print("worker", pid, "died; failing", flush=True)
            sys.exit(1)
        kids.add(subprocess.Popen(["sleep", "100000"]).pid)


mode = sys.argv[1]
if mode == "tcp":
    serve_tcp(int(sys.argv[2]))
elif mode == "http":
    serve_http(int(sys.argv[2]))
elif mode == "file":
    file(sys.argv[2])
elif mode == "workers":
    workers(int(sys.argv[2]), sys.argv[3])
else:
    sys.exit("unknown mode " + mode)
