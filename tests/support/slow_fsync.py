"""Run a tether command (`python slow_fsync.py recorder ...`) on a slow disk: every
os.fsync waits `TETHER_TEST_FSYNC_DELAY` seconds first, then really syncs, and appends a
line to `TETHER_TEST_FSYNC_LOG` once it has returned:

    <CLOCK_MONOTONIC when the fsync returned> <file size when it was called> <path>

CLOCK_MONOTONIC is one clock for every process on the machine, so a test can compare
these times with when it saw something the process sent afterwards. The code paths are
the real ones; only the disk is slower."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import HasFileno

_LOG = os.environ["TETHER_TEST_FSYNC_LOG"]
_DELAY = float(os.environ["TETHER_TEST_FSYNC_DELAY"])
_real_fsync = os.fsync


def _slow_fsync(fd: int | HasFileno) -> None:
    fd = fd if isinstance(fd, int) else fd.fileno()
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = "?"
    size = os.fstat(fd).st_size  # what this fsync makes durable (nothing else writes meanwhile)
    time.sleep(_DELAY)  # the slow disk
    _real_fsync(fd)
    line = f"{time.monotonic():.6f} {size} {path}\n".encode()
    log = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(log, line)
    finally:
        os.close(log)


os.fsync = _slow_fsync

if __name__ == "__main__":
    from tether.commands.main import main

    sys.exit(main(sys.argv[1:]))
