"""Console login: the browser derives a user's Ed25519 key and broker password from a
passphrase (sans-IO; the same derivation runs in the browser with libsodium).

    salt = BLAKE2b(digest 16, person "tether-console", data = authority_ed25519 || utf8(user))
    out  = Argon2id13(64 bytes, utf8(passphrase), salt, OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
    seed = out[0:32]                     the user's Ed25519 signing key
    mqtt_password = b64url(out[32:64])   the broker password of the console slot NAME.c

The salt binds the key to one authority and one user name, so the same passphrase gives
unrelated keys elsewhere. The broker stores only a hash of the password; the password
cannot sign a grant request, and the seed never leaves the browser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.pwhash.argon2id as argon2id
from nacl.signing import SigningKey

from tether.encoding import b64e

PERSON = b"tether-console"
SALT_LEN = 16
OUT_LEN = 64
OPSLIMIT = int(argon2id.OPSLIMIT_INTERACTIVE)  # 2
MEMLIMIT = int(argon2id.MEMLIMIT_INTERACTIVE)  # 64 MiB
SLOT_SUFFIX = ".c"
MIN_PASSPHRASE = 12


def console_slot(user: str) -> str:
    """The broker username (and client id) of a user's console login."""
    return user + SLOT_SUFFIX


def salt(authority_ed25519: bytes, user: str) -> bytes:
    if len(authority_ed25519) != 32:
        raise ValueError("the authority's Ed25519 key is 32 bytes")
    return hashlib.blake2b(authority_ed25519 + user.encode("utf-8"), digest_size=SALT_LEN,
                           person=PERSON).digest()


@dataclass(frozen=True)
class ConsoleKeys:
    seed: bytes  # Ed25519 seed: the user's identity key
    mqtt_password: str

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)


def derive(passphrase: str, authority_ed25519: bytes, user: str) -> ConsoleKeys:
    out = argon2id.kdf(OUT_LEN, passphrase.encode("utf-8"), salt(authority_ed25519, user),
                       opslimit=OPSLIMIT, memlimit=MEMLIMIT)
    return ConsoleKeys(bytes(out[:32]), b64e(bytes(out[32:])))
