"""Tests for tether.authz: sealed, signed grant requests and replies."""

from __future__ import annotations

import os
from typing import Any

import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from tether.authz import (
    REPLY,
    REQUEST,
    AuthzError,
    build_reply,
    build_request,
    open_reply,
    open_request_envelope,
    verify_request,
)
from tether.encoding import b64e
from tether.signed import sign_document
from tether.skew import MAX_SKEW

NOW = 1_700_000_000.0
AUTHORITY = SigningKey.generate()
AUTHORITY_X = PrivateKey.generate()
ALICE = SigningKey.generate()
BODY = {"type": "grant", "agent": "web1", "mode": "shell", "run_as": "alice", "reason": "hotfix"}


def request(now: float = NOW, key: SigningKey = ALICE, body: dict[str, Any] | None = None) -> Any:
    return build_request(key, "alice", bytes(AUTHORITY_X.public_key), dict(body or BODY), now, rand=os.urandom)


def authority_receives(payload: bytes, now: float = NOW, key: SigningKey = ALICE) -> dict[str, Any]:
    claimed, blob = open_request_envelope(bytes(AUTHORITY_X), payload)
    assert claimed == "alice"
    return verify_request(bytes(key.verify_key), blob, now)


def test_request_reply_round_trip() -> None:
    pending = request()
    req = authority_receives(pending.payload)
    for k, v in BODY.items():
        assert req[k] == v
    assert req["user"] == "alice"
    assert req["nonce"] == pending.nonce
    assert req["ts"] == NOW
    assert req["reply_key"] == b64e(bytes(pending.reply_key.public_key))
    reply = build_reply(AUTHORITY, req, {"ok": True, "grant": "v4.public.xyz"}, os.urandom)
    doc = open_reply(pending, bytes(AUTHORITY.verify_key), reply)
    assert doc == {"ok": True, "grant": "v4.public.xyz", "nonce": pending.nonce}


def test_broker_sees_only_ciphertext() -> None:
    pending = request()
    for secret in (b"web1", b"hotfix", b"alice", pending.nonce.encode()):
        assert secret not in pending.payload
    req = authority_receives(pending.payload)
    reply = build_reply(AUTHORITY, req, {"ok": True, "grant": "v4.public.secretgrant"}, os.urandom)
    assert b"secretgrant" not in reply


def test_each_request_has_fresh_nonce_and_reply_key() -> None:
    a, b = request(), request()
    assert a.nonce != b.nonce
    assert bytes(a.reply_key) != bytes(b.reply_key)


def test_request_for_another_authority_cannot_be_opened() -> None:
    pending = request()
    with pytest.raises(AuthzError):
        open_request_envelope(bytes(PrivateKey.generate()), pending.payload)
    with pytest.raises(AuthzError):
        open_request_envelope(bytes(AUTHORITY_X), pending.payload[:-1])
    with pytest.raises(AuthzError):
        open_request_envelope(bytes(AUTHORITY_X), b"")


def test_request_signed_by_someone_else_is_rejected() -> None:
    """Mallory claims to be alice: the authority checks alice's registered key."""
    mallory = SigningKey.generate()
    pending = build_request(mallory, "alice", bytes(AUTHORITY_X.public_key), BODY, NOW, rand=os.urandom)
    claimed, blob = open_request_envelope(bytes(AUTHORITY_X), pending.payload)
    assert claimed == "alice"
    with pytest.raises(AuthzError, match="signature"):
        verify_request(bytes(ALICE.verify_key), blob, NOW)


def test_signed_document_of_another_domain_is_not_a_request() -> None:
    doc = dict(BODY, user="alice", nonce="00", ts=NOW, reply_key=b64e(bytes(PrivateKey.generate().public_key)))
    blob = sign_document(ALICE, "presence", doc)
    payload = SealedBox(PublicKey(bytes(AUTHORITY_X.public_key))).encrypt(blob)
    _, opened = open_request_envelope(bytes(AUTHORITY_X), payload)
    with pytest.raises(AuthzError):
        verify_request(bytes(ALICE.verify_key), opened, NOW)


@pytest.mark.parametrize("age", [MAX_SKEW + 1, -MAX_SKEW - 1, 3600.0, -3600.0])
def test_request_with_stale_ts_raises(age: float) -> None:
    pending = request(now=NOW - age)
    with pytest.raises(AuthzError, match="clock skew"):
        authority_receives(pending.payload, now=NOW)


@pytest.mark.parametrize("age", [0.0, MAX_SKEW - 1, -(MAX_SKEW - 1)])
def test_request_within_skew_is_accepted(age: float) -> None:
    assert authority_receives(request(now=NOW - age).payload)["ts"] == NOW - age


@pytest.mark.parametrize("ts", ["nan", "inf", "-inf", "soon", None, [1], {"t": 1}])
def test_request_with_malformed_ts_raises_authz_error(ts: Any) -> None:
    """A signed request with a bogus ts must be refused with AuthzError, not crash the
    authority, and NaN (which compares false with everything) must not pass the skew check."""
    pending = request(now=ts)
    with pytest.raises(AuthzError):
        authority_receives(pending.payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [("nonce", None), ("nonce", 5), ("reply_key", None), ("reply_key", "not base64!"), ("reply_key", b64e(b"short"))],
)
def test_request_with_malformed_nonce_or_reply_key_raises(field: str, value: Any) -> None:
    reply_key = b64e(bytes(PrivateKey.generate().public_key))
    doc = dict(BODY, user="alice", nonce="ab" * 16, ts=NOW, reply_key=reply_key)
    if value is None:
        del doc[field]
    else:
        doc[field] = value
    blob = sign_document(ALICE, REQUEST, doc)
    with pytest.raises(AuthzError):
        verify_request(bytes(ALICE.verify_key), blob, NOW)


def test_reply_for_another_nonce_returns_none() -> None:
    pending = request()
    req = authority_receives(pending.payload)
    forged = dict(req, nonce="0" * 32)  # same reply key, another request's nonce
    reply = build_reply(AUTHORITY, forged, {"ok": True}, os.urandom)
    assert open_reply(pending, bytes(AUTHORITY.verify_key), reply) is None


def test_reply_to_another_request_returns_none() -> None:
    mine, theirs = request(), request()
    reply = build_reply(AUTHORITY, authority_receives(theirs.payload), {"ok": True}, os.urandom)
    assert open_reply(mine, bytes(AUTHORITY.verify_key), reply) is None
    assert open_reply(theirs, bytes(AUTHORITY.verify_key), reply) == {"ok": True, "nonce": theirs.nonce}
    assert open_reply(mine, bytes(AUTHORITY.verify_key), b"garbage") is None


def test_reply_not_signed_by_the_authority_raises() -> None:
    pending = request()
    req = authority_receives(pending.payload)
    mallory = SigningKey.generate()
    reply = build_reply(mallory, req, {"ok": True, "grant": "v4.public.evil"}, os.urandom)
    with pytest.raises(AuthzError, match="authority"):
        open_reply(pending, bytes(AUTHORITY.verify_key), reply)


def test_reply_signed_for_another_domain_raises() -> None:
    pending = request()
    blob = sign_document(AUTHORITY, REQUEST, {"ok": True, "nonce": pending.nonce})
    payload = SealedBox(pending.reply_key.public_key).encrypt(blob)
    with pytest.raises(AuthzError):
        open_reply(pending, bytes(AUTHORITY.verify_key), payload)
    good = SealedBox(pending.reply_key.public_key).encrypt(
        sign_document(AUTHORITY, REPLY, {"ok": True, "nonce": pending.nonce})
    )
    assert open_reply(pending, bytes(AUTHORITY.verify_key), good) == {"ok": True, "nonce": pending.nonce}
