"""Claims of the docs that had no test and are checkable without a broker (docs/testing.md,
"Claims and the tests that prove them"): the session environment's allow-list
(threat-model §4, run-as row), the local payload cap (architecture §4), how often the
agent signs the recording's chain (threat-model §4, architecture §6), the mode of
$TETHER_HOME (threat-model §4, key-file hygiene), and three decisions of the authority
service called directly: grants live 300 s (threat-model §4, operations §8), an invalid
policy denies everything until fixed (operations §4), and agents get no grants
(protocol.md §18); the recorder's store and `tether export -o` files are private
(threat-model §4, operations §7); the CLI's stdin holds one chunk while the session
cannot send (architecture §4); the recorder refuses an OPEN whose grant names another
client connection (threat-model §4)."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import pwd
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from test_export import export
from test_replay import make_store

from tether import grants
from tether.agent.process import DEFAULT_PATH, RunAs, session_env
from tether.agent.service import AgentService
from tether.authority.provision import authority_identity, ensure_local_setup
from tether.authority.service import GRANT_LIFETIME, AuthorityService
from tether.client.stdin import CHUNK, StdinReader
from tether.edge.home import Home
from tether.edge.keys import Identity, write_private_file
from tether.edge.mqtt import MAX_PAYLOAD, BrokerSettings, MqttConnection
from tether.encoding import b64e
from tether.recevents import EventKind
from tether.recorder import db as recdb
from tether.recorder.service import RecorderService
from tether.recording import (
    CHECKPOINT_EVERY,
    CHECKPOINT_SECONDS,
    RecordingReceiver,
    RecordingSender,
    open_recording,
    session_body,
)
from tether.topics import REC, Topics

# ----- the environment a session starts with -----

CLIENT_MAY_SET = {"LANG", "LC_ALL", "LC_CTYPE", "COLORTERM"}
FIXED = {"HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "TERM"}


def _run_as() -> RunAs:
    pw = pwd.getpwuid(os.getuid())
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, [], pw.pw_dir, "/bin/sh", False)


def test_session_env_is_the_fixed_set_plus_four_client_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent's own environment must not leak into sessions.
    monkeypatch.setenv("TETHER_AGENT_SECRET", "agent-only")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    ra = _run_as()
    hostile = {"LD_PRELOAD": "/tmp/evil.so", "PATH": "/tmp", "HOME": "/tmp", "BASH_ENV": "/tmp/x",
               "PROMPT_COMMAND": "id", "LANG": "fr_FR.UTF-8", "LC_ALL": "C", "LC_CTYPE": "C.UTF-8",
               "COLORTERM": "truecolor", "TETHER_AGENT_SECRET": "x"}
    env = session_env(ra, "xterm-256color", hostile)
    assert set(env) == FIXED | CLIENT_MAY_SET
    assert env["HOME"] == ra.home and env["USER"] == env["LOGNAME"] == ra.name
    assert env["SHELL"] == ra.shell and env["PATH"] == DEFAULT_PATH and env["TERM"] == "xterm-256color"
    assert {k: env[k] for k in CLIENT_MAY_SET} == {k: hostile[k] for k in CLIENT_MAY_SET}
    # Without a TERM (exec) and without client variables: only the fixed set.
    assert set(session_env(ra, None, {})) == FIXED - {"TERM"}


# ----- the local payload cap -----


def test_a_payload_over_the_cap_is_refused_before_it_leaves() -> None:
    assert MAX_PAYLOAD == 128 * 1024 - 512

    async def go() -> None:
        conn = MqttConnection(BrokerSettings(), lambda _t, _p: None)  # never connected
        with pytest.raises(ValueError, match=f"exceeds the {MAX_PAYLOAD}-byte cap"):
            conn.publish("t", bytes(MAX_PAYLOAD + 1), qos=1)
        conn.publish("t", bytes(MAX_PAYLOAD), qos=0)  # at the cap: accepted (lost offline, as QoS 0)

    asyncio.run(go())


# ----- how often the agent signs the chain -----

NOW = 1_700_000_000.0
AUTHORITY = SigningKey(bytes(range(32)))
AGENT = SigningKey(bytes(range(1, 33)))
RECORDER = SigningKey(bytes(range(3, 35)))
RECORDER_X = PrivateKey(bytes(range(4, 36)))


def _pair() -> tuple[RecordingSender, RecordingReceiver]:
    g = grants.Grant(
        user="alice", agent="web1", agent_key=b64e(bytes(AGENT.verify_key)),
        client_key=b64e(bytes(SigningKey.generate().verify_key)), mqtt_name="alice",
        mode="shell", run_as="alice", command=None, max_duration=3600, idle_timeout=0,
        recording="required", recorder="rec", reason=None, jti=grants.new_jti(os.urandom), expires=NOW + 300,
        recorder_x25519=b64e(bytes(RECORDER_X.public_key)), recorder_ed25519=b64e(bytes(RECORDER.verify_key)))
    sid = os.urandom(16)
    body = session_body(sid=sid, grant_token=grants.issue(bytes(AUTHORITY), dataclasses.replace(g), NOW),
                        agent="web1", client="alice", cols=80, rows=24, term="xterm", started=NOW)
    s = RecordingSender(sid=sid, signing_key=AGENT, recorder_x25519=bytes(RECORDER_X.public_key),
                        recorder_ed25519=bytes(RECORDER.verify_key), body=body, now=NOW, rand=os.urandom)
    s.take_outgoing(NOW)
    r = RecordingReceiver(open_recording(s.open_message, recorder_name="rec", x25519_secret=bytes(RECORDER_X),
                                         authority_key=bytes(AUTHORITY.verify_key), agent="web1"))
    assert s.on_message(r.ack(RECORDER), NOW)
    return s, r


def _events(s: RecordingSender, r: RecordingReceiver, now: float) -> list[Any]:
    got = []
    for blob in s.take_outgoing(now):
        result = r.on_data(blob)
        assert result.chain_error is None
        got += [e for e, _ in result.events]
    r.stored = r.expected
    s.on_message(r.ack(RECORDER), now)
    return got


def test_the_chain_is_signed_every_1024_events() -> None:
    assert CHECKPOINT_EVERY == 1024
    s, r = _pair()
    for i in range(3 * CHECKPOINT_EVERY):
        s.record(EventKind.OUTPUT, b"x", NOW + i * 1e-4)  # 0.3 s in all: only the count matters
    events = _events(s, r, NOW + 1)
    signed = [e.index for e in events if e.kind == EventKind.CHECKPOINT]
    assert signed == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY + 1, 3 * CHECKPOINT_EVERY + 2]
    assert r.chain_ok


def test_the_chain_is_signed_at_the_first_event_5_s_after_the_last_signature() -> None:
    assert CHECKPOINT_SECONDS == 5.0
    s, r = _pair()
    s.record(EventKind.OUTPUT, b"a", NOW + CHECKPOINT_SECONDS - 0.01)
    assert [e.kind for e in _events(s, r, NOW + 5)] == [EventKind.OUTPUT]  # not yet
    # A quiet session is not signed on a timer: nothing until the next event comes...
    assert _events(s, r, NOW + 60) == []
    s.record(EventKind.OUTPUT, b"b", NOW + 60)
    # ...which is then followed by a signature at once.
    assert [e.kind for e in _events(s, r, NOW + 60)] == [EventKind.OUTPUT, EventKind.CHECKPOINT]
    assert r.chain_ok


# ----- $TETHER_HOME -----


def test_tether_home_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    home = Home(tmp_path / "state" / "tether")
    old = os.umask(0)
    try:
        home.ensure()
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.run_dir.stat().st_mode) == 0o700


# ----- the authority's decisions, without a broker -----


def _authority(tmp_path: Path) -> tuple[AuthorityService, Home, str]:
    home = Home(tmp_path / "home")
    ensure_local_setup(home, "127.0.0.1", 1883)
    service = AuthorityService(authority_identity(home), home)
    service._refresh()
    return service, home, Identity.load(home.user_identity).name


EXEC_TRUE = {"type": "grant", "agent": "local", "mode": "exec", "run_as": None, "reason": None,
             "command": ["true"]}


def test_the_authority_issues_grants_for_300_seconds(tmp_path: Path) -> None:
    service, home, user = _authority(tmp_path)
    now = float(int(time.time()))  # grants carry whole seconds
    reply = service._decide(user, f"{user}.1", dict(EXEC_TRUE), now)
    assert reply["ok"], reply
    grant = grants.decode(authority_identity(home).public_key, reply["grant"])
    assert grant.expires - now == GRANT_LIFETIME == 300


def test_an_invalid_policy_denies_every_grant_until_it_is_fixed(tmp_path: Path) -> None:
    service, home, user = _authority(tmp_path)
    good = home.policy.read_bytes()
    write_private_file(home.policy, good + b"\n[[statement]]\neffect = \"allow\"\nusers = [\n")
    service._refresh()
    reply = service._decide(user, f"{user}.1", dict(EXEC_TRUE), time.time())
    assert not reply["ok"] and "the access policy is invalid" in reply["error"], reply
    write_private_file(home.policy, good)
    service._refresh()
    assert service._decide(user, f"{user}.1", dict(EXEC_TRUE), time.time())["ok"]


def test_an_agent_gets_no_grant_even_where_a_users_glob_matches_its_name(tmp_path: Path) -> None:
    service, home, _user = _authority(tmp_path)
    write_private_file(home.policy, b'[[statement]]\nid = "all"\neffect = "allow"\nusers = ["*"]\n'
                                    b'agents = ["*"]\nactions = ["shell", "exec"]\nrun_as = ["root"]\n')
    service._refresh()
    reply = service._decide("local", "local", dict(EXEC_TRUE), time.time())
    assert reply == {"ok": False, "error": "agents may only rotate their keys"}


# ----- the recorder's store and exports are private -----


def test_the_store_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    old = os.umask(0)
    try:
        db = recdb.connect(store)
        db.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "logs").stat().st_mode) == 0o700
    files = [p for p in store.iterdir() if p.is_file()]
    assert recdb.db_path(store) in files
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files


def test_export_to_a_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    sid = make_store(store, [(0.0, EventKind.OUTPUT, b"secret output\r\n")])
    old = os.umask(0)
    try:
        for fmt in ("asciicast", "text"):
            out = tmp_path / f"s.{fmt}"
            r = export([sid, "--store", str(store), "--format", fmt, "-o", str(out)])
            assert r.returncode == 0, r.stderr
            assert b"secret output" in out.read_bytes()
            assert stat.S_IMODE(out.stat().st_mode) == 0o600, fmt
    finally:
        os.umask(old)


# ----- the CLI's stdin holds at most one chunk while the session has no credit -----


def test_stdin_waits_with_one_chunk_while_the_session_cannot_send() -> None:
    total = 4 << 20
    written = [0]

    def writer(fd: int) -> None:
        block = b"x" * 65536
        try:
            while written[0] < total:
                written[0] += os.write(fd, block)
        finally:
            os.close(fd)

    async def go() -> None:
        r, w = os.pipe()
        loop = asyncio.get_running_loop()
        credit = loop.create_future()
        chunks: list[int] = []

        def on_chunk(data: bytes) -> asyncio.Future[None] | None:
            chunks.append(len(data))
            return credit if len(chunks) == 1 else None  # the first send finds no credit

        reader = StdinReader(on_chunk, r)
        thread = threading.Thread(target=writer, args=(w,), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not chunks:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # Nothing more is read while the session cannot send: the writer fills the
            # pipe and blocks. (The wait is the test: it shows reads that did not happen.)
            await asyncio.sleep(0.5)
            assert chunks == [CHUNK]
            assert written[0] <= CHUNK + fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)  # one chunk read, the rest in the pipe
            credit.set_result(None)
            await asyncio.wait_for(reader.eof.wait(), 30)
            assert sum(chunks) == total
        finally:
            reader.close()
            thread.join(10)
            os.close(r)

    asyncio.run(go())


# ----- the recorder takes an OPEN only from the grant's own client connection -----


def test_the_recorder_refuses_an_open_whose_grant_names_another_connection(tmp_path: Path) -> None:
    authority, agent = SigningKey.generate(), SigningKey.generate()
    recorder = Identity.generate("rec", "recorder", with_x25519=True)
    recorder.authority = {"ed25519": b64e(bytes(authority.verify_key))}
    now = time.time()
    grant = grants.Grant(
        user="alice", agent="web1", agent_key=b64e(bytes(agent.verify_key)),
        client_key=b64e(bytes(SigningKey.generate().verify_key)), mqtt_name="alice.1", mode="exec",
        run_as="alice", command=["true"], max_duration=60, idle_timeout=0, recording="required",
        recorder="rec", reason=None, jti=grants.new_jti(os.urandom), expires=now + 300,
        recorder_x25519=b64e(recorder.x25519_public), recorder_ed25519=b64e(recorder.public_key))
    sid = os.urandom(16)
    body = session_body(sid=sid, grant_token=grants.issue(bytes(authority), grant, now), agent="web1",
                        client="alice.1", cols=80, rows=24, term=None, started=now)
    sender = RecordingSender(sid=sid, signing_key=agent, recorder_x25519=recorder.x25519_public,
                             recorder_ed25519=recorder.public_key, body=body, now=now, rand=os.urandom)
    topics = Topics()

    async def go() -> None:
        service = RecorderService(recorder, tmp_path / "recordings")
        try:
            # The same OPEN, as it would arrive from another of alice's connections.
            service._on_message(topics.session("web1", "alice.2", sid.hex(), REC), sender.open_message)
            assert service.stats["rejected"] == 1 and sid.hex() not in service.live
            service._on_message(topics.session("web1", "alice.1", sid.hex(), REC), sender.open_message)
            assert service.stats["rejected"] == 1 and sid.hex() in service.live
        finally:
            await service.stop()

    asyncio.run(go())


# ----- a recorder that re-acks an old count is silent (docs/testing.md row 83) -----


def test_acks_without_progress_do_not_answer_what_the_recorder_owes() -> None:
    """A recorder whose disk refuses writes resumes the session from its log at each resend
    and acks the same count again; that must not keep a required session from freezing
    (10 s) and ending (30 s), nor keep an optional one paced."""
    s, r = _pair()
    s.record(EventKind.OUTPUT, b"kept", NOW + 1)
    assert [e.data for e in _events(s, r, NOW + 1)] == [b"kept"]
    s.record(EventKind.OUTPUT, b"never stored", NOW + 2)
    for blob in s.take_outgoing(NOW + 2):
        r.on_data(blob)  # received, but the disk refuses it: not stored
    stale = r.ack(RECORDER)  # the count before "never stored"
    for t in range(3, 40):
        s.on_message(stale, NOW + t)
    assert s.acked == r.stored and s.unacked_bytes > 0
    assert s.silent_for(NOW + 39) == pytest.approx(37)  # owed since NOW + 2
    r.stored = r.expected  # stored at last: progress, heard
    s.on_message(r.ack(RECORDER), NOW + 40)
    assert s.silent_for(NOW + 40) == 0


# ----- console passphrases: at least 12 characters (docs/testing.md row 103) -----


@pytest.mark.parametrize("passphrase, accepted", [
    ("a" * 11, False), ("a" * 12, True),
    ("é" * 11, False), ("é" * 12, True),  # characters, not bytes: 22 and 24 bytes
])
def test_a_console_passphrase_needs_12_characters(tmp_path: Path, passphrase: str, accepted: bool) -> None:
    import subprocess

    from stack import TETHER

    from tether.authority.registry import Registry

    home = Home(tmp_path / "home")
    ensure_local_setup(home, "127.0.0.1", 1883)
    env = dict(os.environ, TETHER_HOME=str(home.root))
    r = subprocess.run([TETHER, "authority", "user", "add", "dave", "--console", "--passphrase-stdin"],
                       input=passphrase.encode() + b"\n", capture_output=True, env=env, timeout=60)
    registered = "dave" in Registry.load(home.registry).principals
    assert (r.returncode == 0) is accepted and registered is accepted, (r.stdout, r.stderr)
    if not accepted:
        assert b"at least 12 characters" in r.stderr, r.stderr


# ----- console HTTP request head: 16 KiB (docs/testing.md row 113) -----


def test_a_console_request_head_of_16_kib_is_served_and_one_byte_more_gets_431(tmp_path: Path) -> None:
    """16 KiB counts the request line and header lines up to the blank line (the final
    CRLF CRLF not included): asyncio's readuntil limit, which the server sets to MAX_HEADER."""
    from test_console import _dist, _get

    from tether.client.console_server import ConsoleServer, console_config

    config = console_config("ws://127.0.0.1:8083", {"ed25519": "E", "x25519": "X"}, "P")

    def request(head_bytes: int) -> bytes:
        start = b"GET / HTTP/1.1\r\nConnection: close\r\nX-Pad: "
        return start + b"y" * (head_bytes - len(start)) + b"\r\n\r\n"

    async def main() -> None:
        server = ConsoleServer(_dist(tmp_path), config, "127.0.0.1", 0)
        await server.start()
        try:
            at_limit = request(16 * 1024)
            assert len(at_limit) == 16 * 1024 + 4
            status, _, body = await _get(server.port, at_limit)
            assert status == 200 and body
            # One byte more: 431, and the connection is closed (_get reads to EOF).
            status, headers, body = await asyncio.wait_for(_get(server.port, request(16 * 1024 + 1)), 10)
            assert status == 431 and body == b"request headers too large\n", (status, body)
            assert headers.get("connection") == "close"
        finally:
            await server.stop()

    asyncio.run(main())


# ----- the agent's HELLO limit: 10 a second, burst 20, per client connection (row 100) -----


def test_the_agent_takes_20_hellos_at_once_then_10_a_second_per_connection(tmp_path: Path) -> None:
    agent = Identity.generate("local", "agent", with_x25519=True)
    agent.authority = {"ed25519": b64e(bytes(AUTHORITY.verify_key))}
    limit = AgentService(agent, replay_file=tmp_path / "replay.json")._hello_limit
    t = 1000.0
    assert [limit.allow("bob.1", t) for _ in range(21)] == [True] * 20 + [False]
    assert limit.allow("bob.2", t)  # another connection of the same user has its own
    # 10 a second: one more every 0.1 s, and not sooner.
    assert not limit.allow("bob.1", t + 0.099)
    assert limit.allow("bob.1", t + 0.1) and not limit.allow("bob.1", t + 0.1)
    assert [limit.allow("bob.1", t + 1.1) for _ in range(11)] == [True] * 10 + [False]
    # Saved up to 20, no more, however long the pause.
    assert [limit.allow("bob.1", t + 3600) for _ in range(21)] == [True] * 20 + [False]


def test_the_agent_limits_hellos_by_the_connection_they_came_from(tmp_path: Path) -> None:
    """The service's own check (real clock): one connection's flood does not use up another's."""
    agent = Identity.generate("local", "agent", with_x25519=True)
    agent.authority = {"ed25519": b64e(bytes(AUTHORITY.verify_key))}
    service = AgentService(agent, replay_file=tmp_path / "replay.json")
    flood = [service._hello_allowed("bob.1") for _ in range(200)]
    # At most 20 plus 10 a second over the (short) time these calls took.
    assert 20 <= sum(flood) <= 25 and service.stats["hello_rate_limited"] == 200 - sum(flood)
    assert all(service._hello_allowed("bob.2") for _ in range(20))  # the same user, another connection


# ----- the authority's nonce cap: 100,000 live (row 19) -----


def test_the_authority_keeps_100000_live_nonces_and_refuses_past_that(tmp_path: Path) -> None:
    from tether.authority.nonces import NonceJournal
    from tether.encoding import dumps

    path = tmp_path / "nonces.jsonl"
    now = time.time()
    # 99,999 live nonces from before a restart, as the authority's journal holds them.
    write_private_file(path, b"".join(dumps([f"n{i}", now + (1 if i == 0 else 240)]) + b"\n"
                                      for i in range(99_999)))
    journal = NonceJournal(path, now)  # as AuthorityService opens it: the default cap
    try:
        assert len(journal.cache) == 99_999
        assert journal.remember("the 100000th", now + 240, now) is None
        assert journal.remember("one more", now + 240, now) == "too many requests in the last minutes"
        assert "one more" not in journal.cache
        # Room again as soon as one expires (n0, at now + 1).
        assert journal.remember("one more", now + 240, now + 2) is None
        assert journal.remember("and another", now + 240, now + 2) == "too many requests in the last minutes"
    finally:
        journal.close()
