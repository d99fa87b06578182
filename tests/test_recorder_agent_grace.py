"""An agent that drops off the broker does not lose its recordings: they are marked aborted
only if it stays away for the recorder's --agent-grace, or comes back restarted (a new
`boot` in its status); one that is back in time resumes them, and the index covers the
part after the cut.

Each stack runs the authority, a recorder and the agent `local` as separate processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stack import Stack, wait_for
from support.relay import Relay


def _roles(stack: Stack, grace: float, agent_identity: Path | None = None) -> subprocess.Popen[bytes]:
    stack.stop_up()
    stack.start_role("authority")
    stack.start_role("recorder", "--agent-grace", str(grace), ready=b"recorder is up")
    return _agent(stack, agent_identity)


def _agent(stack: Stack, identity: Path | None = None) -> subprocess.Popen[bytes]:
    ident = identity or stack.home.agent_identity("local")
    agent = stack.start_role("agent", "--identity", str(ident), ready=b"connected to")
    wait_for(lambda: stack.agent_status("local") == "online", timeout=60, what="agent local online")
    return agent


def _via(stack: Stack, relay: Relay) -> Path:
    """The agent's identity, pointed at the relay instead of the broker."""
    doc = json.loads(stack.home.agent_identity("local").read_text())
    doc["broker"]["port"] = relay.port
    path = stack.root / "agent-via-relay.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def _live(stack: Stack, marker: str) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    """A session that prints `before-MARKER`, then echoes one line of input and exits."""
    start = time.time()
    proc = stack.popen("run", "local", "--", "sh", "-c",
                       f"echo before-{marker}; read x; echo after-$x-{marker}",
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == f"before-{marker}\n".encode(), stack.log_tail()
    return proc, stack.wait_recorded("live", after=start)


def _kill_session_processes(marker: str) -> None:
    """The session's own shell, orphaned by a killed agent: stopped by its pid."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"before-" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _status(stack: Stack, sid: object) -> str:
    return str(stack.recorded(str(sid)).get("status"))


def test_a_vanished_agent_aborts_its_recordings_after_the_grace(fresh_stack: Stack) -> None:
    stack, marker = fresh_stack, os.urandom(4).hex()
    agent = _roles(stack, grace=2.0)
    client, row = _live(stack, marker)
    try:
        killed = time.monotonic()
        agent.kill()  # no clean stop: the broker publishes its will
        agent.wait()
        wait_for(lambda: _status(stack, row["sid"]) == "aborted", timeout=60,
                 what="the recording aborted")
        waited = time.monotonic() - killed
        print(f"aborted {waited:.2f} s after the agent was killed (grace 2 s)")
        assert waited >= 2.0, waited  # the grace is counted from the will, after the kill
    finally:
        client.kill()
        client.wait()
        _kill_session_processes(marker)


def test_a_restarted_agent_aborts_its_old_recordings_at_once(fresh_stack: Stack) -> None:
    stack, marker = fresh_stack, os.urandom(4).hex()
    agent = _roles(stack, grace=600.0)
    client, row = _live(stack, marker)
    try:
        agent.kill()
        agent.wait()
        restarted = time.monotonic()
        _agent(stack)  # a new boot: the sessions of the old one are gone
        wait_for(lambda: _status(stack, row["sid"]) == "aborted", timeout=60,
                 what="the recording aborted once the restarted agent was online")
        print(f"aborted {time.monotonic() - restarted:.2f} s after the restart (grace 600 s)")
    finally:
        client.kill()
        client.wait()
        _kill_session_processes(marker)


@pytest.mark.timeout(300)  # four roles started by hand, a cut and a resume: slow under load
def test_an_agent_back_after_the_grace_resumes_its_recording(fresh_stack: Stack) -> None:
    """Cut for longer than the grace: the row is aborted meanwhile, then the agent is back
    (same boot), the session goes on, and the recording ends closed, intact and indexed."""
    stack, marker = fresh_stack, os.urandom(4).hex()
    # The relay is the agent's only way to the broker: it stays up until the recording is
    # closed (closing it as soon as the client ended cut the agent off again, before the
    # tail it had sent into the first cut was sent again).
    with Relay(stack.port) as relay:
        _roles(stack, grace=1.0, agent_identity=_via(stack, relay))
        client, row = _live(stack, marker)
        try:
            relay.cut()
            wait_for(lambda: _status(stack, row["sid"]) == "aborted", timeout=60,
                     what="the recording aborted while the agent was cut off")
            assert client.stdin is not None
            client.stdin.write(b"typed\n")  # input during the cut
            client.stdin.flush()
            relay.restore()
            out, err = client.communicate(timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0, (out, err, stack.log_tail())
        assert out == f"after-typed-{marker}\n".encode(), (out, err)
        try:
            closed = wait_for(lambda: (r := stack.recorded(str(row["sid"])))["status"] == "closed" and r,
                              timeout=60, what="the resumed recording closed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {relay!r}; {stack.log_tail()}") from None
    assert closed["chain"] == "ok" and closed["exit_code"] == 0
    v = stack.tether("verify", str(row["sid"]))
    assert v.returncode == 0 and b"verified: intact" in v.stdout, v.stdout
    # The index, finished when the row was aborted, picks up the part after the cut.
    found = wait_for(lambda: json.loads(stack.tether("search", f"after-typed-{marker}", "--json").stdout
                                        or b"[]"), timeout=60, what="the text after the cut indexed")
    assert {h["sid"] for h in found} == {row["sid"]}
