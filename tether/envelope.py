"""The sealed, signed request and its reply (sans-IO): docs/protocol.md §6 (grant requests)
and §13 (audit queries) use it, and enrolment (§12) its nonce and reply parts.

Request: a sealed box to the recipient's X25519 key holding a document signed by the
sender (tether.signed, under a domain of the caller's), whose fields include a nonce (32
hex digits), the sender's time (`ts`) and a one-time X25519 reply key (`reply_key`).
Reply: a sealed box to that reply key holding a document signed by the answerer, which
repeats the nonce. The broker sees only sizes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from nacl.bindings import crypto_box
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from tether.crypto import Random
from tether.encoding import b64d, b64e
from tether.errors import TetherError
from tether.signed import BadDocument, open_document, peek_document, sign_document
from tether.skew import within_skew

NONCE = re.compile(r"[0-9a-f]{32}")  # what new_nonce (and the web console) make


class EnvelopeError(TetherError):
    """Undecryptable, unsigned or malformed; the message says which."""


class StaleEnvelope(EnvelopeError):
    """Authentic and well formed, but its time is outside the allowed clock skew."""


def new_nonce(rand: Random) -> str:
    return rand(16).hex()


def new_key(rand: Random) -> PrivateKey:
    return PrivateKey(rand(32))


@dataclass
class Pending:
    """A sent request: what its reply must repeat (nonce) and be sealed to (reply_key)."""

    nonce: str
    reply_key: PrivateKey
    payload: bytes


def seal_request(sender: SigningKey, domain: str, recipient_x25519: bytes, fields: dict[str, Any],
                 now: float, rand: Random) -> Pending:
    reply_key = new_key(rand)
    nonce = new_nonce(rand)
    doc = dict(fields, nonce=nonce, ts=now, reply_key=b64e(bytes(reply_key.public_key)))
    return Pending(nonce, reply_key, seal_to(recipient_x25519, sign_document(sender, domain, doc), rand))


def unseal(x25519_secret: bytes, payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Decrypt a request: its document, unverified (to learn who claims to have signed it),
    and the signed blob to verify once the caller knows the key."""
    try:
        blob = SealedBox(PrivateKey(x25519_secret)).decrypt(payload)
        return peek_document(blob), blob
    except (CryptoError, BadDocument, ValueError, TypeError) as exc:
        raise EnvelopeError("undecryptable or malformed") from exc


def verify_request(sender_key: bytes, domain: str, blob: bytes, now: float) -> dict[str, Any]:
    """The request's document once its signature, nonce, reply key and time check out.
    Raises EnvelopeError (StaleEnvelope for the time)."""
    try:
        doc = open_document(sender_key, domain, blob)
    except BadDocument as exc:
        raise EnvelopeError(str(exc)) from exc
    # Signed, but still untrusted input: a bad field must be an EnvelopeError.
    try:
        ts = float(doc["ts"])
        reply_key = b64d(str(doc["reply_key"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"malformed request: {exc!r}") from exc
    if not NONCE.fullmatch(str(doc.get("nonce"))) or len(reply_key) != 32:
        raise EnvelopeError("malformed request: bad nonce or reply key")
    if not within_skew(ts, now):
        raise StaleEnvelope("timestamp outside the allowed clock skew")
    return doc


def seal_to(x25519_public: bytes, plaintext: bytes, rand: Random) -> bytes:
    """libsodium's sealed box (crypto_box_seal; SealedBox and the web console open it) with
    its ephemeral key from `rand`: epk || crypto_box(m, BLAKE2b-192(epk || pk), pk, esk)."""
    ephemeral = PrivateKey(rand(32))
    epk = bytes(ephemeral.public_key)
    nonce = hashlib.blake2b(epk + x25519_public, digest_size=24).digest()
    return epk + crypto_box(plaintext, nonce, bytes(PublicKey(x25519_public)), bytes(ephemeral))


def seal_reply(answerer: SigningKey, domain: str, request: dict[str, Any], fields: dict[str, Any],
               rand: Random) -> bytes:
    doc = dict(fields, nonce=request["nonce"])
    return seal_to(b64d(str(request["reply_key"])), sign_document(answerer, domain, doc), rand)


def open_sealed(x25519_secret: PrivateKey | bytes, payload: bytes) -> bytes | None:
    """The plaintext of a sealed box, or None if it is not sealed to this key."""
    try:
        key = x25519_secret if isinstance(x25519_secret, PrivateKey) else PrivateKey(x25519_secret)
        return SealedBox(key).decrypt(payload)
    except (CryptoError, ValueError, TypeError):
        return None


def open_reply(pending: Pending, answerer_key: bytes, domain: str, payload: bytes) -> dict[str, Any] | None:
    """The reply document, or None if the payload is not sealed to `pending`'s reply key or
    does not repeat its nonce. Raises EnvelopeError if it is sealed to that key but not
    signed by the answerer."""
    blob = open_sealed(pending.reply_key, payload)
    if blob is None:
        return None
    try:
        doc = open_document(answerer_key, domain, blob)
    except BadDocument as exc:
        raise EnvelopeError(f"reply is not signed: {exc}") from exc
    return doc if doc.get("nonce") == pending.nonce else None
