"""PASETO v4.public: Ed25519-signed tokens.

Implements the ``v4.public`` purpose of the PASETO specification
(paseto-standard/paseto-spec, ``docs/01-Protocol-Versions/Version4.md``),
including pre-authentication encoding (PAE), optional footers and implicit
assertions.  Every function is pure: no I/O, no clock, no global state.

Token layout::

    v4.public.<b64url(message || signature)>[.<b64url(footer)>]

where ``signature = Ed25519-Sign(sk, PAE("v4.public.", message, footer, implicit))``.

Parsing is strict: the header must be exactly ``v4.public.``; base64url must be
unpadded, use only ``[A-Za-z0-9_-]`` and be canonical (no stray trailing bits);
a footer segment, when present, must be non-empty (an empty footer is encoded
by omitting the segment, as :func:`sign` does).  Any problem raises
:class:`PasetoError` with a message describing the cause.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
from collections.abc import Sequence

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from tether.errors import TetherError

__all__ = [
    "HEADER",
    "PasetoError",
    "b64url_decode",
    "b64url_encode",
    "footer_of",
    "pae",
    "sign",
    "verify",
]

HEADER = "v4.public."
"""Token header (version + purpose) for PASETO v4.public."""

_HEADER_BYTES = HEADER.encode("ascii")
_SEED_LEN = 32
_PUBLIC_KEY_LEN = 32
_SIG_LEN = 64
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


class PasetoError(TetherError):
    """Raised for any malformed, forged or wrongly-keyed token, or bad arguments."""


# ---------------------------------------------------------------------------
# Encoding helpers
# ---------------------------------------------------------------------------


def _le64(n: int) -> bytes:
    """Unsigned 64-bit little-endian with the MSB cleared (spec ``LE64``)."""
    if n < 0:
        raise PasetoError("LE64: negative length")
    return struct.pack("<Q", n & 0x7FFF_FFFF_FFFF_FFFF)


def pae(pieces: Sequence[bytes]) -> bytes:
    """Pre-Authentication Encoding: ``LE64(n) || (LE64(len(p)) || p)*``."""
    out = [_le64(len(pieces))]
    for piece in pieces:
        out.append(_le64(len(piece)))
        out.append(bytes(piece))
    return b"".join(out)


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`.

    Rejects padding, characters outside the URL-safe alphabet, impossible
    lengths (``len % 4 == 1``) and non-canonical encodings (non-zero unused
    trailing bits).
    """
    if _B64URL_RE.fullmatch(text) is None:
        raise PasetoError("invalid base64url: padding or non-alphabet character")
    if len(text) % 4 == 1:
        raise PasetoError("invalid base64url: impossible length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PasetoError(f"invalid base64url: {exc}") from exc
    if b64url_encode(data) != text:
        raise PasetoError("invalid base64url: non-canonical encoding")
    return data


# ---------------------------------------------------------------------------
# Token parsing
# ---------------------------------------------------------------------------


def _split(token: str) -> tuple[bytes, bytes]:
    """Check the header and return ``(decoded body, decoded footer)``."""
    if not isinstance(token, str):
        raise PasetoError("token must be a str")
    if not token.startswith(HEADER):
        raise PasetoError(f"invalid header: expected {HEADER!r}")
    parts = token[len(HEADER) :].split(".")
    if len(parts) == 1:
        body_b64, footer_b64 = parts[0], None
    elif len(parts) == 2:
        body_b64, footer_b64 = parts
        if footer_b64 == "":
            raise PasetoError("empty footer segment (empty footer must be omitted)")
    else:
        raise PasetoError("too many '.'-separated segments")
    body = b64url_decode(body_b64)
    if len(body) < _SIG_LEN:
        raise PasetoError(f"token body too short: {len(body)} < {_SIG_LEN} bytes")
    footer = b"" if footer_b64 is None else b64url_decode(footer_b64)
    return body, footer


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise PasetoError(f"{name} must be bytes")
    return bytes(value)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def sign(secret_seed: bytes, message: bytes, footer: bytes = b"", implicit: bytes = b"") -> str:
    """Sign ``message`` and return a ``v4.public.`` token.

    ``secret_seed`` is the 32-byte Ed25519 seed (the first half of the 64-byte
    libsodium secret key).  ``footer`` is appended (base64url) and authenticated;
    ``implicit`` is authenticated but not included in the token.
    """
    seed = _check_bytes("secret_seed", secret_seed)
    message = _check_bytes("message", message)
    footer = _check_bytes("footer", footer)
    implicit = _check_bytes("implicit", implicit)
    if len(seed) != _SEED_LEN:
        raise PasetoError(f"secret seed must be {_SEED_LEN} bytes, got {len(seed)}")
    m2 = pae([_HEADER_BYTES, message, footer, implicit])
    sig = bytes(SigningKey(seed).sign(m2).signature)
    token = HEADER + b64url_encode(message + sig)
    if footer:
        token += "." + b64url_encode(footer)
    return token


def verify(
    public_key: bytes, token: str, footer: bytes | None = None, implicit: bytes = b""
) -> bytes:
    """Verify a ``v4.public.`` token and return its message.

    ``public_key`` is the raw 32-byte Ed25519 public key.  If ``footer`` is not
    ``None`` the token's footer must equal it exactly (constant-time compare);
    either way the footer is covered by the signature.  ``implicit`` must match
    the implicit assertion used when signing.
    """
    pk = _check_bytes("public_key", public_key)
    implicit = _check_bytes("implicit", implicit)
    if len(pk) != _PUBLIC_KEY_LEN:
        raise PasetoError(f"public key must be {_PUBLIC_KEY_LEN} bytes, got {len(pk)}")
    body, token_footer = _split(token)
    if footer is not None:
        expected = _check_bytes("footer", footer)
        if not hmac.compare_digest(expected, token_footer):
            raise PasetoError("footer mismatch")
    message, sig = body[:-_SIG_LEN], body[-_SIG_LEN:]
    m2 = pae([_HEADER_BYTES, message, token_footer, implicit])
    try:
        VerifyKey(pk).verify(m2, sig)
    except BadSignatureError as exc:
        raise PasetoError("invalid signature") from exc
    except (CryptoError, ValueError, TypeError) as exc:
        raise PasetoError(f"signature verification failed: {exc}") from exc
    return message


def footer_of(token: str) -> bytes:
    """Return the decoded footer of ``token`` WITHOUT verifying it.

    Intended only for key lookup (e.g. a ``kid``) before calling :func:`verify`;
    the result is untrusted.  Returns ``b""`` when the token has no footer.
    Raises :class:`PasetoError` if the token is structurally malformed.
    """
    _body, footer = _split(token)
    return footer
