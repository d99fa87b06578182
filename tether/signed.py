"""Signed documents: a 64-byte Ed25519 signature, then canonical JSON.

The signature covers a domain label, so a signature made for one kind of document
(presence, grant request, authority reply, ...) can never be replayed as another.
"""

from __future__ import annotations

from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tether.encoding import dumps, loads
from tether.errors import TetherError

SIG_LEN = 64


class BadDocument(TetherError):
    """A signed document that is malformed or whose signature does not verify."""


def _message(domain: str, body: bytes) -> bytes:
    return b"tether-doc\x00" + domain.encode() + b"\x00" + body


def sign_document(key: SigningKey, domain: str, doc: dict[str, Any]) -> bytes:
    body = dumps(doc)
    return key.sign(_message(domain, body)).signature + body


def open_document(public_key: bytes, domain: str, blob: bytes) -> dict[str, Any]:
    doc = peek_document(blob)
    try:
        VerifyKey(public_key).verify(_message(domain, blob[SIG_LEN:]), blob[:SIG_LEN])
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise BadDocument(f"bad {domain} signature") from exc
    return doc


def peek_document(blob: bytes) -> dict[str, Any]:
    """Parse without verifying, to learn who claims to have signed it."""
    if len(blob) <= SIG_LEN:
        raise BadDocument("document too short")
    try:
        doc = loads(blob[SIG_LEN:])
    except ValueError as exc:
        raise BadDocument("document is not JSON") from exc
    if not isinstance(doc, dict):
        raise BadDocument("document is not a JSON object")
    return doc
