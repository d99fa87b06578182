"""Tests for tether.handshake: the three-message SIGMA-style session handshake."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether.encoding import b64e
from tether.handshake import (
    HS_VERSION,
    MAX_SKEW,
    PREFIX,
    AgentHandshake,
    ClientHandshake,
    HandshakeError,
    HandshakeRefused,
    Hello,
    HelloRejected,
    HsType,
    PendingSession,
    SessionKeys,
    message_sid,
    message_type,
)

NOW = 1_700_000_000.0
REQUEST = {"grant": "v4.public.example", "mode": "shell", "term": "xterm-256color"}
EXTRA = {"run_as": "alice", "mode": "shell", "max_duration": 3600}
EPH = slice(PREFIX.size, PREFIX.size + 32)  # the ephemeral key in HELLO and ACCEPT

# Points of small order on Curve25519 (https://cr.yp.to/ecdh.html#validate): any DH with
# them gives a result the peer does not control.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]
LOW_ORDER_IDS = ["zero", "one", "order8-a", "order8-b", "p-1"]


@dataclass
class Agent:
    key: SigningKey
    x: PrivateKey
    hs: AgentHandshake

    @property
    def public(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def x_public(self) -> bytes:
        return bytes(self.x.public_key)


def make_agent(key: SigningKey | None = None, x: PrivateKey | None = None) -> Agent:
    key = key or SigningKey.generate()
    x = x or PrivateKey.generate()
    return Agent(key, x, AgentHandshake(key, bytes(x), rand=os.urandom))


def make_client(
    agent: Agent, sid: bytes | None = None, key: SigningKey | None = None, **request: Any
) -> ClientHandshake:
    return ClientHandshake(
        client_key=key or SigningKey.generate(),
        agent_signing_key=agent.public,
        agent_x25519=agent.x_public,
        sid=sid or os.urandom(16),
        request=dict(REQUEST, **request),
        rand=os.urandom,
    )


def flip(msg: bytes, i: int, mask: int = 0x01) -> bytes:
    out = bytearray(msg)
    out[i] ^= mask
    return bytes(out)


def run(agent: Agent, client: ClientHandshake, now: float = NOW) -> tuple[
    bytes, Hello, PendingSession, bytes, SessionKeys, SessionKeys
]:
    hello_msg = client.hello(now)
    hello = agent.hs.open_hello(hello_msg, now)
    pending = agent.hs.accept(hello, EXTRA)
    confirm, client_keys = client.on_reply(pending.accept)
    agent_keys = pending.on_confirm(confirm)
    return hello_msg, hello, pending, confirm, client_keys, agent_keys


# ----- success -----


def test_full_handshake_agrees_on_keys() -> None:
    agent = make_agent()
    ckey = SigningKey.generate()
    sid = os.urandom(16)
    client = make_client(agent, sid=sid, key=ckey)
    hello_msg, hello, pending, confirm, ck, ak = run(agent, client)
    assert ck == ak
    assert len(ck.c2a) == len(ck.a2c) == 32
    assert ck.c2a != ck.a2c
    # What each side learns about the other.
    assert hello.sid == sid
    assert hello.client_key == bytes(ckey.verify_key)
    assert hello.body["client_key"] == b64e(bytes(ckey.verify_key))
    assert hello.body["ts"] == NOW
    for k, v in REQUEST.items():
        assert hello.body[k] == v
    assert client.accepted == EXTRA
    # Message framing.
    assert message_type(hello_msg) == HsType.HELLO
    assert message_type(pending.accept) == HsType.ACCEPT
    assert message_type(confirm) == HsType.CONFIRM
    for msg in (hello_msg, pending.accept, confirm):
        assert msg[0] == HS_VERSION
        assert message_sid(msg) == sid
    # The grant and the request travel encrypted; the broker never sees them.
    assert b"v4.public.example" not in hello_msg
    assert b"xterm" not in hello_msg
    assert b"alice" not in pending.accept


def test_each_session_gets_fresh_keys() -> None:
    agent = make_agent()
    ckey = SigningKey.generate()
    keys = [run(agent, make_client(agent, key=ckey))[4] for _ in range(3)]
    assert len({k.c2a for k in keys} | {k.a2c for k in keys}) == 6


def test_accepted_is_empty_when_agent_sends_no_extra() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello = agent.hs.open_hello(client.hello(NOW), NOW)
    pending = agent.hs.accept(hello, {})
    confirm, ck = client.on_reply(pending.accept)
    assert pending.on_confirm(confirm) == ck
    assert client.accepted == {}


def test_sid_must_be_16_bytes() -> None:
    agent = make_agent()
    with pytest.raises(ValueError):
        make_client(agent, sid=bytes(15))


# ----- tampering -----


def test_every_tampered_hello_fails() -> None:
    agent = make_agent()
    client = make_client(agent)
    msg = client.hello(NOW)
    for i in range(len(msg)):
        with pytest.raises(HandshakeError) as info:
            agent.hs.open_hello(flip(msg, i), NOW)
        # Never mistaken for an authentic but replayed/stale HELLO.
        assert not isinstance(info.value, HelloRejected), i
    # The untouched message still works afterwards (no failed attempt poisoned it).
    assert agent.hs.open_hello(msg, NOW).sid == client.sid


def test_every_tampered_accept_fails() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello = agent.hs.open_hello(client.hello(NOW), NOW)
    pending = agent.hs.accept(hello, EXTRA)
    for i in range(len(pending.accept)):
        with pytest.raises(HandshakeError) as info:
            client.on_reply(flip(pending.accept, i))
        assert not isinstance(info.value, HandshakeRefused), i
    confirm, ck = client.on_reply(pending.accept)
    assert pending.on_confirm(confirm) == ck


def test_every_tampered_confirm_fails() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello = agent.hs.open_hello(client.hello(NOW), NOW)
    pending = agent.hs.accept(hello, EXTRA)
    confirm, ck = client.on_reply(pending.accept)
    for i in range(len(confirm)):
        with pytest.raises(HandshakeError):
            pending.on_confirm(flip(confirm, i))
    with pytest.raises(HandshakeError):
        pending.on_confirm(confirm[:-1])
    with pytest.raises(HandshakeError):
        pending.on_confirm(confirm + b"\x00")
    assert pending.on_confirm(confirm) == ck


def test_hello_for_another_agent_static_key_fails() -> None:
    agent = make_agent()
    impostor = make_agent(key=agent.key)  # same signing key, but not the X25519 key
    msg = make_client(agent).hello(NOW)
    with pytest.raises(HandshakeError, match="authentication"):
        impostor.hs.open_hello(msg, NOW)


def test_agent_signature_from_other_key_is_refused() -> None:
    """Someone holding the agent's X25519 key but not its signing key cannot finish."""
    agent = make_agent()
    impostor = make_agent(x=agent.x)  # can decrypt HELLO, signs with another Ed25519 key
    client = make_client(agent)
    hello = impostor.hs.open_hello(client.hello(NOW), NOW)
    pending = impostor.hs.accept(hello, EXTRA)
    with pytest.raises(HandshakeError, match="signature"):
        client.on_reply(pending.accept)
    assert client.accepted == {}


def test_confirm_signed_by_other_key_than_hello_fails() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello = agent.hs.open_hello(client.hello(NOW), NOW)
    pending = agent.hs.accept(hello, EXTRA)
    # The client announced one key in HELLO but signs CONFIRM with another one.
    client._client_key = SigningKey.generate()
    confirm, _ = client.on_reply(pending.accept)
    with pytest.raises(HandshakeError, match="signature"):
        pending.on_confirm(confirm)


def test_confirm_of_another_session_fails() -> None:
    agent = make_agent()
    sid = os.urandom(16)
    a = make_client(agent, sid=sid)
    b = make_client(agent, sid=sid)  # same sid, different ephemeral keys
    pa = agent.hs.accept(agent.hs.open_hello(a.hello(NOW), NOW), EXTRA)
    pb = agent.hs.accept(agent.hs.open_hello(b.hello(NOW), NOW), EXTRA)
    confirm_a, _ = a.on_reply(pa.accept)
    confirm_b, _ = b.on_reply(pb.accept)
    with pytest.raises(HandshakeError):
        pb.on_confirm(confirm_a)
    with pytest.raises(HandshakeError):
        pa.on_confirm(confirm_b)
    # A CONFIRM carrying another sid is refused before any crypto.
    other = make_client(agent)
    po = agent.hs.accept(agent.hs.open_hello(other.hello(NOW), NOW), EXTRA)
    confirm_o, _ = other.on_reply(po.accept)
    with pytest.raises(HandshakeError, match="CONFIRM"):
        pa.on_confirm(confirm_o)


def test_pending_session_wants_a_confirm() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello_msg = client.hello(NOW)
    pending = agent.hs.accept(agent.hs.open_hello(hello_msg, NOW), EXTRA)
    with pytest.raises(HandshakeError):
        pending.on_confirm(hello_msg)
    with pytest.raises(HandshakeError):
        pending.on_confirm(pending.accept)


def test_accept_replayed_to_another_client_fails() -> None:
    agent = make_agent()
    sid = os.urandom(16)
    a = make_client(agent, sid=sid)
    b = make_client(agent, sid=sid)
    agent.hs.open_hello(a.hello(NOW), NOW)
    hb = agent.hs.open_hello(b.hello(NOW), NOW)
    pb = agent.hs.accept(hb, EXTRA)
    with pytest.raises(HandshakeError):
        a.on_reply(pb.accept)


# ----- replay and freshness -----


def test_replayed_hello_is_rejected() -> None:
    agent = make_agent()
    client = make_client(agent)
    msg = client.hello(NOW)
    agent.hs.accept(agent.hs.open_hello(msg, NOW), EXTRA)
    with pytest.raises(HelloRejected, match="replayed") as info:
        agent.hs.open_hello(msg, NOW + 1)
    assert info.value.hello.sid == client.sid
    # The agent can tell the real client why; the client sees a refusal.
    with pytest.raises(HandshakeRefused, match="replayed"):
        client.on_reply(info.value.hello.refuse(str(info.value)))


@pytest.mark.parametrize("later", [0.0, 1.0, MAX_SKEW, 2 * MAX_SKEW, 2 * MAX_SKEW + 1, 3600.0])
def test_replay_rejected_at_any_later_time_even_after_forgetting(later: float) -> None:
    agent = make_agent()
    msg = make_client(agent).hello(NOW)
    agent.hs.accept(agent.hs.open_hello(msg, NOW), EXTRA)
    # Plenty of other sessions, so the agent prunes its replay cache.
    for i in range(80):
        t = NOW + later * i / 80
        agent.hs.accept(agent.hs.open_hello(make_client(agent).hello(t), t), EXTRA)
    with pytest.raises(HelloRejected):
        agent.hs.open_hello(msg, NOW + later)


@pytest.mark.parametrize("later", [MAX_SKEW, 2 * MAX_SKEW - 1, 2 * MAX_SKEW, 2 * MAX_SKEW + 0.001, 2 * MAX_SKEW + 1])
def test_client_clock_ahead_replay_is_still_rejected(later: float) -> None:
    """The replay cache must outlive the freshness window of the HELLO's own timestamp."""
    agent = make_agent()
    ts = NOW + MAX_SKEW  # the client's clock is as far ahead as allowed
    msg = make_client(agent).hello(ts)
    agent.hs.accept(agent.hs.open_hello(msg, NOW), EXTRA)
    for i in range(80):  # enough traffic to prune the cache, the clock moving forward
        t = NOW + later * (i + 1) / 80
        agent.hs.accept(agent.hs.open_hello(make_client(agent).hello(t), t), EXTRA)
    with pytest.raises(HelloRejected):
        agent.hs.open_hello(msg, NOW + later)


@pytest.mark.parametrize("offset", [-MAX_SKEW - 1, MAX_SKEW + 1, -86400.0, 86400.0])
def test_stale_or_future_timestamp_rejected(offset: float) -> None:
    agent = make_agent()
    client = make_client(agent)
    msg = client.hello(NOW + offset)
    with pytest.raises(HelloRejected, match="NTP") as info:
        agent.hs.open_hello(msg, NOW)
    with pytest.raises(HandshakeRefused, match="NTP"):
        client.on_reply(info.value.hello.refuse(str(info.value)))


@pytest.mark.parametrize("offset", [-MAX_SKEW + 1, -1.0, 0.0, 1.0, MAX_SKEW - 1])
def test_timestamp_within_skew_accepted(offset: float) -> None:
    agent = make_agent()
    msg = make_client(agent).hello(NOW + offset)
    assert agent.hs.open_hello(msg, NOW).body["ts"] == NOW + offset


@pytest.mark.parametrize("ts", ["nan", "NaN", "inf", "-inf", "yesterday", None, [1]])
def test_non_finite_or_malformed_timestamp_rejected(ts: Any) -> None:
    """A NaN timestamp compares false with everything; it must not pass the freshness check."""
    agent = make_agent()
    msg = make_client(agent).hello(ts)
    with pytest.raises(HandshakeError) as info:
        agent.hs.open_hello(msg, NOW)
    assert not isinstance(info.value, HelloRejected)


def test_stale_hello_is_not_remembered_as_seen() -> None:
    # A stale HELLO is refused as stale, not recorded; it stays refused as stale.
    agent = make_agent()
    msg = make_client(agent).hello(NOW - 1000)
    for _ in range(2):
        with pytest.raises(HelloRejected, match="NTP"):
            agent.hs.open_hello(msg, NOW)


# ----- refusals -----


def test_refusal_is_readable_only_by_the_client() -> None:
    agent = make_agent()
    sid = os.urandom(16)
    client = make_client(agent, sid=sid)
    hello = agent.hs.open_hello(client.hello(NOW), NOW)
    refusal = hello.refuse("grant has expired; request a new one")
    assert message_type(refusal) == HsType.REFUSE
    assert b"expired" not in refusal
    with pytest.raises(HandshakeRefused, match="grant has expired; request a new one"):
        client.on_reply(refusal)
    # Another client using the same sid (an eavesdropper's guess) cannot read it.
    other = make_client(agent, sid=sid)
    other.hello(NOW)
    with pytest.raises(HandshakeError) as info:
        other.on_reply(refusal)
    assert not isinstance(info.value, HandshakeRefused)
    # A forged or altered refusal is not believed either.
    for i in range(PREFIX.size, len(refusal)):
        with pytest.raises(HandshakeError) as info:
            client.on_reply(flip(refusal, i))
        assert not isinstance(info.value, HandshakeRefused)


def test_reply_for_another_sid_is_rejected() -> None:
    agent = make_agent()
    a = make_client(agent)
    b = make_client(agent)
    a.hello(NOW)
    hb = agent.hs.open_hello(b.hello(NOW), NOW)
    with pytest.raises(HandshakeError, match="another session"):
        a.on_reply(agent.hs.accept(hb, EXTRA).accept)
    with pytest.raises(HandshakeError, match="another session"):
        a.on_reply(hb.refuse("no"))


def test_client_rejects_non_replies() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello_msg = client.hello(NOW)
    with pytest.raises(HandshakeError):
        client.on_reply(hello_msg)  # a reflected HELLO
    with pytest.raises(HandshakeError):
        client.on_reply(b"\x81")
    with pytest.raises(HandshakeError, match="version"):
        client.on_reply(bytes([1]) + hello_msg[1:])
    hdr = PREFIX.pack(HS_VERSION, HsType.ACCEPT, client.sid)
    with pytest.raises(HandshakeError, match="unexpected"):
        client.on_reply(hdr + bytes(40))  # too short to be an ACCEPT


def test_message_type_errors() -> None:
    with pytest.raises(HandshakeError, match="short"):
        message_type(b"\x81\x01")
    with pytest.raises(HandshakeError, match="version"):
        message_type(PREFIX.pack(1, HsType.HELLO, bytes(16)))
    with pytest.raises(HandshakeError, match="unknown"):
        message_type(PREFIX.pack(HS_VERSION, 9, bytes(16)))


def test_agent_rejects_non_hello() -> None:
    agent = make_agent()
    with pytest.raises(HandshakeError, match="HELLO"):
        agent.hs.open_hello(PREFIX.pack(HS_VERSION, HsType.CONFIRM, bytes(16)) + bytes(64), NOW)
    with pytest.raises(HandshakeError, match="HELLO"):
        agent.hs.open_hello(PREFIX.pack(HS_VERSION, HsType.HELLO, bytes(16)) + bytes(40), NOW)


# ----- low-order keys -----


@pytest.mark.parametrize("point", LOW_ORDER, ids=LOW_ORDER_IDS)
def test_client_refuses_low_order_agent_static_key(point: bytes) -> None:
    agent = make_agent()
    client = ClientHandshake(
        client_key=SigningKey.generate(),
        agent_signing_key=agent.public,
        agent_x25519=point,
        sid=os.urandom(16),
        request=REQUEST,
        rand=os.urandom,
    )
    with pytest.raises(HandshakeError):
        client.hello(NOW)


@pytest.mark.parametrize("point", LOW_ORDER, ids=LOW_ORDER_IDS)
def test_agent_refuses_low_order_ephemeral_in_hello(point: bytes) -> None:
    agent = make_agent()
    msg = bytearray(make_client(agent).hello(NOW))
    msg[EPH] = point
    with pytest.raises(HandshakeError):
        agent.hs.open_hello(bytes(msg), NOW)


@pytest.mark.parametrize("point", LOW_ORDER, ids=LOW_ORDER_IDS)
def test_client_refuses_low_order_ephemeral_in_accept(point: bytes) -> None:
    agent = make_agent()
    client = make_client(agent)
    pending = agent.hs.accept(agent.hs.open_hello(client.hello(NOW), NOW), EXTRA)
    accept = bytearray(pending.accept)
    accept[EPH] = point
    with pytest.raises(HandshakeError):
        client.on_reply(bytes(accept))
