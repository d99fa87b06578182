"""The local terminal: raw mode that is always restored, size, and output writes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty
from collections.abc import Iterator

from tether.frames import Frame, FrameType


def terminal_size(fd: int = 1) -> tuple[int, int]:
    """(cols, rows) of the terminal on fd, or 80x24."""
    for candidate in (fd, 0, 2):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(candidate, termios.TIOCGWINSZ, b"\0" * 8))
            if cols and rows:
                return cols, rows
        except OSError:
            continue
    return 80, 24


@contextlib.contextmanager
def raw_mode(fd: int = 0) -> Iterator[None]:
    """Raw mode for the duration; restored on any exit, including SIGTERM and SIGHUP."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)

    def restore(*_: object) -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def on_signal(signum: int, _frame: object) -> None:
        restore()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    tty.setraw(fd, termios.TCSADRAIN)
    try:
        yield
    finally:
        restore()
        for s, handler in previous.items():
            signal.signal(s, handler)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def stderr_line(text: str) -> None:
    """A message for the user; in raw mode a bare \\n would not return the carriage."""
    sys.stderr.write(text.replace("\n", "\r\n") + "\r\n" if os.isatty(2) else text + "\n")
    sys.stderr.flush()


def show_output(payload: bytes, stderr: bool = False) -> None:
    """Session output: the remote stdout and stderr to ours."""
    write_all(2 if stderr else 1, payload)


def show_notice(text: str) -> None:
    """A notice from the agent, on stderr."""
    from tether.display import safe

    # The agent's text, shown outside the session's own output: escaped like every
    # other field from another principal, so it cannot drive the user's terminal.
    stderr_line(f"tether: {safe(text)}")


def show_frame(frame: Frame) -> None:
    """Session output: stdout and stderr to ours, notices from the agent to stderr."""
    if frame.type in (FrameType.DATA, FrameType.STDERR):
        show_output(frame.payload, frame.type == FrameType.STDERR)
    elif frame.type == FrameType.NOTICE:
        show_notice(frame.payload.decode(errors="replace"))
