"""Console login: the browser derives a user's Ed25519 key from a passphrase and logs in
to the broker with a one-time signed token (sans-IO; the same code runs in the browser
with libsodium).

    salt = BLAKE2b(digest 16, person "tether-console", data = authority_ed25519 || utf8(user))
    out  = Argon2id13(64 bytes, utf8(passphrase), salt, OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
    seed = out[0:32]                     the user's Ed25519 signing key
    mqtt_password = b64url(out[32:64])   the broker password of the user's CLI slots (if any)

The salt binds the key to one authority and one user name, so the same passphrase gives
unrelated keys elsewhere. The seed never leaves the browser.

The console slot NAME.c logs in with a fresh token each time (protocol.md §13.1):

    password = "tc1." + b64url(ts (8 bytes, big-endian Unix seconds) || nonce (16) || sig (64))
    sig      = Ed25519(seed, "tether-console-mqtt-v1" 0x00 username 0x00 client_id 0x00 ts nonce)

Both brokers check it against the registered public key (the broker files' console-keys),
within 120 s of its time, and take each token once: a token the broker has seen is
refused. So nothing the broker receives can log in again.

Each console slot has its own bounded table of taken tokens (`SlotTokens`), so one user
logging in without pause fills only its own: see `SlotTokens` for why replays stay refused.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
from nacl.signing import SigningKey, VerifyKey

from tether.encoding import b64d, b64e
from tether.skew import MAX_SKEW, within_skew

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
TOKEN_SKEW = MAX_SKEW
_TOKEN_LEN = 8 + 16 + 64


def is_console_slot(username: str) -> bool:
    return username.endswith(SLOT_SUFFIX) and len(username) > len(SLOT_SUFFIX)


def _token_message(username: str, client_id: str, ts_nonce: bytes) -> bytes:
    return b"\0".join([TOKEN_DOMAIN, username.encode("utf-8"), client_id.encode("utf-8"), ts_nonce])


def broker_token(seed: bytes, username: str, client_id: str, now: float, nonce: bytes) -> str:
    """A one-time broker password for the console slot `username`; `nonce` is 16 fresh
    random bytes."""
    ts_nonce = struct.pack(">Q", int(now)) + nonce
    sig = SigningKey(seed).sign(_token_message(username, client_id, ts_nonce)).signature
    return TOKEN_PREFIX + b64e(ts_nonce + sig)


TOKENS_PER_SLOT = 64
FORGET_AFTER = 2 * TOKEN_SKEW  # a token is remembered until this long after its ts


@dataclass
class SlotTokens:
    """One console slot's taken tokens: the (ts, nonce) of the TOKENS_PER_SLOT newest it
    accepted, and a floor, the highest ts it has let go of.

    A token is taken only if its ts is above the floor and its (ts, nonce) is not
    remembered; letting go of a token raises the floor to its ts (and lets go of all the
    others at or below it). So every taken token with ts > floor is remembered, every
    other one is refused, and each token logs in once, whatever the clock does. A slot that logs in more than TOKENS_PER_SLOT times
    within FORGET_AFTER raises only its own floor: its newest tokens still log in, an older
    one is refused. (The signature is not part of a token's identity: a re-encoded or
    re-signed copy of a taken token is still a replay.) The same table is
    broker/mosquitto-plugin/console_token.c's.
    """

    seen: dict[bytes, int] = field(default_factory=dict)  # ts || nonce -> ts
    floor: int = -1  # ts is unsigned: nothing is below the first floor
    newest: int = -1

    def take(self, ts_nonce: bytes, now: float) -> bool:
        """Take the token whose signed ts || nonce this is (24 bytes), if it may log in."""
        (ts,) = struct.unpack(">Q", ts_nonce[:8])
        if ts <= self.floor or ts_nonce in self.seen:
            return False
        if len(self.seen) >= TOKENS_PER_SLOT:
            stale = [t for t in self.seen.values() if t < now - FORGET_AFTER]
            if stale:
                self._raise_floor(max(stale))
        if len(self.seen) >= TOKENS_PER_SLOT:
            oldest = min(self.seen.values())
            if ts <= oldest:
                return False  # it would be among those to go
            self._raise_floor(oldest)
        self.seen[ts_nonce] = ts
        self.newest = max(self.newest, ts)
        return True

    def _raise_floor(self, ts: int) -> None:
        """Refuse every token at or below `ts` from now on: no need to remember them."""
        self.floor = max(self.floor, ts)
        self.seen = {k: t for k, t in self.seen.items() if t > self.floor}

    def idle(self, now: float) -> bool:
        """Every token it took is stale by its ts: the record may go."""
        return self.newest < now - FORGET_AFTER


@dataclass
class TokenChecker:
    """The broker's side: `keys` maps console slots (NAME.c) to Ed25519 public keys.
    `check` takes each valid token once; `recheck` is for live connections after a
    reload. Memory: at most
    TOKENS_PER_SLOT tokens for each slot that logged in within FORGET_AFTER (only a
    registered key's signature makes a record); idle records go every TOKEN_SKEW."""

    keys: dict[str, bytes] = field(default_factory=dict)
    _slots: dict[str, SlotTokens] = field(default_factory=dict)
    _next_sweep: float = 0.0

    def check(self, username: str, client_id: str, password: str, now: float) -> bool:
        ts_nonce = self._verified(username, client_id, password)
        if ts_nonce is None:
            return False
        (ts,) = struct.unpack(">Q", ts_nonce[:8])
        if not within_skew(ts, now):
            return False
        self._sweep(now)
        return self._slots.setdefault(username, SlotTokens()).take(ts_nonce, now)

    def recheck(self, username: str, client_id: str, password: str) -> bool:
        """A live connection after a reload: its token was taken when it connected, and it
        holds while it verifies under the slot's registered key (a new passphrase, a new
        key: it goes)."""
        return self._verified(username, client_id, password) is not None

    def _verified(self, username: str, client_id: str, password: str) -> bytes | None:
        """The signed ts || nonce of a well-formed token that verifies under the slot's key."""
        key = self.keys.get(username)
        if key is None or client_id != username or not password.startswith(TOKEN_PREFIX):
            return None
        try:
            raw = b64d(password[len(TOKEN_PREFIX):])
        except ValueError:
            return None
        if len(raw) != _TOKEN_LEN:
            return None
        try:
            VerifyKey(key).verify(_token_message(username, client_id, raw[:24]), raw[24:])
        except nacl.exceptions.BadSignatureError:
            return None
        return raw[:24]

    def remembered(self) -> int:
        """Tokens remembered across all slots."""
        return sum(len(slot.seen) for slot in self._slots.values())

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + TOKEN_SKEW
        self._slots = {name: slot for name, slot in self._slots.items() if not slot.idle(now)}
