"""tether.crypto, the primitives of docs/protocol.md §1, against independent computations
(hashlib, PyNaCl's own classes) and at their failure cases."""

from __future__ import annotations

import hashlib

import pytest
from nacl.public import PrivateKey
from test_handshake import LOW_ORDER, LOW_ORDER_IDS

from tether.crypto import aead_open, aead_seal, dh, kdf, personal_hash, x25519_public

KEY = bytes(range(32))
NONCE = bytes(range(24))


def test_kdf_is_keyed_blake2b_256_with_the_label() -> None:
    assert kdf(KEY, b"tether-hs1", b"data") == hashlib.blake2b(
        b"data", key=KEY, digest_size=32, person=b"tether-hs1").digest()
    assert kdf(KEY, b"tether-hs2", b"data") != kdf(KEY, b"tether-hs1", b"data")


def test_personal_hash_hashes_the_parts_joined() -> None:
    expected = hashlib.blake2b(b"abcdef", digest_size=32, person=b"tether-hs-tx").digest()
    assert personal_hash(b"tether-hs-tx", b"ab", b"", b"cdef") == expected
    assert personal_hash(b"tether-hs-tx") == hashlib.blake2b(digest_size=32, person=b"tether-hs-tx").digest()


def test_aead_opens_what_it_sealed_and_nothing_altered() -> None:
    sealed = aead_seal(KEY, NONCE, b"ad", b"plain")
    assert len(sealed) == len(b"plain") + 16
    assert aead_open(KEY, NONCE, b"ad", sealed) == b"plain"
    assert aead_open(KEY, NONCE, b"other ad", sealed) is None
    assert aead_open(KEY, bytes(24), b"ad", sealed) is None
    assert aead_open(bytes(32), NONCE, b"ad", sealed) is None
    assert aead_open(KEY, NONCE, b"ad", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None


def test_dh_agrees_with_nacl_and_both_sides_agree() -> None:
    a, b = bytes([7]) * 32, bytes([9]) * 32
    assert x25519_public(a) == bytes(PrivateKey(a).public_key)
    shared = dh(a, x25519_public(b))
    assert shared is not None and len(shared) == 32
    assert shared == dh(b, x25519_public(a))


@pytest.mark.parametrize("point", LOW_ORDER, ids=LOW_ORDER_IDS)
def test_dh_with_a_low_order_point_is_none(point: bytes) -> None:
    assert dh(bytes([7]) * 32, point) is None
