"""Three-message, SIGMA-style session handshake (sans-IO).

1. HELLO  c->a: client ephemeral key in the clear; grant, identity and request sealed to
   the agent's static X25519 key.
2. ACCEPT a->c: agent ephemeral key; the agent's signature over the transcript, sealed.
3. CONFIRM c->a: the client's signature over the transcript, sealed.

Traffic keys come only from the ephemeral-ephemeral DH, so recorded traffic stays secret
even if both static keys leak later. The version and session id sit in every message's
associated data and so in the transcript. There is no negotiation.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tether import crypto
from tether.crypto import Random, kdf, personal_hash, x25519_public
from tether.encoding import b64d, b64e, dumps, loads
from tether.errors import TetherError
from tether.limits import MAX_HELLO_BYTES
from tether.skew import MAX_SKEW, within_skew

HS_VERSION = 0x81  # high bit set: never confused with a frame (version 1)
PREFIX = struct.Struct(">BB16s")
NONCE = bytes(24)  # every handshake key encrypts exactly one message


class HsType(IntEnum):
    HELLO = 1
    ACCEPT = 2
    CONFIRM = 3
    REFUSE = 4


class HandshakeError(TetherError):
    """The handshake cannot continue; the message says why."""


class HandshakeRefused(HandshakeError):
    """The agent refused the session and said why."""


class HelloRejected(HandshakeError):
    """An authentic HELLO that must not start a session (replayed or stale)."""

    def __init__(self, reason: str, hello: Hello) -> None:
        super().__init__(reason)
        self.hello = hello


def _hash(*parts: bytes) -> bytes:
    return personal_hash(b"tether-hs-tx", *parts)


def _seal(key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    return crypto.aead_seal(key, NONCE, ad, plaintext)


def _open(key: bytes, ad: bytes, ciphertext: bytes, what: str) -> bytes:
    plain = crypto.aead_open(key, NONCE, ad, ciphertext)
    if plain is None:
        raise HandshakeError(f"{what} failed authentication")
    return plain


def _dh(secret: bytes, public: bytes) -> bytes:
    shared = crypto.dh(secret, public)
    if shared is None:
        raise HandshakeError("low-order public key")
    return shared


def _object(plain: bytes, what: str) -> dict[str, Any]:
    """The JSON object a sealed message carries; anything else is a HandshakeError, which
    is all the callers catch."""
    try:
        doc = loads(plain)
    except ValueError as exc:
        raise HandshakeError(f"malformed {what}: not JSON") from exc
    if not isinstance(doc, dict):
        raise HandshakeError(f"malformed {what}: not a JSON object")
    return doc


def message_type(msg: bytes) -> HsType:
    if len(msg) < PREFIX.size:
        raise HandshakeError("handshake message too short")
    version, kind, _ = PREFIX.unpack_from(msg)
    if version != HS_VERSION:
        raise HandshakeError(f"unsupported handshake version {version}")
    try:
        return HsType(kind)
    except ValueError as exc:
        raise HandshakeError(f"unknown handshake message {kind}") from exc


def message_sid(msg: bytes) -> bytes:
    return bytes(PREFIX.unpack_from(msg)[2])


@dataclass(frozen=True)
class SessionKeys:
    c2a: bytes
    a2c: bytes


def _traffic_keys(ee: bytes, h3: bytes) -> SessionKeys:
    return SessionKeys(c2a=kdf(ee, b"tether-c2a", h3), a2c=kdf(ee, b"tether-a2c", h3))


class ClientHandshake:
    """The client's side. Make HELLO, then feed the agent's reply to `on_reply`."""

    def __init__(
        self,
        *,
        client_key: SigningKey,
        agent_signing_key: bytes,
        agent_x25519: bytes,
        sid: bytes,
        request: dict[str, Any],
        rand: Random,
    ) -> None:
        if len(sid) != 16:
            raise ValueError("sid must be 16 bytes")
        self._client_key = client_key
        self._agent_verify = VerifyKey(agent_signing_key)
        self._agent_x = agent_x25519
        self.sid = sid
        self._eph = rand(32)
        self._eph_pub = x25519_public(self._eph)
        self._request = dict(request)
        self._h1 = b""
        self._es = b""
        self.accepted: dict[str, Any] = {}

    def hello(self, now: float) -> bytes:
        prefix = PREFIX.pack(HS_VERSION, HsType.HELLO, self.sid) + self._eph_pub
        self._es = _dh(self._eph, self._agent_x)
        body = dict(self._request)
        body["client_key"] = b64e(bytes(self._client_key.verify_key))
        body["ts"] = now
        key = kdf(self._es, b"tether-hs1", prefix + self._agent_x)
        msg = prefix + _seal(key, prefix + self._agent_x, dumps(body))
        self._h1 = _hash(msg)
        return msg

    def on_reply(self, msg: bytes) -> tuple[bytes, SessionKeys]:
        """Handle ACCEPT: return (CONFIRM, keys). Raises HandshakeRefused for REFUSE."""
        kind = message_type(msg)
        if message_sid(msg) != self.sid:
            raise HandshakeError("reply is for another session")
        if kind == HsType.REFUSE:
            key = kdf(self._es, b"tether-hs-refuse", self._h1)
            body = _object(_open(key, msg[: PREFIX.size], msg[PREFIX.size :], "refusal"), "refusal")
            raise HandshakeRefused(str(body.get("reason", "refused")))
        if kind != HsType.ACCEPT or len(msg) < PREFIX.size + 32 + 64 + 16:
            raise HandshakeError("unexpected handshake message")
        hdr2 = msg[: PREFIX.size + 32]
        agent_eph = hdr2[PREFIX.size :]
        ee = _dh(self._eph, agent_eph)
        key2 = kdf(ee + self._es, b"tether-hs2", self._h1 + hdr2)
        plain = _open(key2, hdr2, msg[len(hdr2) :], "accept")
        try:
            self._agent_verify.verify(b"tether-hs2-sig" + self._h1 + hdr2, plain[:64])
        except BadSignatureError as exc:
            raise HandshakeError("agent signature does not verify: not the agent in the grant") from exc
        self.accepted = _object(plain[64:], "accept") if len(plain) > 64 else {}
        h2 = _hash(self._h1, msg)
        hdr3 = PREFIX.pack(HS_VERSION, HsType.CONFIRM, self.sid)
        sig = self._client_key.sign(b"tether-hs3-sig" + h2).signature
        confirm = hdr3 + _seal(kdf(ee + self._es, b"tether-hs3", h2), hdr3, sig)
        return confirm, _traffic_keys(ee, _hash(h2, confirm))


@dataclass
class Hello:
    """A decrypted HELLO: what the client asks for, not yet authorised."""

    sid: bytes
    client_key: bytes
    body: dict[str, Any]
    raw: bytes
    _es: bytes = field(repr=False)
    _eph_pub: bytes = field(repr=False)

    @property
    def h1(self) -> bytes:
        return _hash(self.raw)

    def refuse(self, reason: str) -> bytes:
        hdr = PREFIX.pack(HS_VERSION, HsType.REFUSE, self.sid)
        key = kdf(self._es, b"tether-hs-refuse", self.h1)
        return hdr + _seal(key, hdr, dumps({"reason": reason}))


class PendingSession:
    """The agent's side after ACCEPT, waiting for CONFIRM."""

    def __init__(self, hello: Hello, agent_key: SigningKey, extra: dict[str, Any],
                 rand: Random) -> None:
        self.hello = hello
        eph = rand(32)
        hdr2 = PREFIX.pack(HS_VERSION, HsType.ACCEPT, hello.sid) + x25519_public(eph)
        h1 = hello.h1
        self._ee = _dh(eph, hello._eph_pub)
        sig = agent_key.sign(b"tether-hs2-sig" + h1 + hdr2).signature
        key2 = kdf(self._ee + hello._es, b"tether-hs2", h1 + hdr2)
        self.accept = hdr2 + _seal(key2, hdr2, sig + dumps(extra))
        self._h2 = _hash(h1, self.accept)

    def on_confirm(self, msg: bytes) -> SessionKeys:
        if message_type(msg) != HsType.CONFIRM or message_sid(msg) != self.hello.sid:
            raise HandshakeError("expected CONFIRM for this session")
        hdr3 = msg[: PREFIX.size]
        key3 = kdf(self._ee + self.hello._es, b"tether-hs3", self._h2)
        sig = _open(key3, hdr3, msg[PREFIX.size :], "confirm")
        try:
            VerifyKey(self.hello.client_key).verify(b"tether-hs3-sig" + self._h2, sig)
        except (BadSignatureError, ValueError) as exc:
            raise HandshakeError("client signature does not verify") from exc
        return _traffic_keys(self._ee, _hash(self._h2, msg))


class AgentHandshake:
    """The agent's side: open HELLOs, reject replays, and start pending sessions."""

    def __init__(self, agent_key: SigningKey, x25519_secret: bytes,
                 seen: dict[bytes, float] | None = None, *, rand: Random) -> None:
        self._agent_key = agent_key
        self._x_secret = x25519_secret
        self._x_public = x25519_public(x25519_secret)
        self._rand = rand
        # Client ephemeral key of each accepted HELLO -> forget after. The caller may pass
        # its own, to keep it across restarts.
        self._seen: dict[bytes, float] = {} if seen is None else seen

    def open_hello(self, msg: bytes, now: float) -> Hello:
        """Decrypt and check a HELLO. Only `accept` remembers it: a HELLO that is refused
        (no valid grant) costs no memory, so flooding the agent with them fills nothing."""
        if len(msg) > MAX_HELLO_BYTES:
            raise HandshakeError(f"HELLO of {len(msg)} bytes is over the limit of {MAX_HELLO_BYTES}")
        if message_type(msg) != HsType.HELLO or len(msg) < PREFIX.size + 32 + 16:
            raise HandshakeError("expected HELLO")
        prefix = msg[: PREFIX.size + 32]
        eph_pub = prefix[PREFIX.size :]
        es = _dh(self._x_secret, eph_pub)
        key = kdf(es, b"tether-hs1", prefix + self._x_public)
        plain = _open(key, prefix + self._x_public, msg[len(prefix) :], "hello")
        try:
            body = loads(plain)
            client_key = b64d(body["client_key"])
            ts = float(body["ts"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HandshakeError("malformed hello") from exc
        if not math.isfinite(ts):  # NaN would pass any comparison with the clock
            raise HandshakeError("malformed hello timestamp")
        if len(client_key) != 32:
            raise HandshakeError("malformed client key")
        hello = Hello(message_sid(msg), client_key, body, msg, es, eph_pub)
        self._forget(now)
        if eph_pub in self._seen:
            raise HelloRejected("replayed handshake message", hello)
        if not within_skew(ts, now):
            raise HelloRejected(
                f"handshake timestamp is {now - ts:+.0f} s off the agent's clock; check NTP", hello
            )
        return hello

    def accept(self, hello: Hello, extra: dict[str, Any]) -> PendingSession:
        """Answer an authorised HELLO, and refuse it as replayed from now on, for as long
        as its timestamp could pass the freshness check (with a margin for clock steps)."""
        self._seen[hello._eph_pub] = float(hello.body["ts"]) + 2 * MAX_SKEW
        return PendingSession(hello, self._agent_key, extra, self._rand)

    def _forget(self, now: float) -> None:
        if len(self._seen) > 64:
            for k in [k for k, t in self._seen.items() if t < now]:
                del self._seen[k]
