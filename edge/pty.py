"""Pseudo-terminals: open one at a size, start a program on it, ask it questions.

Used by the agent (a shell session's terminal), the tests and the bench (a client driven
like a person at a keyboard), so the ioctls are written once.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
from collections.abc import Sequence
from typing import Any


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_winsize(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on `fd`."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


def take_controlling_tty() -> None:
    """preexec_fn: make stdin (the PTY slave) the new session's controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def open_pty(cols: int, rows: int) -> tuple[int, int]:
    """(master, slave), the window already `cols` x `rows`; the caller closes both."""
    master, slave = os.openpty()
    try:
        set_winsize(master, cols, rows)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def spawn_on_pty(argv: Sequence[str], *, cols: int = 80, rows: int = 24,
                 **popen: Any) -> tuple[subprocess.Popen[bytes], int]:
    """Start `argv` as a session leader whose controlling terminal is a new PTY of
    `cols` x `rows`; returns the process and the master (blocking; the caller closes it).
    `popen` is passed to subprocess.Popen (env, cwd, ...)."""
    master, slave = open_pty(cols, rows)
    try:
        proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=take_controlling_tty, **popen,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, master


def read_ready(fd: int, timeout: float, size: int = 65536) -> bytes | None:
    """One read of a PTY master (or pipe) once it is readable: None if nothing came within
    `timeout`, b"" at the end (EOF, or EIO once the slave side has closed)."""
    if not select.select([fd], [], [], max(0.0, timeout))[0]:
        return None
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def foreground_pgrp(fd: int) -> int | None:
    """The terminal's foreground process group, or None if it cannot be read."""
    try:
        return os.tcgetpgrp(fd)
    except OSError:
        return None


def canonical_no_echo(fd: int) -> bool:
    """A password prompt: the line discipline collects a line but does not echo it.

    Readline, vim and other full-screen programs also turn ECHO off, but they read raw
    (ICANON off) and draw what is typed themselves, so theirs is not a hidden line.
    """
    try:
        lflag = termios.tcgetattr(fd)[3]
    except termios.error:
        return False
    return not lflag & termios.ECHO and bool(lflag & termios.ICANON)
