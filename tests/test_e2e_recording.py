"""Recording end to end on both brokers: complete, verifiable, fail-closed, redacted."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stack import TETHER, PtyClient, Spy, Stack, policy, statement, wait_for

from tether.agent.recording_link import END_AFTER, FREEZE_AFTER, OPEN_TIMEOUT
from tether.encoding import loads
from tether.recevents import EventKind, iter_log

PROMPT = rb"\[tp\]\$ "
MARGIN = 2.0  # seconds a timed limit may overrun on a loaded machine


class _HelloClock(Spy):
    """A spy that notes when the first HELLO reached the broker: the agent's recorder wait
    (OPEN_TIMEOUT) starts when the agent takes that HELLO."""

    def __init__(self, stack: Stack) -> None:
        self.hello_at: float | None = None
        super().__init__(stack)

    def _on_message(self, c: object, u: object, msg: object) -> None:
        if self.hello_at is None and "/hs/" in getattr(msg, "topic", ""):
            self.hello_at = time.monotonic()
        super()._on_message(c, u, msg)


def _shell(stack: Stack) -> PtyClient:
    client = PtyClient(stack, "shell", "local")
    client.send(b"export PS1='[t''p]$ '\r")
    client.expect(PROMPT)
    return client


def _output(log: bytes) -> bytes:
    return b"".join(r.event.data for r in iter_log(log) if r.event.kind == EventKind.OUTPUT)


def test_twenty_megabytes_recorded_completely(stack: Stack) -> None:
    source = stack.root / "big.txt"
    if not source.exists():
        with source.open("wb") as f:
            for i in range(400_000):
                f.write(b"%07d the quick brown fox jumps over the lazy dog %s\n" % (i, os.urandom(4).hex().encode()))
    assert source.stat().st_size >= 20_000_000
    start = time.time()
    r = stack.tether("run", "local", "--", "cat", str(source), timeout=120)
    assert r.returncode == 0, r.stderr
    received = hashlib.sha256(r.stdout).hexdigest()
    assert received == hashlib.sha256(source.read_bytes()).hexdigest()
    row = stack.wait_recorded("closed", after=start)
    assert row["exit_code"] == 0 and row["chain"] == "ok" and row["bytes_out"] == len(r.stdout)
    assert hashlib.sha256(_output(stack.log_bytes(row["sid"]))).hexdigest() == received
    v = stack.tether("verify", row["sid"])
    assert v.returncode == 0 and b"verified: intact" in v.stdout, v.stdout


def test_metadata_is_recorded(stack: Stack) -> None:
    start = time.time()
    r = stack.tether("run", "--reason", "INC-7", "local", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3
    row = stack.wait_recorded("closed", after=start)
    user = stack.home.user_identity
    assert row["agent"] == "local" and row["reason"] == "INC-7" and row["mode"] == "exec"
    assert row["user"] == loads(user.read_bytes())["name"]
    assert row["exit_code"] == 3 and row["grant_id"] and row["client_key"]
    events = [rec.event for rec in iter_log(stack.log_bytes(row["sid"]))]
    assert [e.data for e in events if e.kind == EventKind.STDERR] == [b"err\n"]
    assert events[-1].kind == EventKind.END and events[-2].kind == EventKind.EXIT


def _tampered(stack: Stack, sid: str, name: str, change: bytes) -> subprocess.CompletedProcess[bytes]:
    copy = stack.root / f"store-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(stack.home.recordings, copy)
    (copy / "logs" / f"{sid}.log").write_bytes(change)
    return stack.tether("verify", sid, "--store", str(copy))


def test_verify_points_at_the_break(stack: Stack) -> None:
    start = time.time()
    r = stack.tether("run", "local", "--", "sh", "-c", "for i in $(seq 1 40); do echo line-$i; sleep 0.01; done")
    assert r.returncode == 0
    sid = stack.wait_recorded("closed", after=start)["sid"]
    log = stack.log_bytes(sid)
    records = list(iter_log(log))
    outputs = [rec for rec in records if rec.event.kind == EventKind.OUTPUT]
    assert len(outputs) >= 5, "expected several output events"
    victim = outputs[len(outputs) // 2]
    i = victim.event.index

    flipped = bytearray(log)
    flipped[victim.offset + 21] ^= 0x01  # the first data byte (after the 21-byte header)
    v = _tampered(stack, sid, "flip", bytes(flipped))
    assert v.returncode == 1
    assert re.search(rf"BROKEN: event {i} \(output.*byte {victim.offset}\) was changed".encode(), v.stdout), v.stdout

    nxt = records[i + 1]
    removed = log[:victim.offset] + log[nxt.offset:]
    v = _tampered(stack, sid, "remove", removed)
    assert v.returncode == 1 and f"event {i} removed".encode() in v.stdout, v.stdout

    cut = log[:victim.offset + 10]
    v = _tampered(stack, sid, "cut", cut)
    assert v.returncode == 1 and b"tail is truncated" in v.stdout, v.stdout
    assert f"after event {i - 1}, at byte {victim.offset}".encode() in v.stdout, v.stdout

    cut = log[:records[-1].offset]  # drop the end manifest exactly
    v = _tampered(stack, sid, "cut-end", cut)
    assert v.returncode == 1 and b"tail is truncated" in v.stdout, v.stdout

    copy = stack.root / "store-open"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(stack.home.recordings, copy)
    opened = bytearray((copy / "logs" / f"{sid}.open").read_bytes())
    opened[40] ^= 1  # the OPEN ties the session to its grant; it is signed by the agent
    (copy / "logs" / f"{sid}.open").write_bytes(bytes(opened))
    v = stack.tether("verify", sid, "--store", str(copy))
    assert v.returncode == 1 and b"stored OPEN" in v.stdout, v.stdout

    v = stack.tether("verify", sid)
    assert v.returncode == 0, v.stdout


def test_password_at_a_silent_prompt_is_never_stored(stack: Stack) -> None:
    secret = b"hunter2-" + os.urandom(6).hex().encode()
    start = time.time()
    client = _shell(stack)
    try:
        # The prompt text must not match the echo of the command line itself.
        client.send(b"P='pass''word: '; read -s -p \"$P\" PW; echo; echo len=${#PW}\r")
        client.expect(rb"password: ")
        client.send(secret + b"\r")
        client.expect(rb"len=20")
        client.expect(PROMPT)
        client.send(b"echo visible-input\r")
        client.expect(PROMPT)
        client.send(b"exit\r")
        assert client.drain_until_exit() == 0
    finally:
        client.close()
    row = stack.wait_recorded("closed", after=start)
    log = stack.log_bytes(row["sid"])
    assert secret not in log
    events = [rec.event for rec in iter_log(log)]
    inputs = b"".join(e.data for e in events if e.kind == EventKind.INPUT)
    assert b"echo visible-input" in inputs  # input is recorded while echo is on
    redactions = [loads(e.data) for e in events if e.kind == EventKind.REDACTION]
    assert {"hidden": True} in redactions and {"hidden": False} in redactions
    store = stack.home.recordings
    for path in store.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), f"the password leaked into {path}"


def test_required_recording_without_a_recorder_starts_nothing(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    marker = stack.root / "ran"
    with policy(stack, statement(recording='"required"')):
        spy = _HelloClock(stack)
        try:
            start = time.monotonic()
            r = stack.tether("run", "local", "--", "touch", str(marker))
            ended = time.monotonic()
        finally:
            spy.close()
        assert r.returncode == 255
        assert b"recording is required" in r.stderr and b"tether recorder" in r.stderr, r.stderr
        assert not marker.exists()
        assert spy.hello_at is not None, "the spy saw no HELLO"
        print(f"required recording, no recorder: refused {ended - spy.hello_at:.2f} s after the "
              f"HELLO ({ended - start:.2f} s after launch)")
        assert ended - start >= OPEN_TIMEOUT
        assert ended - spy.hello_at <= OPEN_TIMEOUT + MARGIN


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_recorder_loss_freezes_then_a_restart_resumes_completely(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    recorder = stack.start_recorder()
    with policy(stack, statement(recording='"required"')):
        start = time.time()
        client = _shell(stack)
        try:
            client.send(b"echo before-$((6*7))\r")
            client.expect(rb"before-42")
            client.expect(PROMPT)
            _kill(recorder)
            killed = time.monotonic()
            client.send(b"echo during-$((6*7))\r")
            client.expect(rb"during-42")  # within the window the session goes on...
            # ...until 10 s of silence, counted from the recorder's last ack (just before the kill)
            client.expect(rb"recording stalled",
                          timeout=max(0.1, killed + FREEZE_AFTER + MARGIN - time.monotonic()))
            frozen = time.monotonic() - killed
            print(f"recorder killed: frozen after {frozen:.2f} s")
            assert FREEZE_AFTER - MARGIN <= frozen <= FREEZE_AFTER + MARGIN, frozen
            client.send(b"echo frozen-$((6*7))\r")
            with pytest.raises(AssertionError):
                client.expect(rb"frozen-42", timeout=2)  # held while frozen
            recorder = stack.start_recorder()
            restarted = time.monotonic()
            client.expect(rb"recording resumed", timeout=20)
            print(f"recorder restarted: resumed after {time.monotonic() - restarted:.2f} s")
            client.expect(rb"frozen-42")  # the held input reaches the shell now
            client.expect(PROMPT)
            client.send(b"exit\r")
            assert client.drain_until_exit() == 0
        finally:
            client.close()
    row = stack.wait_recorded("closed", after=start)
    out = _output(stack.log_bytes(row["sid"]))
    for word in (b"before-42", b"during-42", b"frozen-42"):
        assert word in out
    v = stack.tether("verify", row["sid"])
    assert v.returncode == 0, v.stdout
    _kill(recorder)


def test_recorder_gone_for_good_ends_the_session(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    recorder = stack.start_recorder()
    with policy(stack, statement(recording='"required"')):
        client = _shell(stack)
        try:
            _kill(recorder)
            killed = time.monotonic()
            client.send(b"echo x\r")
            client.expect(rb"recording stalled",
                          timeout=max(0.1, killed + FREEZE_AFTER + MARGIN - time.monotonic()))
            client.expect(rb"session closed: recording is required",
                          timeout=max(0.1, killed + END_AFTER + MARGIN - time.monotonic()))
            closed = time.monotonic() - killed
            assert client.drain_until_exit(timeout=30) != 0
            ended = time.monotonic() - killed
            print(f"recorder gone: session closed after {closed:.2f} s, client exited after "
                  f"{ended:.2f} s")
            assert closed >= END_AFTER - MARGIN
            assert ended <= END_AFTER + MARGIN
        finally:
            client.close()


def test_optional_recording_runs_without_a_recorder(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    r = stack.tether("run", "local", "--", "echo", "unrecorded")
    assert r.returncode == 0 and r.stdout == b"unrecorded\n"
    recorder = stack.start_recorder()
    try:
        start = time.time()
        r = stack.tether("run", "local", "--", "echo", "recorded-now")
        assert r.returncode == 0
        row = stack.wait_recorded("closed", after=start)
        assert b"recorded-now" in _output(stack.log_bytes(row["sid"]))
    finally:
        _kill(recorder)


def test_recordings_are_private(stack: Stack) -> None:
    store = stack.home.recordings
    wait_for(lambda: any((store / "logs").glob("*.log")), what="a recording")
    for path in [store / "index.db", *(store / "logs").glob("*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert Path(TETHER).exists()


def test_recorder_refuses_a_second_recording_of_one_grant(stack: Stack) -> None:
    """Holding an agent's key is not enough to attribute made-up sessions to a user: each
    grant opens one recording, and only while it was valid."""
    import asyncio
    import dataclasses

    from tether import grants
    from tether.authority.provision import authority_identity
    from tether.edge.keys import Identity
    from tether.edge.mqtt import BrokerSettings, MqttConnection
    from tether.encoding import b64e
    from tether.recording import RecordingSender, session_body
    from tether.topics import REC, Topics

    agent = stack.add_agent("forger")
    name = agent.name
    authority = authority_identity(stack.home)
    recorder = Identity.load(stack.home.recorder_identity())
    now = time.time()
    grant = grants.Grant(
        user="alice", agent=name, agent_key=b64e(agent.public_key), client_key=b64e(os.urandom(32)),
        mqtt_name="alice", mode="exec", run_as="root", command=["true"], max_duration=60,
        idle_timeout=0, recording="required", recorder=recorder.name, reason=None,
        jti=grants.new_jti(os.urandom), expires=now + 300, recorder_x25519=b64e(recorder.x25519_public),
        recorder_ed25519=b64e(recorder.public_key))
    token = grants.issue(authority.signing_seed, grant, now)
    stale = grants.issue(authority.signing_seed, dataclasses.replace(
        grant, jti=grants.new_jti(os.urandom), expires=now - 900), now - 1200)

    def sender(tok: str, started: float) -> RecordingSender:
        sid = os.urandom(16)
        return RecordingSender(
            sid=sid, signing_key=agent.signing_key, recorder_x25519=recorder.x25519_public,
            recorder_ed25519=recorder.public_key,
            body=session_body(sid=sid, grant_token=tok, agent=name, client="alice", cols=80,
                              rows=24, term=None, started=started),
            now=time.monotonic(), rand=os.urandom)

    async def attempt(s: RecordingSender) -> str | None:
        topics = Topics()
        conn = MqttConnection(BrokerSettings.from_identity(name, agent.broker),
                              lambda _t, p: s.on_message(p, time.monotonic()) and None)
        await conn.connect()
        await conn.subscribe_confirmed(topics.agent_recorder_acks(name))
        deadline = time.monotonic() + 15
        while not s.opened and s.refused is None and time.monotonic() < deadline:
            for blob in s.take_outgoing(time.monotonic()):
                conn.publish(topics.session(name, "alice", s.sid.hex(), REC), blob, qos=1)
            await asyncio.sleep(0.05)
        await conn.close()
        return "opened" if s.opened else s.refused

    assert asyncio.run(attempt(sender(token, now))) == "opened"
    again = asyncio.run(attempt(sender(token, now)))
    assert again is not None and "already used" in again
    old = asyncio.run(attempt(sender(stale, now)))
    assert old is not None and "while its grant was valid" in old


def test_a_lost_row_is_rebuilt_from_the_log(fresh_stack: Stack) -> None:
    """The fsync'd OPEN and log are the record; a row a crash lost comes back on restart."""
    import sqlite3

    stack = fresh_stack
    start = time.time()
    r = stack.tether("run", "local", "--", "echo", "kept-in-the-log")
    assert r.returncode == 0
    row = stack.wait_recorded("closed", after=start)
    stack.stop_up()
    db = sqlite3.connect(stack.home.recordings / "index.db")
    db.execute("DELETE FROM sessions WHERE sid=?", (row["sid"],))
    db.commit()
    db.close()
    stack.start_up()
    again = wait_for(lambda: stack.recorded(row["sid"]), what="the row rebuilt")
    for key in ("events", "log_bytes", "bytes_out", "status", "user", "agent", "exit_code"):
        assert again[key] == row[key], key
    v = stack.tether("verify", row["sid"])
    assert v.returncode == 0, v.stdout
