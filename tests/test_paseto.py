"""Tests for tether.paseto (PASETO v4.public) against the official test vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tether import paseto
from tether.paseto import PasetoError, b64url_decode, b64url_encode, footer_of, pae, sign, verify

VECTORS_PATH = Path(__file__).parent / "vectors" / "paseto-v4-public.json"
_ALL: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["tests"]
SUCCESS = [v for v in _ALL if not v["expect-fail"]]
FAILURE = [v for v in _ALL if v["expect-fail"]]

# Key pair of the official 4-S-* vectors.
PK = bytes.fromhex(SUCCESS[0]["public-key"])
SEED = bytes.fromhex(SUCCESS[0]["secret-key"])[:32]
OTHER_SEED = bytes(range(32))
OTHER_PK = bytes(SigningKey(OTHER_SEED).verify_key)


def _ids(vs: list[dict[str, Any]]) -> list[str]:
    return [str(v["name"]) for v in vs]


def test_vector_file_shape() -> None:
    assert _ids(SUCCESS) == ["4-S-1", "4-S-2", "4-S-3"]
    assert _ids(FAILURE) == ["4-F-1", "4-F-2", "4-F-3", "4-F-4"]


# ---------------------------------------------------------------------------
# Official vectors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("vec", SUCCESS, ids=_ids(SUCCESS))
def test_vector_sign(vec: dict[str, Any]) -> None:
    sk = bytes.fromhex(vec["secret-key"])
    assert len(sk) == 64
    seed, pk = sk[:32], sk[32:]
    assert pk == bytes.fromhex(vec["public-key"])
    assert seed == bytes.fromhex(vec["secret-key-seed"])
    assert bytes(SigningKey(seed).verify_key) == pk
    token = sign(
        seed,
        vec["payload"].encode(),
        footer=vec["footer"].encode(),
        implicit=vec["implicit-assertion"].encode(),
    )
    assert token.encode() == vec["token"].encode()


@pytest.mark.parametrize("vec", SUCCESS, ids=_ids(SUCCESS))
def test_vector_verify(vec: dict[str, Any]) -> None:
    pk = bytes.fromhex(vec["public-key"])
    footer = vec["footer"].encode()
    implicit = vec["implicit-assertion"].encode()
    expected = vec["payload"].encode()
    assert verify(pk, vec["token"], footer=footer, implicit=implicit) == expected
    assert verify(pk, vec["token"], implicit=implicit) == expected  # footer unchecked
    assert footer_of(vec["token"]) == footer


@pytest.mark.parametrize("vec", FAILURE, ids=_ids(FAILURE))
def test_vector_expect_fail(vec: dict[str, Any]) -> None:
    pk = bytes.fromhex(vec["public-key"]) if "public-key" in vec else PK
    footer = vec["footer"].encode()
    implicit = vec["implicit-assertion"].encode()
    with pytest.raises(PasetoError):
        verify(pk, vec["token"], footer=footer, implicit=implicit)
    with pytest.raises(PasetoError):
        verify(pk, vec["token"], implicit=implicit)


# ---------------------------------------------------------------------------
# PAE / base64url
# ---------------------------------------------------------------------------


def test_pae_spec_examples() -> None:
    # Examples from the PASETO spec (Common.md, "PAE Definition").
    assert pae([]) == b"\x00" * 8
    assert pae([b""]) == b"\x01" + b"\x00" * 7 + b"\x00" * 8
    assert pae([b"test"]) == b"\x01" + b"\x00" * 7 + b"\x04" + b"\x00" * 7 + b"test"


def test_pae_unambiguous() -> None:
    assert pae([b"ab", b"c"]) != pae([b"a", b"bc"])
    assert pae([b"a", b""]) != pae([b"a"])


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"foob", bytes(range(256))])
def test_b64url_roundtrip(data: bytes) -> None:
    enc = b64url_encode(data)
    assert "=" not in enc and "+" not in enc and "/" not in enc
    assert b64url_decode(enc) == data


@pytest.mark.parametrize(
    "bad",
    [
        "Zg==",  # padding
        "Zg=",
        "Zm9v+w",  # standard-alphabet char
        "Zm9v/w",
        "Zm 9v",  # whitespace
        "Zm9v\n",
        "Zm9vY",  # len % 4 == 1
        "Zh",  # non-canonical: unused trailing bits set ('Zg' is canonical)
        "Zm9=",
        "Zm\u00e9v",  # non-ASCII
    ],
)
def test_b64url_rejects(bad: str) -> None:
    with pytest.raises(PasetoError):
        b64url_decode(bad)


# ---------------------------------------------------------------------------
# Round trips and tampering
# ---------------------------------------------------------------------------


def test_roundtrip_all_options() -> None:
    tok = sign(SEED, b"hello", footer=b'{"kid":"k1"}', implicit=b"ctx")
    assert tok.startswith("v4.public.")
    assert tok.count(".") == 3
    assert verify(PK, tok, footer=b'{"kid":"k1"}', implicit=b"ctx") == b"hello"
    assert footer_of(tok) == b'{"kid":"k1"}'


def test_roundtrip_empty_message_and_no_footer() -> None:
    tok = sign(SEED, b"")
    assert tok.count(".") == 2
    assert verify(PK, tok) == b""
    assert verify(PK, tok, footer=b"") == b""
    assert footer_of(tok) == b""


def test_sign_is_deterministic() -> None:
    assert sign(SEED, b"m", b"f", b"i") == sign(SEED, b"m", b"f", b"i")


def _flip(token: str, segment: int, byte_index: int) -> str:
    """Flip one bit of a decoded byte in ``segment`` (0 = body, 1 = footer)."""
    parts = token[len(paseto.HEADER) :].split(".")
    raw = bytearray(b64url_decode(parts[segment]))
    raw[byte_index] ^= 0x01
    parts[segment] = b64url_encode(bytes(raw))
    return paseto.HEADER + ".".join(parts)


@pytest.mark.parametrize(
    ("segment", "index", "label"),
    [
        (0, 0, "payload first byte"),
        (0, 4, "payload middle byte"),
        (0, -64, "signature first byte"),
        (0, -1, "signature last byte"),
        (1, 0, "footer byte"),
    ],
)
def test_tampering_rejected(segment: int, index: int, label: str) -> None:
    tok = sign(SEED, b"payload-bytes", footer=b"footer", implicit=b"i")
    tampered = _flip(tok, segment, index)
    assert tampered != tok
    with pytest.raises(PasetoError):
        verify(PK, tampered, implicit=b"i")


def test_tampering_official_vector() -> None:
    vec = SUCCESS[2]
    for seg, idx in [(0, 0), (0, -1), (1, 0)]:
        with pytest.raises(PasetoError):
            verify(PK, _flip(vec["token"], seg, idx), implicit=vec["implicit-assertion"].encode())


def test_wrong_key() -> None:
    tok = sign(SEED, b"msg")
    with pytest.raises(PasetoError, match="signature"):
        verify(OTHER_PK, tok)
    assert verify(OTHER_PK, sign(OTHER_SEED, b"msg")) == b"msg"


def test_footer_mismatch() -> None:
    tok = sign(SEED, b"msg", footer=b"kid-1")
    with pytest.raises(PasetoError, match="footer"):
        verify(PK, tok, footer=b"kid-2")
    with pytest.raises(PasetoError, match="footer"):
        verify(PK, tok, footer=b"")
    tok_nofooter = sign(SEED, b"msg")
    with pytest.raises(PasetoError, match="footer"):
        verify(PK, tok_nofooter, footer=b"kid-1")


def test_footer_swap_rejected() -> None:
    # Replacing the footer (without checking it explicitly) breaks the signature.
    tok = sign(SEED, b"msg", footer=b"kid-1")
    swapped = tok.rsplit(".", 1)[0] + "." + b64url_encode(b"kid-2")
    assert footer_of(swapped) == b"kid-2"
    with pytest.raises(PasetoError, match="signature"):
        verify(PK, swapped)
    # Stripping the footer likewise.
    with pytest.raises(PasetoError, match="signature"):
        verify(PK, tok.rsplit(".", 1)[0])


def test_implicit_mismatch() -> None:
    tok = sign(SEED, b"msg", implicit=b"session-A")
    assert verify(PK, tok, implicit=b"session-A") == b"msg"
    with pytest.raises(PasetoError, match="signature"):
        verify(PK, tok, implicit=b"session-B")
    with pytest.raises(PasetoError, match="signature"):
        verify(PK, tok)


# ---------------------------------------------------------------------------
# Malformed tokens and arguments
# ---------------------------------------------------------------------------

_GOOD = sign(SEED, b"msg", footer=b"foot")
_GOOD_BODY = _GOOD.split(".")[2]
_GOOD_FOOT = _GOOD.split(".")[3]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v4.public",
        "v4.public.",
        "v4.local." + _GOOD_BODY,
        "v3.public." + _GOOD_BODY,
        "V4.public." + _GOOD_BODY,
        "v4.PUBLIC." + _GOOD_BODY,
        " v4.public." + _GOOD_BODY,
        "v4.public." + _GOOD_BODY + ".",  # empty footer segment
        "v4.public." + _GOOD_BODY + "." + _GOOD_FOOT + ".x",  # extra segment
        "v4.public." + _GOOD_BODY + "==",  # padding
        "v4.public." + _GOOD_BODY + "." + _GOOD_FOOT + "=",
        "v4.public." + _GOOD_BODY.replace("_", "/").replace("-", "+") + "x",
        "v4.public." + b64url_encode(b"\x00" * 63),  # too short for a signature
        "v4.public." + b64url_encode(b""),
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(PasetoError):
        verify(PK, token)


def test_malformed_footer_of() -> None:
    with pytest.raises(PasetoError):
        footer_of("v4.local." + _GOOD_BODY + "." + _GOOD_FOOT)
    with pytest.raises(PasetoError):
        footer_of("v4.public." + _GOOD_BODY + "." + _GOOD_FOOT + "=")
    with pytest.raises(PasetoError):
        footer_of("v4.public." + _GOOD_BODY + ".")


def test_noncanonical_base64_body_rejected() -> None:
    # Body length 64+3 bytes -> 90 chars, last char carries 2 unused bits.
    tok = sign(SEED, b"abc")
    body = tok[len(paseto.HEADER) :]
    assert len(body) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(body[-1])
    assert last & 0x0F == 0
    bad = paseto.HEADER + body[:-1] + alphabet[last | 0x01]
    with pytest.raises(PasetoError, match="non-canonical"):
        verify(PK, bad)


@pytest.mark.parametrize("n", [0, 31, 33, 64])
def test_bad_key_lengths(n: int) -> None:
    with pytest.raises(PasetoError, match="seed"):
        sign(b"\x01" * n, b"msg")
    with pytest.raises(PasetoError, match="public key"):
        verify(b"\x01" * n, _GOOD)


def test_small_order_public_key_rejected() -> None:
    # The identity point (y = 1) is a small-order key; libsodium refuses it.
    identity = b"\x01" + b"\x00" * 31
    with pytest.raises(PasetoError):
        verify(identity, _GOOD)
