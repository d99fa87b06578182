"""Hole 5, recorder side: a terminal size from an agent never makes a reader allocate.

A HELLO's cols/rows reached the recorder in the OPEN, and a RESIZE event's in the log: a
width of 2**31 made every reconstruction (replay, export, indexing, the console's replay)
try to allocate tens of GB. The recorder now refuses an OPEN whose size is outside
tether/limits.py, and every reader clamps a stored size and ignores a stored RESIZE
outside it. The readers run here in processes capped at 1 GiB of address space, so a
reader that tried to allocate would fail instead of swapping the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from stack import TETHER, Stack
from test_indexer import add_session
from test_recording import AGENT, AUTHORITY, NOW, RECORDER, RECORDER_X, token

from tether.encoding import b64e
from tether.limits import MAX_COLS, MAX_ROWS
from tether.recevents import RESIZE, EventKind, resize_of
from tether.recorder.queries import QueryWorker
from tether.recording import RecordingError, RecordingSender, open_recording, session_body

ADDRESS_SPACE = 1 << 30
BAD_SIZES: list[tuple[Any, Any]] = [(70000, 24), (-1, 24), (80, 0), (2**31, 24), (80, 2**31),
                                    ("80", 24), (80.0, 24), (None, None), (True, 24)]


def _sender(cols: Any, rows: Any, **grant: Any) -> RecordingSender:
    sid = os.urandom(16)
    body = session_body(sid=sid, grant_token=token(**grant), agent="web1", client="u-alice",
                        cols=cols, rows=rows, term="xterm", started=NOW)
    return RecordingSender(sid=sid, signing_key=AGENT, recorder_x25519=bytes(RECORDER_X.public_key),
                           recorder_ed25519=bytes(RECORDER.verify_key), body=body, now=NOW, rand=os.urandom)


@pytest.mark.parametrize("cols,rows", BAD_SIZES)
def test_an_open_with_a_bad_terminal_size_is_refused(cols: Any, rows: Any) -> None:
    with pytest.raises(RecordingError, match="terminal size"):
        open_recording(_sender(cols, rows).open_message, recorder_name="rec",
                       x25519_secret=bytes(RECORDER_X), authority_key=bytes(AUTHORITY.verify_key),
                       agent="web1")


def test_the_largest_accepted_size_opens() -> None:
    opened = open_recording(_sender(MAX_COLS, MAX_ROWS).open_message, recorder_name="rec",
                            x25519_secret=bytes(RECORDER_X),
                            authority_key=bytes(AUTHORITY.verify_key), agent="web1")
    assert (opened.body["cols"], opened.body["rows"]) == (MAX_COLS, MAX_ROWS)


def test_resize_events_outside_the_limits_are_ignored() -> None:
    assert resize_of(RESIZE.pack(120, 40)) == (120, 40)
    assert resize_of(RESIZE.pack(MAX_COLS, MAX_ROWS)) == (MAX_COLS, MAX_ROWS)
    for bad in (RESIZE.pack(0, 24), RESIZE.pack(80, 0), RESIZE.pack(65535, 65535),
                RESIZE.pack(MAX_COLS + 1, 24), b"\x00\x50", RESIZE.pack(80, 24) + b"\x00"):
        assert resize_of(bad) is None, bad


# ----- stored recordings with a bad size, read under a memory cap -----


SID = "ab" * 16


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A stored session whose row says 2**31 x -1, with huge, empty and valid RESIZEs."""
    add_session(tmp_path, SID, [
        (0.0, EventKind.OUTPUT, b"hello geometry\r\n"),
        (0.1, EventKind.RESIZE, RESIZE.pack(65535, 65535)),
        (0.2, EventKind.OUTPUT, b"still here\r\n"),
        (0.3, EventKind.RESIZE, RESIZE.pack(0, 0)),
        (0.4, EventKind.RESIZE, RESIZE.pack(120, 40)),
        (0.5, EventKind.OUTPUT, b"after the resizes\r\n"),
    ], cols=2**31, rows=-1)
    return tmp_path


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=60, preexec_fn=_capped,
                          stdin=subprocess.DEVNULL)


def test_export_clamps_the_size_and_ignores_bad_resizes(store: Path) -> None:
    r = _run(TETHER, "export", SID, "--store", str(store))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert (lines[0]["width"], lines[0]["height"]) == (MAX_COLS, 1)
    assert [e[2] for e in lines[1:] if e[1] == "r"] == ["120x40"]
    text = _run(TETHER, "export", SID, "--store", str(store), "--format", "text")
    assert text.returncode == 0, text.stderr
    assert b"hello geometry" in text.stdout and b"after the resizes" in text.stdout


def test_replay_clamps_the_size(store: Path) -> None:
    r = _run(TETHER, "replay", SID, "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert b"hello geometry" in r.stdout and b"after the resizes" in r.stdout


def test_indexing_clamps_the_size(store: Path) -> None:
    code = ("import sys; from pathlib import Path; from tether.recorder.indexer import IndexWorker; "
            "IndexWorker(Path(sys.argv[1])).drain()")
    r = _run(sys.executable, "-c", code, str(store))
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(store / "search.db")
    try:
        progress = db.execute("SELECT finished, error FROM index_progress WHERE sid=?", (SID,)).fetchone()
        texts = [t for (t,) in db.execute("SELECT text FROM text_rows WHERE sid=?", (SID,))]
    finally:
        db.close()
    assert progress == (1, None), progress
    assert any("after the resizes" in t for t in texts), texts


def test_the_consoles_replay_gets_a_clamped_size(store: Path) -> None:
    answer = QueryWorker(store, b"\x00" * 32).answer("fetch", {"sid": SID})
    assert answer["ok"], answer
    header = json.loads(answer["result"]["asciicast"].splitlines()[0])
    assert (header["width"], header["height"]) == (MAX_COLS, 1)


# ----- the recorder service refuses the OPEN on a real broker -----


def test_the_recorder_refuses_an_open_with_a_bad_size(stack: Stack) -> None:
    """A compromised agent (its own key, a real grant) sends OPENs with bad sizes."""
    from tether import grants
    from tether.authority.provision import authority_identity
    from tether.edge.keys import Identity
    from tether.edge.mqtt import BrokerSettings, MqttConnection
    from tether.topics import REC, Topics

    agent = stack.add_agent("sizer")
    name = agent.name
    authority = authority_identity(stack.home)
    recorder = Identity.load(stack.home.recorder_identity())

    def sender(cols: Any, rows: Any) -> RecordingSender:
        now = time.time()
        grant = grants.Grant(
            user="alice", agent=name, agent_key=b64e(agent.public_key),
            client_key=b64e(os.urandom(32)), mqtt_name="alice", mode="shell", run_as="root",
            command=None, max_duration=60, idle_timeout=0, recording="required",
            recorder=recorder.name, reason=None, jti=grants.new_jti(os.urandom), expires=now + 300,
            recorder_x25519=b64e(recorder.x25519_public), recorder_ed25519=b64e(recorder.public_key))
        sid = os.urandom(16)
        return RecordingSender(
            sid=sid, signing_key=agent.signing_key, recorder_x25519=recorder.x25519_public,
            recorder_ed25519=recorder.public_key,
            body=session_body(sid=sid, grant_token=grants.issue(authority.signing_seed, grant, now),
                              agent=name, client="alice", cols=cols, rows=rows, term=None,
                              started=now),
            now=time.monotonic(), rand=os.urandom)

    async def attempt(senders: list[RecordingSender]) -> list[str | None]:
        topics = Topics()

        def on_message(_topic: str, payload: bytes) -> None:
            for s in senders:
                s.on_message(payload, time.monotonic())

        conn = MqttConnection(BrokerSettings.from_identity(name, agent.broker), on_message)
        await conn.connect()
        await conn.subscribe_confirmed(topics.agent_recorder_acks(name))
        deadline = time.monotonic() + 15
        try:  # until each is refused, or opened and its (empty) recording ended and acked
            while (any(s.refused is None and not s.done for s in senders)
                   and time.monotonic() < deadline):
                for s in senders:
                    if s.opened and s.next_index == 0:
                        s.finish(time.monotonic())
                    for blob in s.take_outgoing(time.monotonic()):
                        conn.publish(topics.session(name, "alice", s.sid.hex(), REC), blob, qos=1)
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        return ["opened" if s.opened else s.refused for s in senders]

    sizes = [(70000, 24), (-1, 24), (2**31, 2**31), (80, 24)]
    answers = asyncio.run(attempt([sender(c, r) for c, r in sizes]))
    for (c, r), answer in zip(sizes[:-1], answers[:-1], strict=True):
        assert answer is not None and "terminal size" in answer, (c, r, answer)
    assert answers[-1] == "opened"  # the same agent and grant shape with a sane size
    db = sqlite3.connect(stack.home.recordings / "index.db")
    try:
        stored = db.execute("SELECT cols, rows FROM sessions WHERE agent=?", (name,)).fetchall()
    finally:
        db.close()
    assert stored == [(80, 24)]
