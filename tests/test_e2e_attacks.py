"""Hostile broker traffic: injected frames, forged or misused grants, replayed handshakes,
and a broker restart in the middle of a stream."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from stack import Spy, Stack, wait_for
from support.agent_peer import Answer, Peer

from tether import grants
from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.encoding import b64e
from tether.handshake import ClientHandshake, HandshakeRefused
from tether.topics import A2C, Topics


class Injector(threading.Thread):
    """Re-publishes what the spy captures on session topics: duplicated, tampered with,
    replayed out of order, and copied into the other session."""

    def __init__(self, spy: Spy) -> None:
        super().__init__(daemon=True)
        self.spy = spy
        self.inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.rng = random.Random(7)
        self.history: dict[str, list[bytes]] = {}
        self.injected = 0
        self.sent: set[bytes] = set()
        spy.client.on_message = self._on_message

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if "/s/" in msg.topic and not msg.retain:
            self.inbox.put((msg.topic, bytes(msg.payload)))

    def run(self) -> None:
        while (item := self.inbox.get()) is not None:
            topic, payload = item
            if payload[:1] == b"\x81":
                continue  # handshake messages are covered by their own tests
            if payload in self.sent:
                continue  # our own injection coming back: re-injecting it would snowball
            sid_leg = topic.rsplit("/", 2)
            mine = self.history.setdefault(topic, [])
            mine.append(payload)
            tampered = bytearray(payload)
            tampered[self.rng.randrange(len(tampered))] ^= 0x40
            out = [payload, bytes(tampered)]
            if len(mine) > 3:
                out.append(self.rng.choice(mine[:-1]))  # an old frame, out of order
            others = [t for t in self.history if t != topic and t.endswith("/" + sid_leg[-1])]
            for other in others:  # a frame of this session sent into the other one
                self.spy.client.publish(other, payload, 0)
                self.injected += 1
            for blob in out:
                self.sent.add(blob)
                self.spy.client.publish(topic, blob, 0)
                self.injected += 1

    def stop(self) -> None:
        self.inbox.put(None)


def test_injected_frames_are_dropped_and_sessions_carry_on(stack: Stack) -> None:
    spy = Spy(stack)
    injector = Injector(spy)
    injector.start()
    data_a = os.urandom(3 * 1024 * 1024)
    data_b = os.urandom(2 * 1024 * 1024)
    try:
        a = stack.popen("run", "local", "--", "sha256sum", stdin=-1, stdout=-1, stderr=-1)
        b = stack.popen("run", "local", "--", "sh", "-c", "cat; echo done-b >&2", stdin=-1, stdout=-1, stderr=-1)
        results: dict[str, tuple[bytes, bytes]] = {}
        ta = threading.Thread(target=lambda: results.__setitem__("a", a.communicate(data_a, timeout=120)))
        tb = threading.Thread(target=lambda: results.__setitem__("b", b.communicate(data_b, timeout=120)))
        ta.start(), tb.start()
        ta.join(), tb.join()
    finally:
        injector.stop()
        injector.join(10)
        spy.close()
    assert injector.injected > 50, "nothing was injected; the test proves nothing"
    assert a.returncode == 0, results["a"][1]
    assert results["a"][0].split()[0].decode() == hashlib.sha256(data_a).hexdigest()
    assert b.returncode == 0, results["b"][1]
    assert results["b"][0] == data_b
    assert results["b"][1] == b"done-b\n"
    # The recorder streams were attacked the same way; both recordings are whole.
    import sqlite3

    db = sqlite3.connect(stack.home.recordings / "index.db", timeout=30)
    try:
        def newest_two_closed() -> list[str] | None:
            rows = db.execute("SELECT sid, status FROM sessions ORDER BY started DESC LIMIT 2")
            got = [(str(sid), status) for sid, status in rows]
            return [sid for sid, _ in got] if all(st == "closed" for _, st in got) else None
        sids = wait_for(newest_two_closed, what="both recordings closed")
    finally:
        db.close()
    for sid in sids:
        v = stack.tether("verify", sid)
        assert v.returncode == 0, v.stdout


# ----- grants and handshakes, with a hand-driven client -----


def _grant(stack: Stack, user: Identity, slot: str, **changes: Any) -> str:
    authority = Identity.load(stack.home.authority_identity)
    agent = Identity.load(stack.home.agent_identity("local"))
    now = time.time()
    fields: dict[str, Any] = dict(
        user=user.name, agent="local", agent_key=b64e(agent.public_key), client_key=b64e(user.public_key),
        mqtt_name=slot, mode="exec", run_as=getpass.getuser(), command=["true"],
        max_duration=60, idle_timeout=0, recording="off", recorder=None, reason=None,
        jti=grants.new_jti(os.urandom), expires=now + 120,
    )
    fields.update(changes)
    g = grants.Grant(**fields)
    issued = now if g.expires > now else g.expires - 60
    return grants.issue(authority.signing_seed, g, issued)


async def _handshake(stack: Stack, token: str, *,
                     user: Identity | None = None, sid: bytes | None = None) -> tuple[str, bytes]:
    """Send a HELLO for `token`; return ("accepted" | refusal reason, the HELLO sent)."""
    user = user or Identity.load(stack.home.user_identity)
    agent = Identity.load(stack.home.agent_identity("local"))
    topics = Topics()
    slot = f"{user.name}.7" if user.kind == "user" else user.name
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    sid = sid or os.urandom(16)

    def on_message(topic: str, payload: bytes) -> None:
        replies.put_nowait(payload)

    settings = BrokerSettings.from_identity(user.name, user.broker)
    settings.username = settings.client_id = slot
    conn = MqttConnection(settings, on_message)
    await conn.connect()
    try:
        await conn.subscribe_confirmed(topics.session("local", slot, sid.hex(), A2C), 1)
        hs = ClientHandshake(client_key=user.signing_key, agent_signing_key=agent.public_key,
                             agent_x25519=agent.x25519_public, sid=sid,
                             request={"grant": token, "mode": "exec", "command": ["true"]},
                             rand=os.urandom)
        msg = hs.hello(time.time())
        conn.publish(topics.handshake("local", slot), msg, qos=1)
        reply = await asyncio.wait_for(replies.get(), 10)
        try:
            hs.on_reply(reply)
        except HandshakeRefused as exc:
            return str(exc), msg
        return "accepted", msg
    finally:
        await conn.close()


def _mqtt_name(stack: Stack) -> str:
    return Identity.load(stack.home.user_identity).name + ".7"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"agent": "other"}, "grant is for agent 'other', not this one ('local')"),
        ({"expires": -1.0}, "grant has expired"),
        ({"client_key": b64e(bytes(32 * [7]))}, "grant is bound to another client key"),
        ({"mqtt_name": "someone-else"}, "grant was issued to another client connection"),
        ({"agent_key": b64e(bytes(32))}, "grant is for agent 'local', not this one"),
    ],
    ids=["other-agent", "expired", "other-client-key", "other-connection", "other-agent-key"],
)
def test_misused_grants_are_refused(stack: Stack, changes: dict[str, Any], reason: str) -> None:
    user = Identity.load(stack.home.user_identity)
    if changes.get("expires") == -1.0:
        changes = {"expires": time.time() - 5}
    token = _grant(stack, user, _mqtt_name(stack), **changes)
    outcome, _ = asyncio.run(_handshake(stack, token))
    assert reason in outcome


def test_good_grant_is_accepted_once(stack: Stack) -> None:
    user = Identity.load(stack.home.user_identity)
    token = _grant(stack, user, _mqtt_name(stack))
    assert asyncio.run(_handshake(stack, token))[0] == "accepted"
    again, _ = asyncio.run(_handshake(stack, token))
    assert "grant was already used" in again


def test_forged_grant_is_refused(stack: Stack) -> None:
    user = Identity.load(stack.home.user_identity)
    forger = Identity.generate("forger", "authority")
    agent = Identity.load(stack.home.agent_identity("local"))
    g = grants.Grant(user=user.name, agent="local", agent_key=b64e(agent.public_key),
                     client_key=b64e(user.public_key), mqtt_name=_mqtt_name(stack), mode="exec",
                     run_as="root", command=["true"], max_duration=60, idle_timeout=0, recording="off",
                     recorder=None, reason=None, jti=grants.new_jti(os.urandom), expires=time.time() + 60)
    token = grants.issue(forger.signing_seed, g, time.time())
    outcome, _ = asyncio.run(_handshake(stack, token))
    assert "grant signature invalid" in outcome


def test_replayed_hello_is_refused(stack: Stack) -> None:
    async def go() -> tuple[Answer, Answer]:
        async with Peer(stack) as peer:
            first = await peer.hello()
            # The same bytes again; the refusal is sealed to the HELLO's sender, whose
            # handshake (kept here) decrypts it.
            return first, await peer.hello(handshake=first.handshake, raw=first.hello)
    first, replay = asyncio.run(go())
    assert first.accepted, first.refused
    assert replay.refused == "replayed handshake message"


# ----- broker restart -----


def test_stream_survives_broker_restart(fresh_stack: Stack, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(20 * 1024 * 1024))
    proc = fresh_stack.popen("run", "local", "--", "cat", str(blob), stdout=-1, stderr=-1)
    assert proc.stdout is not None
    received = bytearray()
    while len(received) < 4 * 1024 * 1024:
        chunk = proc.stdout.read1(1 << 16)
        assert chunk, "stream ended early"
        received += chunk
    # The client is not reading now, so the agent is blocked on credit mid-stream.
    fresh_stack.broker.restart()
    rest, err = proc.communicate(timeout=120)
    received += rest
    assert proc.returncode == 0, err
    assert len(received) == blob.stat().st_size
    assert hashlib.sha256(received).digest() == hashlib.sha256(blob.read_bytes()).digest()
    wait_for(lambda: fresh_stack.agent_status("local") == "online", what="agent back online")


# ----- a hostile principal with full broker access -----
# The broker is untrusted for content (docs/sources.md#the-broker-is-untrusted-for-content).


def test_admin_cannot_open_a_session_without_a_grant(stack: Stack) -> None:
    spy = Identity.load(stack.spy_identity)
    for token in ("", "v4.public.AAAA", "not a grant"):
        outcome, _ = asyncio.run(_handshake(stack, token, user=spy))
        assert "grant" in outcome and outcome != "accepted", outcome


def test_admin_cannot_use_a_captured_grant_from_its_own_connection(stack: Stack) -> None:
    user = Identity.load(stack.home.user_identity)
    spy = Identity.load(stack.spy_identity)
    captured = _grant(stack, user, _mqtt_name(stack))  # a genuine grant, issued to the user
    outcome, _ = asyncio.run(_handshake(stack, captured, user=spy))
    assert "grant is bound to another client key" in outcome
    # Even the user's key would not help it: the grant names the user's connection.
    rebound = _grant(stack, user, _mqtt_name(stack), client_key=b64e(spy.public_key))
    outcome, _ = asyncio.run(_handshake(stack, rebound, user=spy))
    assert "grant was issued to another client connection" in outcome


def test_admin_cannot_change_a_grants_run_as(stack: Stack) -> None:
    import json

    from tether.encoding import b64d

    user = Identity.load(stack.home.user_identity)
    genuine = _grant(stack, user, _mqtt_name(stack), run_as="nobody")
    body = b64d(genuine.split(".")[2])
    claims = json.loads(body[:-64])
    claims["run_as"] = "root"
    forged_body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode() + body[-64:]
    forged = "v4.public." + b64e(forged_body)
    outcome, _ = asyncio.run(_handshake(stack, forged, user=user))
    assert "grant signature invalid" in outcome
