"""tether.authz at its edges: the skew and size limits exactly at their values, a sender
name that is not a principal, and the key-rotation message (found by mutation testing,
tools/mutation/run.py: the other tests read the limits from the module or test far from them)."""

from __future__ import annotations

import pytest
from nacl.public import PublicKey, SealedBox
from test_authz import ALICE, AUTHORITY_X, BODY, NOW, authority_receives, request

from tether.authz import REQUEST, AuthzError, open_request_envelope, rotation_message
from tether.signed import sign_document


@pytest.mark.parametrize("age", [120.0, -120.0])
def test_a_request_exactly_120_s_off_is_accepted(age: float) -> None:
    assert authority_receives(request(now=NOW - age).payload)["ts"] == NOW - age


@pytest.mark.parametrize("age", [120.5, -120.5])
def test_a_request_just_over_120_s_off_is_refused(age: float) -> None:
    with pytest.raises(AuthzError, match="clock skew"):
        authority_receives(request(now=NOW - age).payload)


def test_the_size_limit_is_48_kib() -> None:
    """48 KiB passes the size check (and then fails to decrypt); one byte more is refused
    before any decryption."""
    with pytest.raises(AuthzError, match="undecryptable"):
        open_request_envelope(bytes(AUTHORITY_X), bytes(48 * 1024))
    with pytest.raises(AuthzError, match="49153 bytes is over the 49152-byte limit"):
        open_request_envelope(bytes(AUTHORITY_X), bytes(48 * 1024 + 1))


@pytest.mark.parametrize("user", ["alice/#", "", 5, None])
def test_a_sender_that_is_not_a_principal_name_is_refused(user: object) -> None:
    doc = dict(BODY, user=user, nonce="ab" * 16, ts=NOW, reply_key="x")
    sealed = SealedBox(PublicKey(bytes(AUTHORITY_X.public_key))).encrypt(
        sign_document(ALICE, REQUEST, doc))
    with pytest.raises(AuthzError, match="not a valid principal name"):
        open_request_envelope(bytes(AUTHORITY_X), sealed)


def test_the_rotation_message_binds_old_new_and_x25519_keys_in_order() -> None:
    old, new, x = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert rotation_message(old, new, x) == b"tether-rotate\x00" + b"\x01" * 32 + b"\x02" * 32 + b"\x03" * 32
    assert rotation_message(old, new) == b"tether-rotate\x00" + b"\x01" * 32 + b"\x02" * 32
