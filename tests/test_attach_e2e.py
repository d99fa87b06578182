"""Detach and reattach (issue 11 item 4) on both brokers, in real PTYs: `~d` leaves a shell
running; `tether sessions --live` lists it; `tether attach` (no SID: the only detached
session) restores the screen from the session's recent output and goes on; attaching from
another terminal detaches the earlier client, which is told; bad attaches are refused
clearly and change nothing; the recording holds the whole session and verifies."""

from __future__ import annotations

import json
import re

from stack import PtyClient, Stack, policy, statement, wait_for

PROMPT = rb"\[tp\]\$ "


def _live(stack: Stack) -> list[dict[str, object]]:
    r = stack.tether("sessions", "--live", "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _detached(stack: Stack, sid: str) -> bool:
    return any(s["sid"] == sid and not s["attached"] for s in _live(stack))


def test_detach_list_attach_and_take_over(stack: Stack) -> None:
    first = PtyClient(stack, "shell", "local")
    second = third = None
    try:
        first.send(b"export PS1='[t''p]$ '\r")
        first.expect(PROMPT)
        first.send(b"echo before-$((6*7))\r")
        first.expect(rb"before-42\r\n")
        first.expect(PROMPT)
        first.send(b"~d")  # at the start of a line: detach
        m = first.expect(rb"Detached from session ([0-9a-f]{32}) on local")
        sid = m.group(1).decode()
        first.expect(rb"tether attach " + sid.encode())
        assert first.drain_until_exit() == 0

        # The session lives on, detached; the authority knows it from the agent's report.
        wait_for(lambda: _detached(stack, sid), timeout=30, what="the session listed as detached")
        r = stack.tether("sessions", "--live")
        assert re.search(rf"{sid}\s+local\s+\S+\s+detached".encode(), r.stdout), r.stdout

        # No SID: the only detached session. The screen comes back from the replay.
        second = PtyClient(stack, "attach")
        second.expect(rb"before-42")
        second.expect(rb"attached: ")
        second.send(b"echo after-$((6*7))\r")
        second.expect(rb"after-42\r\n")
        second.expect(PROMPT)
        wait_for(lambda: any(s["sid"] == sid and s["attached"] for s in _live(stack)), timeout=30,
                 what="the session listed as attached")

        # From a third terminal, by id prefix: the second is told and let go.
        third = PtyClient(stack, "attach", sid[:8])
        third.expect(rb"after-42")
        second.expect(rb"detached: this session was attached from another client")
        assert second.drain_until_exit() != 0
        third.send(b"echo third-$((6*7))\r")
        third.expect(rb"third-42\r\n")
        third.expect(PROMPT)
        third.send(b"exit 7\r")
        assert third.drain_until_exit(timeout=30) == 7
    finally:
        for client in (first, second, third):
            if client is not None:
                client.close()

    row = stack.wait_recorded("closed", after=0)
    assert row["sid"] == sid and row["exit_code"] == 7 and row["chain"] == "ok"
    v = stack.tether("verify", sid)
    assert v.returncode == 0 and b"verified: intact" in v.stdout, v.stdout
    log = stack.log_bytes(sid)
    for word in (b"before-42", b"after-42", b"third-42", b"detached: client detached",
                 b"attached: "):
        assert word in log, word
    wait_for(lambda: not any(s["sid"] == sid for s in _live(stack)), timeout=30,
             what="the ended session gone from the live list")


def test_bad_attaches_are_refused_clearly(stack: Stack) -> None:
    r = stack.tether("attach", "0123456789abcdef0123456789abcdef")
    assert r.returncode == 255
    assert b"no live session of yours matches" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr
    # Another user asks for this user's live session: it is not in their list at all.
    shell = PtyClient(stack, "shell", "local")
    try:
        shell.send(b"export PS1='[t''p]$ '\r")
        shell.expect(PROMPT)
        wait_for(lambda: len(_live(stack)) >= 1, timeout=30, what="the live session listed")
        sid = str(_live(stack)[0]["sid"])
        env = dict(stack.env, TETHER_IDENTITY=str(stack.bob_identity))
        r = stack.tether("attach", sid, env=env)
        assert r.returncode == 255 and b"no live session of yours matches" in r.stderr, r.stderr
        # The owner's session is untouched.
        shell.send(b"echo still-$((6*7))\r")
        shell.expect(rb"still-42")
        shell.send(b"exit\r")
        assert shell.drain_until_exit(timeout=30) == 0
    finally:
        shell.close()


def test_a_policy_without_detaching_keeps_the_session_on_tilde_d(stack: Stack) -> None:
    with policy(stack, statement(detach_timeout="0")):
        shell = PtyClient(stack, "shell", "local")
        try:
            shell.send(b"export PS1='[t''p]$ '\r")
            shell.expect(PROMPT)
            shell.send(b"~d")
            shell.expect(rb"cannot be detached: the policy's detach_timeout for it is 0")
            shell.send(b"echo kept-$((6*7))\r")
            shell.expect(rb"kept-42")
            shell.send(b"exit\r")
            assert shell.drain_until_exit(timeout=30) == 0
        finally:
            shell.close()
