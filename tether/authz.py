"""Grant requests and replies between principals and the authority (sans-IO).

Request, on authz/req/{mqtt name}: sealed box to the authority's X25519 key, holding a
document signed by the requester: who, which agent, mode, run-as, reason, command, a
nonce and a one-time reply key. Reply, on authz/rep/{mqtt name}: sealed box to that
reply key, holding a document signed by the authority. The broker sees only sizes.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from tether import envelope
from tether.crypto import Random
from tether.errors import TetherError
from tether.topics import valid_name

REQUEST = "grant-request"
REPLY = "grant-reply"
# A sealed request's size: the largest legitimate one (an exec request at the command
# limit, tether.grants.MAX_COMMAND_BYTES, with a reason at its limit) is about 34 KiB.
MAX_REQUEST_BYTES = 48 * 1024

PendingRequest = envelope.Pending


class AuthzError(TetherError):
    pass


def build_request(requester: SigningKey, requester_name: str, authority_x25519: bytes, body: dict[str, Any],
                  now: float, rand: Random) -> PendingRequest:
    return envelope.seal_request(requester, REQUEST, authority_x25519, dict(body, user=requester_name),
                                 now, rand)


def open_request_envelope(authority_x25519_secret: bytes, payload: bytes) -> tuple[str, bytes]:
    """Decrypt; return (claimed user, signed blob) so the caller can look up the key."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise AuthzError(f"request of {len(payload)} bytes is over the {MAX_REQUEST_BYTES}-byte limit")
    try:
        doc, blob = envelope.unseal(authority_x25519_secret, payload)
    except envelope.EnvelopeError as exc:
        raise AuthzError("undecryptable or malformed request") from exc
    claimed = doc.get("user")
    if not isinstance(claimed, str) or not valid_name(claimed):
        raise AuthzError("malformed request: the sender is not a valid principal name")
    return claimed, blob


def verify_request(requester_key: bytes, blob: bytes, now: float) -> dict[str, Any]:
    try:
        return envelope.verify_request(requester_key, REQUEST, blob, now)
    except envelope.StaleEnvelope as exc:
        raise AuthzError("request timestamp outside the allowed clock skew; check NTP") from exc
    except envelope.EnvelopeError as exc:
        raise AuthzError(str(exc)) from exc


def rotation_message(old_key: bytes, new_key: bytes, new_x25519: bytes = b"") -> bytes:
    """What the new key signs to agree to replace the old one (and, for agents, the new
    X25519 key that goes with it)."""
    return b"tether-rotate\x00" + old_key + new_key + new_x25519


def build_reply(authority: SigningKey, request: dict[str, Any], body: dict[str, Any], rand: Random) -> bytes:
    return envelope.seal_reply(authority, REPLY, request, body, rand)


def open_reply(pending: PendingRequest, authority_key: bytes, payload: bytes) -> dict[str, Any] | None:
    """The reply document, or None if this payload is not the reply to `pending`."""
    try:
        return envelope.open_reply(pending, authority_key, REPLY, payload)
    except envelope.EnvelopeError as exc:
        raise AuthzError("reply is not signed by the authority") from exc
