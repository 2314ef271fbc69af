#!/usr/bin/env python3
"""The BENCH.md small-file workload: DIRS folders x FILES files of 1 KiB,
each created with one open/write/close, from one process."""
import os
import sys

root, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = b"x" * 1024
for d in range(dirs):
    p = os.path.join(root, "d%03d" % d)
    os.mkdir(p)
    for f in range(files):
        fd = os.open(os.path.join(p, "f%03d" % f), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
