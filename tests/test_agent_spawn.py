"""Starting a session process leaks nothing when it fails: the PTY master is closed
whatever goes wrong, not only on the errors spawn_shell expects."""

from __future__ import annotations

import os
import pwd
import struct

import pytest

from tether.agent.process import RunAs, spawn_shell


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("cols", "rows"), [(70000, 24), (80, -1), (2**31, 2**31)])
def test_a_size_the_pty_cannot_take_leaks_no_descriptor(cols: int, rows: int) -> None:
    me = pwd.getpwuid(os.getuid())
    ra = RunAs(me.pw_name, me.pw_uid, me.pw_gid, [], me.pw_dir, "/bin/sh", switch=False)
    before = _fds()
    for _ in range(20):
        with pytest.raises(struct.error):
            spawn_shell(ra, "xterm", cols, rows, {})
    assert _fds() == before
