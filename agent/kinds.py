"""Session kinds on the agent: what runs behind a session, and how to talk to it.

A kind starts its process and answers the glue's questions about it (which descriptors
carry its output, where input goes, how a resize or a signal reaches it, whether it waits
at a prompt). What the session core needs of it is its `traits`. A new kind (forward,
watch) is a new class here and an entry in `KINDS`; the others are not touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from tether.agent.process import RunAs, Spawned, SpawnError, spawn_exec, spawn_shell
from tether.agent.request import SessionRequest
from tether.edge.pty import canonical_no_echo, foreground_pgrp, set_winsize
from tether.frames import FrameType
from tether.grants import Grant
from tether.session_core import KindTraits

DEFAULT_TERM = "xterm-256color"


class Kind(Protocol):
    traits: KindTraits
    proc: Spawned | None

    def spawn(self, run_as: RunAs, grant: Grant, request: SessionRequest) -> None:
        """Start the process (sets `proc`); SpawnError says why not, for the user."""

    def output_fds(self) -> list[int]:
        """Non-blocking descriptors to read, one per `traits.streams` entry."""

    def input_fd(self) -> int | None:
        """Where client input is written; None once closed."""

    def close_input(self) -> bool:
        """The client sent EOF and everything before it was written: close the input if
        this kind's input closes (True: `input_fd` is None from now on)."""

    def resize(self, cols: int, rows: int) -> None: ...

    def signal_group(self) -> int:
        """The process group a client's signal goes to."""

    def holds_terminal(self) -> bool:
        """The program waits for input (the idle clock runs)."""

    def input_hidden(self) -> bool:
        """Input written now is not echoed (a password prompt): not recorded."""


class ShellKind:
    """A login shell on a PTY: one output stream, resizable, idles at its prompt."""

    traits = KindTraits(streams=(FrameType.DATA,), resizable=True, idles=True)

    def __init__(self) -> None:
        self.proc: Spawned | None = None

    def spawn(self, run_as: RunAs, grant: Grant, request: SessionRequest) -> None:
        self.proc = spawn_shell(run_as, request.term or DEFAULT_TERM, request.cols,
                                request.rows, request.env)

    def _master(self) -> int:
        assert self.proc is not None and self.proc.master is not None
        return self.proc.master

    def output_fds(self) -> list[int]:
        return [self._master()]

    def input_fd(self) -> int | None:
        return self._master()

    def close_input(self) -> bool:
        return False  # a terminal's end of input is the user's ^D, already in the input

    def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(OSError):
            set_winsize(self._master(), cols, rows)

    def signal_group(self) -> int:
        assert self.proc is not None
        pgrp = foreground_pgrp(self._master())
        return self.proc.proc.pid if pgrp is None else pgrp

    def holds_terminal(self) -> bool:
        """A long silent job is not idleness: only the shell waiting at its prompt is."""
        assert self.proc is not None
        return foreground_pgrp(self._master()) == self.proc.proc.pid

    def input_hidden(self) -> bool:
        return canonical_no_echo(self._master())


class ExecKind:
    """The grant's command on pipes: stdout and stderr, EOF closes stdin."""

    traits = KindTraits(streams=(FrameType.DATA, FrameType.STDERR))

    def __init__(self) -> None:
        self.proc: Spawned | None = None

    def spawn(self, run_as: RunAs, grant: Grant, request: SessionRequest) -> None:
        # Exactly the argv the authority bound into the grant (the service refused a HELLO
        # whose grant binds none, or whose command differs).
        if not grant.command:
            raise SpawnError("the grant names no command")
        self.proc = spawn_exec(run_as, grant.command, request.env)

    def output_fds(self) -> list[int]:
        assert self.proc is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        return [self.proc.stdout, self.proc.stderr]

    def input_fd(self) -> int | None:
        assert self.proc is not None
        return self.proc.stdin

    def close_input(self) -> bool:
        assert self.proc is not None
        if self.proc.stdin is None or self.proc.proc.stdin is None:
            return False
        self.proc.proc.stdin.close()
        self.proc.stdin = None
        return True

    def resize(self, cols: int, rows: int) -> None:
        pass  # pipes have no window

    def signal_group(self) -> int:
        assert self.proc is not None
        return self.proc.proc.pid

    def holds_terminal(self) -> bool:
        return True

    def input_hidden(self) -> bool:
        return False


KINDS: dict[str, Callable[[], Kind]] = {"shell": ShellKind, "exec": ExecKind}


def make_kind(mode: str) -> Kind:
    """The kind for a grant's mode (the service refuses modes not in `KINDS`)."""
    return KINDS[mode]()
