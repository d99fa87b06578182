"""Grant requests and replies between principals and the authority (sans-IO).

Request, on authz/req/{mqtt name}: sealed box to the authority's X25519 key, holding a
document signed by the requester: who, which agent, mode, run-as, reason, command, a
nonce and a one-time reply key. Reply, on authz/rep/{mqtt name}: sealed box to that
reply key, holding a document signed by the authority. The broker sees only sizes.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from tether.encoding import b64d, b64e
from tether.errors import TetherError
from tether.signed import BadDocument, open_document, peek_document, sign_document
from tether.topics import valid_name

REQUEST = "grant-request"
REPLY = "grant-reply"
MAX_SKEW = 120.0
# A sealed request's size: the largest legitimate one (an exec request at the command
# limit, tether.grants.MAX_COMMAND_BYTES, with a reason at its limit) is about 34 KiB.
MAX_REQUEST_BYTES = 48 * 1024
NONCE = re.compile(r"[0-9a-f]{32}")  # what build_request (and the web console) make


class AuthzError(TetherError):
    pass


@dataclass
class PendingRequest:
    nonce: str
    reply_key: PrivateKey
    payload: bytes


def build_request(
    requester: SigningKey, requester_name: str, authority_x25519: bytes, body: dict[str, Any], now: float
) -> PendingRequest:
    reply_key = PrivateKey.generate()
    nonce = secrets.token_hex(16)
    doc = dict(body, user=requester_name, nonce=nonce, ts=now, reply_key=b64e(bytes(reply_key.public_key)))
    sealed = SealedBox(PublicKey(authority_x25519)).encrypt(sign_document(requester, REQUEST, doc))
    return PendingRequest(nonce, reply_key, sealed)


def open_request_envelope(authority_x25519_secret: bytes, payload: bytes) -> tuple[str, bytes]:
    """Decrypt; return (claimed user, signed blob) so the caller can look up the key."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise AuthzError(f"request of {len(payload)} bytes is over the {MAX_REQUEST_BYTES}-byte limit")
    try:
        blob = SealedBox(PrivateKey(authority_x25519_secret)).decrypt(payload)
        claimed = peek_document(blob)["user"]
    except (CryptoError, BadDocument, KeyError) as exc:
        raise AuthzError("undecryptable or malformed request") from exc
    if not isinstance(claimed, str) or not valid_name(claimed):
        raise AuthzError("malformed request: the sender is not a valid principal name")
    return claimed, blob


def verify_request(requester_key: bytes, blob: bytes, now: float) -> dict[str, Any]:
    try:
        doc = open_document(requester_key, REQUEST, blob)
    except BadDocument as exc:
        raise AuthzError(str(exc)) from exc
    # Signed, but still untrusted input: a bad field must be an AuthzError, and a NaN
    # timestamp (which compares false with everything) must not pass the skew check.
    try:
        ts = float(doc["ts"])
        reply_key = b64d(doc["reply_key"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AuthzError(f"malformed request: {exc!r}") from exc
    if not NONCE.fullmatch(str(doc.get("nonce"))) or len(reply_key) != 32:
        raise AuthzError("malformed request: bad nonce or reply key")
    if not math.isfinite(ts) or abs(now - ts) > MAX_SKEW:
        raise AuthzError("request timestamp outside the allowed clock skew; check NTP")
    return doc


def rotation_message(old_key: bytes, new_key: bytes, new_x25519: bytes = b"") -> bytes:
    """What the new key signs to agree to replace the old one (and, for agents, the new
    X25519 key that goes with it)."""
    return b"tether-rotate\x00" + old_key + new_key + new_x25519


def build_reply(authority: SigningKey, request: dict[str, Any], body: dict[str, Any]) -> bytes:
    doc = dict(body, nonce=request["nonce"])
    return SealedBox(PublicKey(b64d(request["reply_key"]))).encrypt(sign_document(authority, REPLY, doc))


def open_reply(pending: PendingRequest, authority_key: bytes, payload: bytes) -> dict[str, Any] | None:
    """The reply document, or None if this payload is not the reply to `pending`."""
    try:
        blob = SealedBox(pending.reply_key).decrypt(payload)
    except CryptoError:
        return None
    try:
        doc = open_document(authority_key, REPLY, blob)
    except BadDocument as exc:
        raise AuthzError("reply is not signed by the authority") from exc
    return doc if doc.get("nonce") == pending.nonce else None
