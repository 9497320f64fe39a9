#!/usr/bin/env python3
"""Writes numbered lines forever: `numbered run=RUN seq=N pad=...`.

RUN is new for every start of the process; N counts from 0 within the run,
so a lost or duplicated line is a gap or a repeat within one run. Lines go
out with os.write in batches (no user-space buffer that a SIGKILL could
drop); after each batch the last seq written is recorded in PROGRESS_DIR/RUN,
so a lost tail is detectable too: the checker must see at least that seq.

  numbered.py PROGRESS_DIR [BATCH] [PAUSE_S]
"""
import os, sys, time

prog = sys.argv[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 100
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
run = "%x%x" % (int(time.time() * 1000) & 0xFFFFFFFF, os.getpid())
os.makedirs(prog, exist_ok=True)
pfile = os.path.join(prog, run)
pad = "x" * 40
seq = 0
while True:
    buf = "".join("numbered run=%s seq=%d pad=%s\n" % (run, seq + i, pad) for i in range(batch)).encode()
    view = memoryview(buf)
    while view:
        n = os.write(1, view)
        view = view[n:]
    seq += batch
    fd = os.open(pfile + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"%d\n" % (seq - 1))
    os.close(fd)
    os.rename(pfile + ".tmp", pfile)
    time.sleep(pause)
