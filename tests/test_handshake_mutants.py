"""tether.handshake against the test vectors of docs/protocol.md §17 and at its exact bounds
(found by mutation testing, tools/mutation/run.py: every other handshake test runs both
sides of this code, so a changed label, type number or hash still agrees with itself)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from test_handshake import make_agent, make_client

from tether.crypto import Random, kdf
from tether.handshake import (
    PREFIX,
    AgentHandshake,
    ClientHandshake,
    HandshakeError,
    HandshakeRefused,
    HelloRejected,
    SessionKeys,
    _seal,
)
from tether.limits import MAX_HELLO_BYTES

# The fixed seeds of §17: client Ed25519 01*32, agent Ed25519 02*32, agent X25519 03*32,
# client ephemeral 04*32, agent ephemeral 05*32; sid 00..0f; ts 1700000000.0.
SID = bytes(range(16))
TS = 1_700_000_000.0
HELLO = bytes.fromhex(
    "8101000102030405060708090a0b0c0d0e0fac01b2209e86354fb853237b5de0f4fab13c7fcbf433"
    "a61c019369617fecf10b515fa8906a154b89bfcbc05465786cd5ca858e673e28704f5ead48b97eb5"
    "8fedb8038bd200045298760e1aab5383155d6df793317b37fc9ec174c9266359026553025104a98e"
    "0f56fdfd0e7828c383cd0dc44b153ab2188201578ec09708aec09112c05df71d4a709bca7812")
ACCEPT = bytes.fromhex(
    "8102000102030405060708090a0b0c0d0e0f50a61409b1ddd0325e9b16b700e719e9772c07000b1b"
    "d7786e907c653d20495d78e724eba011d026e7a5c9407d8d22c32d17796257729d126eaddf97d7f3"
    "313d9ea32b9e54bc71e82465991dd8ef333e573ad8c66d8c7e05d56a0172e8ec1e161da3209f04ba"
    "51aa797913b60177d05e919d922bf14ad6294686e101563e35")
CONFIRM = bytes.fromhex(
    "8103000102030405060708090a0b0c0d0e0f4c8cb66695963701fa8694bf8de645b21ffbd3acfe37"
    "623ba23ef8aefb30000c3c62f3405bd663aa88487c9ae9bfd1bf42d1eb71963ffc8db9349aa6084d"
    "e682ebe7232078497ae76e97a930b39b71f9")
REFUSE_NO = bytes.fromhex(
    "8104000102030405060708090a0b0c0d0e0fddb45fd4af382f9c4177dec2637bb5835281c2d7b94d"
    "95a8cc8b58039bb8fb")
K_C2A = bytes.fromhex(
    "ba16cded70d432aeab467a5cc0cd3579decd565aa19769d9aa7165decbbf365c")
K_A2C = bytes.fromhex(
    "c573d91847050107b08c219beb1772d9f978740011f7241228c9442f8f74f46e")


def _fixed(secret: bytes) -> Random:
    """A random source that gives the vectors' ephemeral key."""
    return lambda n: secret[:n]


def vector_client() -> ClientHandshake:
    client = ClientHandshake(client_key=SigningKey(bytes([1]) * 32),
                             agent_signing_key=bytes(SigningKey(bytes([2]) * 32).verify_key),
                             agent_x25519=bytes(PrivateKey(bytes([3]) * 32).public_key),
                             sid=SID, request={"mode": "exec"}, rand=_fixed(bytes([4]) * 32))
    return client


def test_the_handshake_produces_the_documented_vectors() -> None:
    client = vector_client()
    assert client.hello(TS) == HELLO
    agent = AgentHandshake(SigningKey(bytes([2]) * 32), bytes([3]) * 32, rand=_fixed(bytes([5]) * 32))
    hello = agent.open_hello(HELLO, TS)
    assert hello.body == {"client_key": "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w",
                          "mode": "exec", "ts": TS}
    assert hello.refuse("no") == REFUSE_NO
    pending = agent.accept(hello, {"mode": "exec"})
    assert pending.accept == ACCEPT
    confirm, keys = client.on_reply(ACCEPT)
    assert confirm == CONFIRM
    assert keys == SessionKeys(K_C2A, K_A2C)
    assert pending.on_confirm(CONFIRM) == keys
    assert client.accepted == {"mode": "exec"}


def test_the_documented_refusal_reads_no() -> None:
    client = vector_client()
    client.hello(TS)
    with pytest.raises(HandshakeRefused, match=r"^no$"):
        client.on_reply(REFUSE_NO)


@pytest.mark.parametrize("skew", [120.0, -120.0])
def test_a_hello_exactly_120_s_off_is_accepted(skew: float) -> None:
    agent = make_agent()
    assert agent.hs.open_hello(make_client(agent).hello(TS - skew), TS).body["ts"] == TS - skew


@pytest.mark.parametrize("skew", [120.5, -120.5])
def test_a_hello_just_over_120_s_off_is_rejected(skew: float) -> None:
    agent = make_agent()
    with pytest.raises(HelloRejected, match="off the agent's clock"):
        agent.hs.open_hello(make_client(agent).hello(TS - skew), TS)


def test_a_refusal_that_is_not_json_is_a_handshake_error() -> None:
    agent = make_agent()
    client = make_client(agent)
    hello = agent.hs.open_hello(client.hello(TS), TS)
    hdr = PREFIX.pack(0x81, 4, hello.sid)
    bogus = hdr + _seal(kdf(hello._es, b"tether-hs-refuse", hello.h1), hdr, b"\xff not json")
    with pytest.raises(HandshakeError, match="not JSON"):
        client.on_reply(bogus)


def test_session_keys_are_immutable() -> None:
    keys = SessionKeys(bytes(32), bytes(32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.c2a = bytes(range(32))  # type: ignore[misc]


def test_a_hellos_dh_secret_is_not_in_its_repr() -> None:
    agent = make_agent()
    hello = agent.hs.open_hello(make_client(agent).hello(TS), TS)
    text = repr(hello)
    assert repr(hello._es) not in text and "_es" not in text and "_eph_pub" not in text


def test_accept_length_bound() -> None:
    """An ACCEPT shorter than prefix + key + signature + tag is not read; one of exactly
    that length is, and fails authentication."""
    agent = make_agent()
    client = make_client(agent, sid=SID)
    client.hello(TS)
    head = PREFIX.pack(0x81, 2, SID) + bytes(PrivateKey.generate().public_key)
    with pytest.raises(HandshakeError, match="unexpected handshake message"):
        client.on_reply(head + bytes(64 + 16 - 1))
    with pytest.raises(HandshakeError, match="accept failed authentication"):
        client.on_reply(head + bytes(64 + 16))


def test_hello_length_bounds() -> None:
    agent = make_agent()
    head = PREFIX.pack(0x81, 1, SID) + bytes(PrivateKey.generate().public_key)
    with pytest.raises(HandshakeError, match="expected HELLO"):
        agent.hs.open_hello(head[:-1] + bytes(16), TS)
    with pytest.raises(HandshakeError, match="hello failed authentication"):
        agent.hs.open_hello(head + bytes(16), TS)
    with pytest.raises(HandshakeError, match="hello failed authentication"):
        agent.hs.open_hello(head + bytes(MAX_HELLO_BYTES - len(head)), TS)
    with pytest.raises(HandshakeError, match="over the limit"):
        agent.hs.open_hello(head + bytes(MAX_HELLO_BYTES - len(head) + 1), TS)


def _accepted(agent: Any, now: float) -> bytes:
    msg = make_client(agent).hello(now)
    agent.hs.accept(agent.hs.open_hello(msg, now), {})
    return msg


def test_a_replay_is_remembered_across_clock_steps_of_up_to_twice_the_skew() -> None:
    """Accepted at ts; the clock jumps 200 s ahead (the agent forgets what expired) and then
    back: the replay is still refused, because an entry lives until ts + 2 x 120 s."""
    agent = make_agent()
    first = _accepted(agent, TS)
    for _ in range(65):
        _accepted(agent, TS)
    agent.hs.open_hello(make_client(agent).hello(TS + 200), TS + 200)  # runs the forgetting
    with pytest.raises(HelloRejected, match="replayed"):
        agent.hs.open_hello(first, TS + 10)


def test_expired_entries_are_forgotten_once_there_are_more_than_64() -> None:
    seen: dict[bytes, float] = {}
    agent = make_agent()
    agent.hs = AgentHandshake(agent.key, bytes(agent.x), seen=seen, rand=os.urandom)
    for _ in range(64):
        _accepted(agent, TS)
    later = TS + 241
    agent.hs.open_hello(make_client(agent).hello(later), later)
    assert len(seen) == 64  # 64 is not more than 64: kept
    _accepted(agent, TS)
    agent.hs.open_hello(make_client(agent).hello(later), later)
    assert seen == {}


def test_a_stale_hello_says_how_far_off_it_is() -> None:
    agent = make_agent()
    with pytest.raises(HelloRejected, match=r"handshake timestamp is \+130 s off"):
        agent.hs.open_hello(make_client(agent).hello(TS - 130), TS)
    with pytest.raises(HelloRejected, match=r"handshake timestamp is -130 s off"):
        agent.hs.open_hello(make_client(agent).hello(TS + 130), TS)


def test_a_client_handshake_takes_its_keys_by_keyword_only() -> None:
    """So the agent's signing key and its X25519 key cannot be swapped by position."""
    agent_sign = bytes(SigningKey(bytes([2]) * 32).verify_key)
    agent_x = bytes(PrivateKey(bytes([3]) * 32).public_key)
    with pytest.raises(TypeError):
        ClientHandshake(SigningKey(bytes([1]) * 32), agent_x, agent_sign, SID, {})  # type: ignore[misc]
