"""Console login: the browser derives a user's Ed25519 key from a passphrase and logs in
to the broker with a one-time signed token (sans-IO; the same code runs in the browser
with libsodium).

    salt = BLAKE2b(digest 16, person "tether-console", data = authority_ed25519 || utf8(user))
    out  = Argon2id13(64 bytes, utf8(passphrase), salt, OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
    seed = out[0:32]                     the user's Ed25519 signing key
    mqtt_password = b64url(out[32:64])   the broker password of the user's CLI slots (if any)

The salt binds the key to one authority and one user name, so the same passphrase gives
unrelated keys elsewhere. The seed never leaves the browser.

The console slot NAME.c logs in with a fresh token each time (protocol.md §17.1):

    password = "tc1." + b64url(ts (8 bytes, big-endian Unix seconds) || nonce (16) || sig (64))
    sig      = Ed25519(seed, "tether-console-mqtt-v1" 0x00 username 0x00 client_id 0x00 ts nonce)

Both brokers check it against the registered public key (the broker files' console-keys),
within 120 s of its time, and take each token once: a token the broker has seen is
refused. So nothing the broker receives can log in again.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
from nacl.signing import SigningKey, VerifyKey

from tether.encoding import b64d, b64e

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


TOKEN_PREFIX = "tc1."
TOKEN_DOMAIN = b"tether-console-mqtt-v1"
TOKEN_SKEW = 120.0
_TOKEN_LEN = 8 + 16 + 64


def is_console_slot(username: str) -> bool:
    return username.endswith(SLOT_SUFFIX) and len(username) > len(SLOT_SUFFIX)


def _token_message(username: str, client_id: str, ts_nonce: bytes) -> bytes:
    return b"\0".join([TOKEN_DOMAIN, username.encode("utf-8"), client_id.encode("utf-8"), ts_nonce])


def broker_token(seed: bytes, username: str, client_id: str, now: float, nonce: bytes | None = None) -> str:
    """A one-time broker password for the console slot `username`."""
    ts_nonce = struct.pack(">Q", int(now)) + (os.urandom(16) if nonce is None else nonce)
    sig = SigningKey(seed).sign(_token_message(username, client_id, ts_nonce)).signature
    return TOKEN_PREFIX + b64e(ts_nonce + sig)


@dataclass
class TokenChecker:
    """The broker's side: `keys` maps console slots (NAME.c) to Ed25519 public keys.
    `check` takes each valid token once. (A broker re-checking a live connection, after a
    reload, asks whether its key is still registered instead.)"""

    keys: dict[str, bytes] = field(default_factory=dict)
    _seen: dict[bytes, float] = field(default_factory=dict)  # token digest -> when it may go

    def check(self, username: str, client_id: str, password: str, now: float) -> bool:
        key = self.keys.get(username)
        if key is None or client_id != username or not password.startswith(TOKEN_PREFIX):
            return False
        try:
            raw = b64d(password[len(TOKEN_PREFIX):])
        except ValueError:
            return False
        if len(raw) != _TOKEN_LEN:
            return False
        (ts,) = struct.unpack(">Q", raw[:8])
        if abs(now - ts) > TOKEN_SKEW:
            return False
        try:
            VerifyKey(key).verify(_token_message(username, client_id, raw[:24]), raw[24:])
        except nacl.exceptions.BadSignatureError:
            return False
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        if digest in self._seen:
            return False
        if len(self._seen) > 1024:
            self._seen = {d: t for d, t in self._seen.items() if t > now}
        self._seen[digest] = ts + 2 * TOKEN_SKEW
        return True
