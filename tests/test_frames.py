"""Tests for tether.frames: the frame codec and its XChaCha20-Poly1305 AEAD."""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.exceptions import CryptoError

from tether.frames import (
    EPOCH_BITS,
    HEADER,
    HEADER_LEN,
    MAX_EPOCH_AHEAD,
    MAX_PAYLOAD,
    TAG_LEN,
    VERSION,
    Direction,
    FrameCipher,
    FrameError,
    FrameType,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
EPOCH = 1 << EPOCH_BITS


def pair(key: bytes = KEY, direction: Direction = Direction.C2A) -> tuple[FrameCipher, FrameCipher]:
    """A sealing and an opening cipher for one direction of one session."""
    return FrameCipher(key, direction), FrameCipher(key, direction)


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def body(blob: bytes) -> bytes:
    """The ciphertext without header and tag: plaintext XOR keystream(key, nonce)."""
    return blob[HEADER_LEN:-TAG_LEN]


def raw_open(key: bytes, blob: bytes, direction: Direction, space: int) -> bytes:
    """Decrypt with an explicit key, rebuilding the documented nonce (direction, space, epoch, seq)."""
    _, _, _, epoch, seq, _ = HEADER.unpack_from(blob)
    nonce = bytes((direction, space)) + struct.pack(">IQ", epoch, seq) + bytes(10)
    return crypto_aead_xchacha20poly1305_ietf_decrypt(blob[HEADER_LEN:], blob[:HEADER_LEN], nonce, key)


# ----- round trips -----


@pytest.mark.parametrize("ftype", list(FrameType))
def test_round_trip_every_type(ftype: FrameType) -> None:
    tx, rx = pair()
    payload = f"payload of {ftype.name}".encode()
    blob = tx.seal(ftype, 42, 17, payload, flags=3)
    frame = rx.open(blob)
    assert frame.type is ftype
    assert (frame.seq, frame.ack, frame.flags, frame.payload) == (42, 17, 3, payload)
    assert len(blob) == HEADER_LEN + len(payload) + TAG_LEN
    # The header is in the clear and says what the docstring says it says.
    assert HEADER.unpack_from(blob) == (VERSION, ftype, 3, 0, 42, 17)
    # The payload is not.
    assert payload not in blob


@given(
    ftype=st.sampled_from(list(FrameType)),
    seq=st.one_of(
        st.integers(min_value=0, max_value=((MAX_EPOCH_AHEAD + 1) << EPOCH_BITS) - 1),
        st.integers(min_value=EPOCH - 3, max_value=EPOCH + 3),
    ),
    ack=st.integers(min_value=0, max_value=(1 << 64) - 1),
    flags=st.integers(min_value=0, max_value=255),
    payload=st.binary(max_size=2048),
    direction=st.sampled_from(list(Direction)),
)
@settings(max_examples=150, deadline=None)
def test_round_trip_property(
    ftype: FrameType, seq: int, ack: int, flags: int, payload: bytes, direction: Direction
) -> None:
    tx, rx = pair(direction=direction)
    frame = rx.open(tx.seal(ftype, seq, ack, payload, flags=flags))
    assert (frame.type, frame.seq, frame.ack, frame.flags, frame.payload) == (ftype, seq, ack, flags, payload)


def test_empty_and_maximal_payloads() -> None:
    tx, rx = pair()
    assert rx.open(tx.seal(FrameType.EOF, 1, 0, b"")).payload == b""
    big = os.urandom(MAX_PAYLOAD)
    assert rx.open(tx.seal(FrameType.DATA, 2, 0, big)).payload == big


def test_oversize_payload_refused() -> None:
    tx, _ = pair()
    with pytest.raises(ValueError, match="exceeds"):
        tx.seal(FrameType.DATA, 1, 0, bytes(MAX_PAYLOAD + 1))


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        FrameCipher(bytes(31), Direction.C2A)
    with pytest.raises(ValueError):
        FrameCipher(bytes(33), Direction.A2C)


# ----- tampering -----


def test_every_single_byte_tamper_is_detected() -> None:
    tx, rx = pair()
    blob = tx.seal(FrameType.DATA, (3 << EPOCH_BITS) + 5, 9, b"hello, world", flags=1)
    rx.open(blob)  # the original is fine (and rx now knows epoch 3)
    for i in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[i] ^= mask
            with pytest.raises(FrameError):
                rx.open(bytes(bad))


def test_truncated_or_extended_frames_fail() -> None:
    tx, rx = pair()
    blob = tx.seal(FrameType.DATA, 1, 0, b"abc")
    for n in range(len(blob)):
        with pytest.raises(FrameError):
            rx.open(blob[:n])
    with pytest.raises(FrameError):
        rx.open(blob + b"\x00")
    with pytest.raises(FrameError):
        rx.open(b"")


def test_unknown_version_and_type_rejected() -> None:
    tx, rx = pair()
    blob = bytearray(tx.seal(FrameType.DATA, 1, 0, b"x"))
    blob[0] = VERSION + 1
    with pytest.raises(FrameError, match="version"):
        rx.open(bytes(blob))
    blob = bytearray(tx.seal(FrameType.DATA, 1, 0, b"x"))
    blob[1] = 200
    with pytest.raises(FrameError, match="type"):
        rx.open(bytes(blob))


def test_splicing_header_of_one_frame_onto_another_fails() -> None:
    tx, rx = pair()
    a = tx.seal(FrameType.DATA, 1, 0, b"first")
    b = tx.seal(FrameType.DATA, 2, 0, b"other")
    with pytest.raises(FrameError):
        rx.open(a[:HEADER_LEN] + b[HEADER_LEN:])
    with pytest.raises(FrameError):
        rx.open(b[:HEADER_LEN] + a[HEADER_LEN:])


# ----- keys and directions -----


def test_wrong_direction_fails() -> None:
    blob = FrameCipher(KEY, Direction.C2A).seal(FrameType.DATA, 1, 0, b"keystrokes")
    # The other direction's cipher (other key, as in a real session) cannot open it.
    with pytest.raises(FrameError):
        FrameCipher(OTHER_KEY, Direction.A2C).open(blob)
    # Even with the same key, the direction is part of the nonce, so reflection fails.
    with pytest.raises(FrameError):
        FrameCipher(KEY, Direction.A2C).open(blob)
    # A different session's key fails too.
    with pytest.raises(FrameError):
        FrameCipher(OTHER_KEY, Direction.C2A).open(blob)
    assert FrameCipher(KEY, Direction.C2A).open(blob).payload == b"keystrokes"


def test_directions_use_different_keystreams_even_with_one_key() -> None:
    p = bytes(64)
    a = FrameCipher(KEY, Direction.C2A).seal(FrameType.DATA, 7, 0, p)
    b = FrameCipher(KEY, Direction.A2C).seal(FrameType.DATA, 7, 0, p)
    assert body(a) != body(b)


# ----- number spaces -----


def test_ack_and_reliable_number_spaces_never_share_a_nonce() -> None:
    tx, rx = pair()
    p1 = os.urandom(48)
    p2 = os.urandom(48)
    data = tx.seal(FrameType.DATA, 7, 0, p1)
    ack = tx.seal(FrameType.ACK, 7, 0, p2)
    # With a shared nonce the keystream would repeat, and c1 ^ c2 would equal p1 ^ p2.
    assert xor(body(data), body(ack)) != xor(p1, p2)
    # Each decrypts only as its own type.
    assert rx.open(data).payload == p1
    assert rx.open(ack).payload == p2
    for blob, other in ((data, FrameType.ACK), (ack, FrameType.DATA)):
        forged = bytearray(blob)
        forged[1] = other
        with pytest.raises(FrameError):
            rx.open(bytes(forged))


@pytest.mark.parametrize("ftype", [t for t in FrameType if t != FrameType.ACK])
def test_every_reliable_type_is_in_a_space_distinct_from_ack(ftype: FrameType) -> None:
    tx, _ = pair()
    p = bytes(32)
    reliable = tx.seal(ftype, 99, 0, p)
    data = tx.seal(FrameType.DATA, 99, 0, p)
    ack = tx.seal(FrameType.ACK, 99, 0, p)
    # Same seq in the ACK space: a different nonce, so a different keystream.
    assert body(reliable) != body(ack)
    assert body(data) != body(ack)
    k = KEY
    assert raw_open(k, reliable, Direction.C2A, 0) == p
    assert raw_open(k, ack, Direction.C2A, 1) == p


# ----- epochs -----


def test_epoch_rollover_changes_the_key() -> None:
    tx, rx = pair()
    last0 = tx.seal(FrameType.DATA, EPOCH - 1, 0, b"end of epoch 0")
    first1 = tx.seal(FrameType.DATA, EPOCH, 0, b"start of epoch 1")
    first2 = tx.seal(FrameType.DATA, 2 * EPOCH, 0, b"start of epoch 2")
    assert HEADER.unpack_from(last0)[3] == 0
    assert HEADER.unpack_from(first1)[3] == 1
    assert HEADER.unpack_from(first2)[3] == 2
    # Epoch 0 uses the session key itself ...
    assert raw_open(KEY, last0, Direction.C2A, 0) == b"end of epoch 0"
    # ... later epochs do not.
    for blob in (first1, first2):
        with pytest.raises(CryptoError):
            raw_open(KEY, blob, Direction.C2A, 0)
    # And the receiver follows along.
    assert rx.open(last0).payload == b"end of epoch 0"
    assert rx.open(first1).payload == b"start of epoch 1"
    assert rx.open(first2).payload == b"start of epoch 2"


def test_epoch_keys_all_differ() -> None:
    # Same plaintext, same offset within the epoch: only the key differs between these.
    tx, _ = pair()
    bodies = [body(tx.seal(FrameType.DATA, e * EPOCH + 3, 0, bytes(32))) for e in range(6)]
    # Nonces differ too (epoch, seq are in them), so check pairwise that no two coincide.
    assert len(set(bodies)) == len(bodies)
    # Epoch-1 frame under the epoch-0 key with its own nonce does not authenticate.
    with pytest.raises(CryptoError):
        raw_open(KEY, tx.seal(FrameType.DATA, EPOCH + 3, 0, b"x"), Direction.C2A, 0)


def test_open_across_epochs_in_any_order() -> None:
    tx, rx = pair()
    seqs = [EPOCH - 1, EPOCH, EPOCH + 1, 2 * EPOCH, 5, 2 * EPOCH + 9, EPOCH + 77, 0, 3 * EPOCH - 1]
    blobs = {s: tx.seal(FrameType.DATA, s, 0, s.to_bytes(8, "big")) for s in seqs}
    # Newer epochs first, then older ones: all of them open.
    for s in seqs:
        assert rx.open(blobs[s]).payload == s.to_bytes(8, "big")
    # A fresh receiver that first sees epoch 2, then epoch 1 and 0.
    rx2 = FrameCipher(KEY, Direction.C2A)
    for s in (EPOCH + 1, 2 * EPOCH, EPOCH - 1, 5):
        assert rx2.open(blobs[s]).seq == s


def test_ack_space_rolls_over_independently() -> None:
    tx, rx = pair()
    a = tx.seal(FrameType.ACK, EPOCH, 0, b"ack in epoch 1")
    d = tx.seal(FrameType.DATA, 3, 0, b"data in epoch 0")
    assert rx.open(a).payload == b"ack in epoch 1"
    assert rx.open(d).payload == b"data in epoch 0"


@pytest.mark.parametrize(("seq", "epoch"), [(5, 1), (EPOCH, 0), (EPOCH, 2), (2 * EPOCH + 1, 1)])
def test_epoch_field_inconsistent_with_seq(seq: int, epoch: int) -> None:
    tx, rx = pair()
    blob = bytearray(tx.seal(FrameType.DATA, seq, 0, b"x"))
    struct.pack_into(">I", blob, 3, epoch)
    with pytest.raises(FrameError, match="epoch"):
        rx.open(bytes(blob))


def test_authentic_frame_far_beyond_known_epochs_is_refused_until_reached() -> None:
    tx, rx = pair()
    far = tx.seal(FrameType.DATA, 40 * EPOCH, 0, b"far")
    with pytest.raises(FrameError, match="epoch"):
        rx.open(far)
    # A receiver that walks the epochs up one frame at a time accepts it.
    for e in range(1, 41):
        rx.open(tx.seal(FrameType.DATA, e * EPOCH, 0, b"step"))
    assert rx.open(far).payload == b"far"


def test_epoch_limit_is_relative_to_authenticated_frames_only() -> None:
    tx, rx = pair()
    edge = tx.seal(FrameType.DATA, MAX_EPOCH_AHEAD * EPOCH, 0, b"edge")
    beyond = tx.seal(FrameType.DATA, 2 * MAX_EPOCH_AHEAD * EPOCH, 0, b"beyond")
    # A forgery within range must not move the limit.
    forged = bytearray(edge)
    forged[-1] ^= 1
    with pytest.raises(FrameError):
        rx.open(bytes(forged))
    with pytest.raises(FrameError, match="epoch"):
        rx.open(beyond)
    # An authentic frame does.
    assert rx.open(edge).payload == b"edge"
    assert rx.open(beyond).payload == b"beyond"
    too_far = tx.seal(FrameType.DATA, (3 * MAX_EPOCH_AHEAD + 1) * EPOCH, 0, b"too far")
    with pytest.raises(FrameError, match="epoch"):
        rx.open(too_far)


@pytest.mark.parametrize("epoch", [1 << 16, 1 << 24, (1 << 32) - 1])
def test_forged_frame_with_huge_epoch_is_cheap_to_reject(epoch: int) -> None:
    """An unauthenticated header must not make the receiver derive millions of keys."""
    _, rx = pair()
    forged = HEADER.pack(VERSION, FrameType.DATA, 0, epoch, epoch << EPOCH_BITS, 0) + bytes(TAG_LEN + 8)
    started = time.perf_counter()
    for _ in range(10):
        with pytest.raises(FrameError):
            rx.open(forged)
    assert time.perf_counter() - started < 0.5
