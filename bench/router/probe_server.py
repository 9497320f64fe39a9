#!/usr/bin/env python3
"""A tiny always-up HTTP server for bench/probes.sh.

  probe_server.py PORT

Answers every request with 200 "ok" and closes. Counts the connections it
accepted (TCP probes connect and close without a request; HTTP probes send
one GET): GET /__count answers {"connections": N, "requests": M} and is not
counted itself.
"""

import asyncio
import json
import sys

count = {"connections": 0, "requests": 0}


async def handle(reader, writer):
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            count["connections"] += 1
            return
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass
        if line.startswith(b"GET /__count "):
            body = json.dumps(count).encode()
        else:
            count["connections"] += 1
            count["requests"] += 1
            body = b"ok"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        count["connections"] += 1
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
