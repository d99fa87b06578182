"""The agent's session kinds on real processes: what the glue asks of a shell on a PTY and
of a command on pipes (tether.agent.kinds)."""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import time
from collections.abc import Iterator

import pytest

from tether.agent.kinds import KINDS, ExecKind, Kind, ShellKind, make_kind
from tether.agent.process import RunAs
from tether.agent.request import SessionRequest
from tether.edge.pty import get_winsize, read_ready
from tether.frames import FrameType
from tether.grants import Grant


def _me() -> RunAs:
    me = pwd.getpwuid(os.getuid())
    return RunAs(me.pw_name, me.pw_uid, me.pw_gid, [], me.pw_dir, "/bin/sh", switch=False)


def _grant(mode: str, command: list[str] | None = None) -> Grant:
    return Grant(user="u", agent="a", agent_key="k", client_key="c", mqtt_name="m", mode=mode,
                 run_as=_me().name, command=command, max_duration=60, idle_timeout=0,
                 recording="off", recorder=None, reason=None, jti="j", expires=0.0)


def _read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen; got {out[-500:]!r}"
        chunk = read_ready(fd, left)
        if chunk is not None:
            assert chunk, f"EOF before {needle!r}; got {out[-500:]!r}"
            out += chunk
    return out


def _write(fd: int, data: bytes) -> None:
    select.select([], [fd], [], 5.0)
    assert os.write(fd, data) == len(data)


@contextlib.contextmanager
def _running(kind: Kind, grant: Grant, request: SessionRequest) -> Iterator[Kind]:
    kind.spawn(_me(), grant, request)
    assert kind.proc is not None
    try:
        yield kind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(kind.proc.proc.pid, signal.SIGKILL)
        kind.proc.proc.wait(timeout=10)
        for fd in (kind.proc.master, kind.proc.pidfd):
            if fd is not None:
                os.close(fd)
        for f in (kind.proc.proc.stdin, kind.proc.proc.stdout, kind.proc.proc.stderr):
            if f is not None:
                f.close()


def test_the_registry_names_each_kind_once() -> None:
    assert list(KINDS) == ["shell", "exec"]
    assert isinstance(make_kind("shell"), ShellKind)
    assert isinstance(make_kind("exec"), ExecKind)
    with pytest.raises(KeyError):
        make_kind("forward")


def test_a_shell_kind_resizes_holds_its_terminal_and_hides_a_password_prompt() -> None:
    request = SessionRequest(grant="g", mode="shell", command=None, term="xterm", cols=91, rows=33)
    with _running(ShellKind(), _grant("shell"), request) as kind:
        assert kind.proc is not None
        [master] = kind.output_fds()
        assert kind.input_fd() == master
        assert get_winsize(master) == (91, 33)
        kind.resize(120, 40)
        assert get_winsize(master) == (120, 40)
        _write(master, b"echo ready-$((6*7))\n")
        _read_until(master, b"ready-42")
        # At its prompt the shell holds the terminal; a job in the foreground does not.
        deadline = time.monotonic() + 10
        while not kind.holds_terminal():
            assert time.monotonic() < deadline
            select.select([], [], [], 0.02)
        assert kind.signal_group() == kind.proc.proc.pid
        assert not kind.input_hidden()
        _write(master, b"stty -echo; echo hidden-$((1+1))\n")
        _read_until(master, b"hidden-2")
        assert kind.input_hidden()  # canonical, no echo: a password prompt
        _write(master, b"sleep 30\n")
        deadline = time.monotonic() + 10
        while kind.holds_terminal():
            assert time.monotonic() < deadline, "the job never took the terminal"
            select.select([], [], [], 0.02)
        assert kind.signal_group() != kind.proc.proc.pid  # ^C goes to the job
        assert not kind.close_input()  # a terminal's input stays open after EOF
        assert kind.input_fd() == master


def test_an_exec_kind_has_two_streams_and_closes_stdin() -> None:
    assert ExecKind.traits.streams == (FrameType.DATA, FrameType.STDERR)
    assert not ExecKind.traits.resizable and not ExecKind.traits.idles
    request = SessionRequest(grant="g", mode="exec", command=["sh"], term=None)
    command = ["sh", "-c", "cat; echo to-err >&2"]
    with _running(ExecKind(), _grant("exec", command), request) as kind:
        assert kind.proc is not None
        out, err = kind.output_fds()
        stdin = kind.input_fd()
        assert stdin is not None
        _write(stdin, b"through-cat\n")
        _read_until(out, b"through-cat")
        assert kind.signal_group() == kind.proc.proc.pid
        assert kind.holds_terminal() and not kind.input_hidden()
        kind.resize(100, 30)  # no window: nothing to do, nothing fails
        assert kind.close_input()
        assert kind.input_fd() is None
        _read_until(err, b"to-err")  # cat saw EOF and the command went on
        assert not kind.close_input()  # already closed


def test_an_exec_grant_without_a_command_starts_nothing() -> None:
    from tether.agent.process import SpawnError

    kind = ExecKind()
    request = SessionRequest(grant="g", mode="exec", command=None, term=None)
    with pytest.raises(SpawnError, match="names no command"):
        kind.spawn(_me(), _grant("exec", None), request)
    assert kind.proc is None
