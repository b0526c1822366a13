#!/usr/bin/env python3
"""What one group commit's fsyncs cost on this disk: append a group's bytes to 1 file and
fdatasync it, against appending to 4 files (one per partition, as esub's topics log does with
ESUB_FSYNC=always and 4 partitions) and fdatasyncing them concurrently (as esub's store thread
does), each with and without preallocated (already written) space. Redis's `appendfsync always`
is the 1-file case: one AOF whatever the number of streams.

    python3 bench/fsync_groups.py [DIR] [GROUPS]   # DIR on the disk to measure (default
                                                   # ./fsync-groups.tmp, removed after), 300 groups

Prints the median time per group of each case.
"""
import os
import shutil
import statistics
import sys
import threading
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "fsync-groups.tmp"
GROUPS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
# One partition's share of a group: ~12 pubs of ~120 bytes framed.
CHUNK = b"x" * 1500


def run(nfiles, prealloc):
    fds = []
    for i in range(nfiles):
        fd = os.open(os.path.join(DIR, f"f{i}"), os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        if prealloc:
            os.write(fd, b"\0" * (GROUPS * len(CHUNK) + 4096))
        os.fsync(fd)
        fds.append(fd)
    took = []
    for k in range(GROUPS):
        start = time.perf_counter()
        for fd in fds:
            os.pwrite(fd, CHUNK, k * len(CHUNK))
        others = [threading.Thread(target=os.fdatasync, args=(fd,)) for fd in fds[1:]]
        for t in others:
            t.start()
        os.fdatasync(fds[0])
        for t in others:
            t.join()
        took.append(time.perf_counter() - start)
    for fd in fds:
        os.close(fd)
    return statistics.median(took) * 1e6


def main():
    os.makedirs(DIR, exist_ok=True)
    try:
        for nfiles in (1, 4):
            for prealloc in (False, True):
                us = run(nfiles, prealloc)
                print(f"files={nfiles} preallocated={prealloc}: median {us:.0f} us per group")
    finally:
        shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
