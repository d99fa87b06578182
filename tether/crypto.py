"""The primitives of docs/protocol.md §1, one implementation each (the Python twin of
client/web/src/proto/crypto.mjs).

Sans-IO: nothing here reads the OS random source. Whoever needs randomness takes a
`Random` (the edges pass `os.urandom`; tests pass fixed bytes), so every message the core
makes can be reproduced byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

Random = Callable[[int], bytes]
"""n -> n random bytes: `os.urandom` at the edges."""

def kdf(key: bytes, person: bytes, data: bytes) -> bytes:
    """KDF(key, data, person): keyed BLAKE2b-256 with a personalisation label."""
    return hashlib.blake2b(data, key=key, digest_size=32, person=person).digest()


def personal_hash(person: bytes, *parts: bytes) -> bytes:
    """Unkeyed BLAKE2b-256 of the concatenated parts, with a personalisation label."""
    h = hashlib.blake2b(digest_size=32, person=person)
    for part in parts:
        h.update(part)
    return h.digest()


def aead_seal(key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_open(key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext does not authenticate (each caller
    raises its own error, which is all its callers catch)."""
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except CryptoError:
        return None


def x25519_public(secret: bytes) -> bytes:
    return crypto_scalarmult_base(secret)


def dh(secret: bytes, public: bytes) -> bytes | None:
    """X25519, or None for a low-order public key (an all-zero shared secret, which would
    make the keys derived from it known to anyone)."""
    try:
        shared = crypto_scalarmult(secret, public)
    except CryptoError:  # libsodium itself refuses an all-zero result...
        return None
    if shared == bytes(32):  # ...and so does this, whatever the binding does
        return None
    return shared
