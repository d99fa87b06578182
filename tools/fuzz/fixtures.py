"""Fixed test keys, grants and envelope builders for the fuzz harnesses.

Every key is derived from a constant, so the seed corpus and every crash input replay the
same way on any machine. The builders wrap fuzzed inner bytes in a validly sealed or
signed envelope, so the fuzzer reaches the parsing behind the MAC or signature.
"""

from __future__ import annotations

import itertools

from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from tether import grants, signed
from tether.crypto import Random
from tether.encoding import b64e

NOW = 1_700_000_000.0
SID = bytes(range(16))


def signing_key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def x25519_key(n: int) -> PrivateKey:
    return PrivateKey(bytes([n]) * 32)


def fixed_random(first: PrivateKey) -> Random:
    """A random source that gives `first` (an ephemeral key), then counter bytes (nonces):
    the same sequence on every run."""
    count = itertools.count()

    def rand(n: int) -> bytes:
        i = next(count)
        return bytes(first)[:n] if i == 0 else i.to_bytes(n, "big")

    return rand


AUTHORITY = signing_key(1)
AUTHORITY_PK = bytes(AUTHORITY.verify_key)
AUTHORITY_X = x25519_key(2)
AGENT = signing_key(3)
AGENT_PK = bytes(AGENT.verify_key)
AGENT_X = x25519_key(4)
CLIENT = signing_key(5)
CLIENT_PK = bytes(CLIENT.verify_key)
RECORDER = signing_key(6)
RECORDER_PK = bytes(RECORDER.verify_key)
RECORDER_X = x25519_key(7)
CLIENT_EPH = x25519_key(8)  # the client's handshake ephemeral
AGENT_EPH = x25519_key(9)  # the agent's handshake ephemeral
OPEN_EPH = x25519_key(10)  # the agent's ephemeral in a recording OPEN
REPLY_X = x25519_key(11)  # a one-time reply key (authz, audit queries)
DEVICE_X = x25519_key(12)  # an enrolling device's X25519 key

AGENT_NAME = "web1"
RECORDER_NAME = "rec1"
CLIENT_MQTT = "alice-1"
ENROL_CODE = "ABCDE-FGHJK-LMNPQ-RSTUV"
REPLY_NONCE = "0123456789abcdef0123456789abcdef"


def grant(mode: str = "shell", *, audience: str = AGENT_NAME, audience_key: bytes = AGENT_PK) -> grants.Grant:
    """A grant for alice, for the fixed agent (or, for `audit`, the fixed recorder)."""
    return grants.Grant(
        user="alice", agent=audience, agent_key=b64e(audience_key), client_key=b64e(CLIENT_PK),
        mqtt_name=CLIENT_MQTT, mode=mode, run_as="alice", command=None, max_duration=3600,
        idle_timeout=0, recording="required", recorder=RECORDER_NAME, reason="fuzz",
        jti="0" * 32, expires=NOW + 300, max_sessions=2,
        recorder_x25519=b64e(bytes(RECORDER_X.public_key)), recorder_ed25519=b64e(RECORDER_PK))


def grant_token(mode: str = "shell") -> str:
    if mode == "audit":
        g = grant(mode, audience=RECORDER_NAME, audience_key=RECORDER_PK)
    else:
        g = grant(mode)
    return grants.issue(bytes(AUTHORITY), g, NOW)


def sign_raw(key: SigningKey, domain: str, body: bytes) -> bytes:
    """A signed document around any body bytes, JSON or not (tether.signed's layout)."""
    return key.sign(signed._message(domain, body)).signature + body


def seal_to(public: bytes, plaintext: bytes) -> bytes:
    return SealedBox(PublicKey(public)).encrypt(plaintext)


def split(data: bytes, parts: int) -> list[bytes]:
    """`data` cut at its first parts-1 NUL bytes (missing parts are empty)."""
    pieces = data.split(b"\x00", parts - 1)
    return pieces + [b""] * (parts - len(pieces))

AUTHORITY_X_PUB = bytes(AUTHORITY_X.public_key)
AGENT_X_PUB = bytes(AGENT_X.public_key)
RECORDER_X_PUB = bytes(RECORDER_X.public_key)
REPLY_X_PUB = bytes(REPLY_X.public_key)
DEVICE_X_PUB = bytes(DEVICE_X.public_key)
