"""tether.envelope, tether.skew and the random inputs of the request/grant core, with fixed
random bytes: the same inputs give the same nonces, keys, codes and jtis on every run."""

from __future__ import annotations

import itertools
import math

import pytest
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey

from tether import auditq, authz, envelope, grants
from tether.crypto import Random
from tether.encoding import b64e
from tether.enrolment import _ALPHABET, new_activation_id, new_code
from tether.skew import MAX_SKEW, within_skew

NOW = 1_700_000_000.0
SENDER = SigningKey(bytes([1]) * 32)
ANSWERER = SigningKey(bytes([2]) * 32)
RECIPIENT = PrivateKey(bytes([3]) * 32)
REPLY_SECRET = bytes([4]) * 32
NONCE_BYTES = bytes(range(16))
EPHEMERAL = bytes([5]) * 32  # the sealed box's


def fixed(*chunks: bytes) -> Random:
    """Gives `chunks` in order, each exactly as long as asked for."""
    it = iter(chunks)

    def rand(n: int) -> bytes:
        out = next(it)
        assert len(out) == n
        return out

    return rand


def test_a_sealed_box_is_libsodiums_with_its_ephemeral_key_from_rand() -> None:
    sealed = envelope.seal_to(bytes(RECIPIENT.public_key), b"hello", fixed(EPHEMERAL))
    assert sealed[:32] == bytes(PrivateKey(EPHEMERAL).public_key) and len(sealed) == 32 + 16 + 5
    assert SealedBox(RECIPIENT).decrypt(sealed) == b"hello"
    assert sealed == envelope.seal_to(bytes(RECIPIENT.public_key), b"hello", fixed(EPHEMERAL))
    assert sealed != envelope.seal_to(bytes(RECIPIENT.public_key), b"hello", fixed(bytes([6]) * 32))
    assert envelope.open_sealed(PrivateKey(bytes([7]) * 32), sealed) is None


def test_a_request_is_the_same_bytes_for_the_same_random_bytes() -> None:
    def build() -> bytes:
        return authz.build_request(SENDER, "alice", bytes(RECIPIENT.public_key), {"type": "grant"}, NOW,
                                   fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL)).payload
    assert build() == build()


@pytest.mark.parametrize("offset", [0.0, 1.0, -1.0, MAX_SKEW, -MAX_SKEW])
def test_within_the_skew_is_taken(offset: float) -> None:
    assert within_skew(NOW + offset, NOW)


@pytest.mark.parametrize("offset", [MAX_SKEW + 0.001, -MAX_SKEW - 0.001, 3600.0, -86400.0])
def test_outside_the_skew_is_refused(offset: float) -> None:
    assert not within_skew(NOW + offset, NOW)


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_a_stamp_that_is_no_time_is_refused(ts: float) -> None:
    assert not within_skew(ts, NOW)


def test_a_request_takes_its_reply_key_then_its_nonce_from_rand() -> None:
    pending = envelope.seal_request(SENDER, "test-request", bytes(RECIPIENT.public_key), {"a": 1}, NOW,
                                    fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL))
    assert pending.nonce == NONCE_BYTES.hex() == "000102030405060708090a0b0c0d0e0f"
    assert bytes(pending.reply_key) == REPLY_SECRET
    claims, blob = envelope.unseal(bytes(RECIPIENT), pending.payload)
    doc = envelope.verify_request(bytes(SENDER.verify_key), "test-request", blob, NOW + MAX_SKEW)
    assert claims == doc
    assert doc == {"a": 1, "nonce": pending.nonce, "ts": NOW,
                   "reply_key": b64e(bytes(PrivateKey(REPLY_SECRET).public_key))}
    reply = envelope.seal_reply(ANSWERER, "test-reply", doc, {"ok": True}, fixed(EPHEMERAL))
    assert envelope.open_reply(pending, bytes(ANSWERER.verify_key), "test-reply", reply) == {
        "ok": True, "nonce": pending.nonce}


def test_a_stale_request_is_a_stale_envelope_and_a_wrong_signer_is_not_stale() -> None:
    pending = envelope.seal_request(SENDER, "test-request", bytes(RECIPIENT.public_key), {}, NOW,
                                    fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL))
    _, blob = envelope.unseal(bytes(RECIPIENT), pending.payload)
    with pytest.raises(envelope.StaleEnvelope):
        envelope.verify_request(bytes(SENDER.verify_key), "test-request", blob, NOW + MAX_SKEW + 1)
    with pytest.raises(envelope.EnvelopeError) as info:
        envelope.verify_request(bytes(ANSWERER.verify_key), "test-request", blob, NOW)
    assert not isinstance(info.value, envelope.StaleEnvelope)
    with pytest.raises(envelope.EnvelopeError):
        envelope.verify_request(bytes(SENDER.verify_key), "other-domain", blob, NOW)


def test_a_reply_to_another_nonce_or_key_is_not_ours_and_an_unsigned_one_raises() -> None:
    pending = envelope.seal_request(SENDER, "q", bytes(RECIPIENT.public_key), {}, NOW, fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL))
    doc = envelope.verify_request(bytes(SENDER.verify_key), "q", envelope.unseal(bytes(RECIPIENT), pending.payload)[1], NOW)
    other_nonce = envelope.seal_reply(ANSWERER, "r", dict(doc, nonce="ff" * 16), {}, fixed(EPHEMERAL))
    assert envelope.open_reply(pending, bytes(ANSWERER.verify_key), "r", other_nonce) is None
    other_key = envelope.seal_reply(ANSWERER, "r", dict(doc, reply_key=b64e(bytes(RECIPIENT.public_key))), {}, fixed(EPHEMERAL))
    assert envelope.open_reply(pending, bytes(ANSWERER.verify_key), "r", other_key) is None
    forged = envelope.seal_reply(SENDER, "r", doc, {}, fixed(EPHEMERAL))
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_reply(pending, bytes(ANSWERER.verify_key), "r", forged)


def test_grant_requests_and_audit_queries_are_the_same_envelope_under_their_domains() -> None:
    req = authz.build_request(SENDER, "alice", bytes(RECIPIENT.public_key), {"type": "grant"}, NOW,
                              fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL))
    query = auditq.build_query(SENDER, "v4.public.x", bytes(RECIPIENT.public_key), "list", {}, NOW,
                               fixed(REPLY_SECRET, NONCE_BYTES, EPHEMERAL))
    assert (req.nonce, bytes(req.reply_key)) == (query.nonce, bytes(query.reply_key))
    _, req_blob = envelope.unseal(bytes(RECIPIENT), req.payload)
    _, query_blob = envelope.unseal(bytes(RECIPIENT), query.payload)
    assert envelope.verify_request(bytes(SENDER.verify_key), authz.REQUEST, req_blob, NOW)["user"] == "alice"
    assert envelope.verify_request(bytes(SENDER.verify_key), auditq.QUERY, query_blob, NOW)["op"] == "list"
    with pytest.raises(envelope.EnvelopeError):  # domain separation: a query is no grant request
        envelope.verify_request(bytes(SENDER.verify_key), authz.REQUEST, query_blob, NOW)


def _code_bits(code: str) -> int:
    symbols = code.replace("-", "")
    return sum(_ALPHABET.index(c) << (5 * i) for i, c in enumerate(symbols))


@pytest.mark.parametrize("raw", [bytes(13), b"\xff" * 13, bytes(range(13)), bytes(range(200, 213))])
def test_an_activation_code_is_the_top_100_random_bits_five_to_a_symbol(raw: bytes) -> None:
    code = new_code(fixed(raw))
    assert len(code) == 23 and [len(g) for g in code.split("-")] == [5, 5, 5, 5]
    # A bijection from 100 bits onto the 32**20 codes: every code is equally likely.
    assert _code_bits(code) == int.from_bytes(raw, "big") >> 4


def test_every_symbol_is_reachable_in_every_position() -> None:
    for k in range(32):
        bits = sum(k << (5 * i) for i in range(20))
        code = new_code(fixed((bits << 4).to_bytes(13, "big")))
        assert set(code.replace("-", "")) == {_ALPHABET[k]}
    assert new_code(fixed(bytes(13))) == "AAAAA-AAAAA-AAAAA-AAAAA"
    assert new_code(fixed(b"\xff" * 13)) == "99999-99999-99999-99999"


def test_activation_ids_and_jtis_are_the_random_bytes_in_hex() -> None:
    assert new_activation_id(fixed(b"\x00\x01\xfe\xff")) == "act-0001feff"
    assert grants.new_jti(fixed(NONCE_BYTES)) == NONCE_BYTES.hex()
    counter = itertools.count()
    distinct = {grants.new_jti(lambda n: next(counter).to_bytes(n, "big")) for _ in range(5)}
    assert len(distinct) == 5
