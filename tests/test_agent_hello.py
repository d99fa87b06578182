"""What a hostile client (or broker) can put in a HELLO, against a real agent on both
brokers: exec grants that bind no command or another one, terminal sizes that used to
wedge a session and leak its PTY, fields past their bounds, and run-as accounts that are
root under another name."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from typing import Any

from stack import Stack, policy, statement, wait_for
from support.agent_peer import Answer, Peer

from tether.limits import MAX_COLS, MAX_ENV_VARS, MAX_REASON_BYTES, MAX_ROWS, MAX_TERM_BYTES

GEOMETRY = (f"the terminal size must be whole numbers of columns from 1 to {MAX_COLS} "
            f"and rows from 1 to {MAX_ROWS}")
BAD_SIZES: list[Any] = ["80", 0, -1, 70000, 2**31]


def _ask(stack: Stack, grant: dict[str, Any] | None = None, **fields: Any) -> Answer:
    """One HELLO with a fresh grant (changed by `grant`) and request (changed by `fields`)."""
    async def go() -> Answer:
        async with Peer(stack) as peer:
            return await peer.hello(peer.request(grant=peer.grant(**(grant or {})), **fields))
    return asyncio.run(go())


# ----- exec runs exactly the grant's argv -----


def test_exec_grant_that_binds_no_command_is_refused(stack: Stack) -> None:
    async def go() -> Answer:
        async with Peer(stack) as peer:
            return await peer.hello(peer.request(grant=peer.grant(command=None), command=["id"]))
    answer = asyncio.run(go())
    # Decoding the grant refuses it, so nothing that checks grants can honour it.
    assert answer.refused is not None
    assert answer.refused.startswith("grant is malformed: an exec session names its command")


def test_exec_hello_naming_another_command_than_the_grant_is_refused(stack: Stack) -> None:
    async def go() -> list[Answer]:
        async with Peer(stack) as peer:
            return [await peer.hello(peer.request(grant=peer.grant(command=["true"]), **change))
                    for change in ({"command": ["id"]}, {"command": ["true", "x"]},
                                   {"command": None})]
    differs, longer, missing = asyncio.run(go())
    assert differs.refused == longer.refused == "the command differs from the one in the grant"
    assert missing.refused == ("an exec session names its command as a non-empty list of "
                               "strings (tether run AGENT -- COMMAND [ARG...])")


# ----- terminal size -----


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_bad_terminal_sizes_are_refused_and_leak_nothing(stack: Stack) -> None:
    assert stack.up is not None
    agent_pid = stack.up.pid  # `tether up` runs the agent in its own process
    # 20 HELLOs on each of slots 1-5, the last on slot 6: all within the rate limit's burst.
    peers = [Peer(stack, n) for n in range(1, 7)]

    async def go() -> tuple[int, list[Answer], Answer]:
        for peer in peers:
            await peer.__aenter__()
        try:
            before = _fd_count(agent_pid)
            answers = []
            for i in range(100):
                peer, bad = peers[i % 5], BAD_SIZES[(i // 2) % len(BAD_SIZES)]
                size = {"cols": bad, "rows": 24} if i % 2 else {"cols": 80, "rows": bad}
                shell = peer.grant(mode="shell", command=None)
                # Completed if accepted, so an agent that took the size would start the session.
                answers.append(await peer.hello(
                    peer.request(grant=shell, mode="shell", command=None, term="xterm", **size),
                    confirm=True))
            # The user's one allowed session is still free: nothing wedged holds it.
            last = await peers[5].hello(peers[5].request(grant=peers[5].grant(max_sessions=1)),
                                        confirm=True)
            return before, answers, last
        finally:
            for peer in peers:
                await peer.__aexit__()

    before, answers, last = asyncio.run(go())
    assert [a.refused for a in answers] == [GEOMETRY] * 100
    assert last.accepted, last.refused
    wait_for(lambda: _fd_count(agent_pid) <= before + 2, what="the agent's descriptors settle",
             timeout=20)
    done = stack.tether("run", "local", "--", "echo", "still-works")
    assert done.returncode == 0 and done.stdout == b"still-works\n", done.stderr


# ----- every field bounded -----


def test_fields_at_their_limit_are_accepted(stack: Stack) -> None:
    env = {f"TETHER_V{i}": "v" for i in range(MAX_ENV_VARS)}
    answer = _ask(stack, env=env, reason="r" * MAX_REASON_BYTES, term="t" * MAX_TERM_BYTES)
    assert answer.accepted, answer.refused


def test_fields_past_their_limit_are_refused_with_the_limit(stack: Stack) -> None:
    env = {f"TETHER_V{i}": "v" for i in range(MAX_ENV_VARS + 1)}
    assert _ask(stack, env=env).refused == \
        f"the HELLO's env has {MAX_ENV_VARS + 1} variables; the limit is {MAX_ENV_VARS}"
    assert _ask(stack, reason="r" * (MAX_REASON_BYTES + 1)).refused == \
        f"the HELLO's reason is {MAX_REASON_BYTES + 1} bytes; the limit is {MAX_REASON_BYTES}"
    assert "at most 64 bytes" in str(_ask(stack, term="t" * (MAX_TERM_BYTES + 1)).refused)


# ----- run-as: root only by its own name -----


def test_run_as_glob_matching_a_uid_0_alias_is_refused(stack: Stack) -> None:
    if os.geteuid() != 0:
        # Only root can make the alias; an agent that is not root switches to no other
        # account, and that refusal is what keeps any grant from reaching root.
        answer = _ask(stack, grant={"run_as": "root"})
        assert answer.refused is not None and "cannot switch to 'root'" in answer.refused
        return
    alias = f"tether-uid0-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-o", "-u", "0", "-M", "-N", "-s", "/bin/sh", alias], check=True)
    try:
        with policy(stack, statement().replace('run_as = ["OSUSER"]',
                                                'run_as = ["OSUSER", "tether-uid0-*"]')):
            out = stack.tether("run", "--as", alias, "local", "--", "id", "-u")
        assert out.returncode != 0 and out.stdout == b"", out.stdout
        assert (f"agent 'local' refused the session: account {alias!r} has uid 0 (it is root "
                "under another name); root is given only to grants whose run-as is literally "
                "'root'").encode() in out.stderr, out.stderr
    finally:
        subprocess.run(["userdel", "-f", alias], check=True)  # -f: uid 0 always has processes
