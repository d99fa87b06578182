"""A client on a real pseudo-terminal, driven by bench/compare_ssh.py: the bench holds the
master and drains it as fast as it can."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench_common import READY_CMD, READY_RE, BenchError, kill_pid

from tether.edge.pty import read_ready, spawn_on_pty


class PtyProc:
    """A client (ssh -tt or tether shell) on its own PTY; this side holds the master."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path,
                 cols: int = 80, rows: int = 24) -> None:
        self.argv = list(argv)
        self.proc, self.master = spawn_on_pty(self.argv, cols=cols, rows=rows, env=env, cwd=cwd)
        self.tail = b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def expect(self, regex: re.Pattern[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        buf = b""
        while not regex.search(buf):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{shlex.join(self.argv)}: {regex.pattern!r} not seen in "
                                 f"{timeout:.0f} s; last output: {buf[-400:]!r}")
            chunk = read_ready(self.master, min(left, 0.5))
            if chunk is not None:
                if not chunk:
                    raise BenchError(f"{shlex.join(self.argv)} exited early: {buf[-400:]!r}")
                buf = (buf + chunk)[-8192:]
        self.tail = buf

    def ready(self, timeout: float = 30.0) -> None:
        self.send(READY_CMD)
        self.expect(READY_RE, timeout)
        self.discard()

    def discard(self) -> None:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def drain_until_exit(self, timeout: float) -> int:
        """Blocking reads of the master until the client closes the PTY (EIO); byte count.

        No select() per read: a watchdog kills the client if it takes too long."""
        watchdog = threading.Timer(timeout, kill_pid, (self.proc,))
        watchdog.daemon = True
        watchdog.start()
        n = 0
        readv = os.readv
        fd = self.master
        bufs = [bytearray(1 << 20)]  # reused: no allocation per read
        try:
            while True:
                try:
                    got = readv(fd, bufs)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        break
                    raise
                if not got:
                    break
                n += got
        finally:
            watchdog.cancel()
        return n

    def drain_for(self, timeout: float) -> None:
        """Read until the client closes the PTY or `timeout` passes (select, never blocks)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    if not os.read(self.master, 65536):
                        return
                except OSError:
                    return

    def close(self) -> None:
        kill_pid(self.proc)
        with contextlib.suppress(OSError):
            os.close(self.master)
