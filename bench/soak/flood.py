#!/usr/bin/env python3
"""Log flood: `NAME seq=N` lines as fast as the pipe takes them.

  flood.py NAME                 forever
  flood.py NAME TRIGGER LINES   idle; each time the file TRIGGER appears,
                                remove it and write LINES lines at full speed
"""
import os, sys, time

name = sys.argv[1]
trigger = sys.argv[2] if len(sys.argv) > 2 else None
lines = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seq = 0


def burst(n):
    global seq
    while n > 0:
        k = min(n, 2000)
        buf = "".join("%s seq=%d flood flood flood flood\n" % (name, seq + i) for i in range(k)).encode()
        view = memoryview(buf)
        while view:
            view = view[os.write(1, view):]
        seq += k
        n -= k


if trigger is None:
    while True:
        burst(2000)
while True:
    try:
        os.unlink(trigger)
    except FileNotFoundError:
        time.sleep(0.1)
        continue
    burst(lines)
