"""tether.frames against the numbers docs/protocol.md fixes (§9, §17), written out here rather
than imported, so that a changed constant in frames.py fails a test (mutation testing,
tools/mutation/run.py, found that every other test reads the constants from the module)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from tether.frames import (
    EPOCH_BITS,
    MAX_EPOCH_AHEAD,
    MAX_PAYLOAD,
    Direction,
    Frame,
    FrameCipher,
    FrameError,
    FrameType,
)

# docs/protocol.md §17: the session keys of the vector handshake and the frames sealed with them.
K_C2A = bytes.fromhex("ba16cded70d432aeab467a5cc0cd3579decd565aa19769d9aa7165decbbf365c")
DATA_SEQ1 = bytes.fromhex("01010000000000000000000000000100000000000000004b2405129e2587c400f857"
                          "79531e017aecceed")
ACK_1 = bytes.fromhex("01080000000000000000000000000100000000000000025882ddb6540b9a322997553d"
                      "8226ccad6a54618d6a676059")
K_C2A_EPOCH1 = bytes.fromhex("06004c045a0ea0df23e07107f6742fbdd75da1d39342c7c110c0c5f019fcea25")


def test_sealed_frames_are_the_documented_vectors() -> None:
    """Version byte, type numbers, flags sent as 0, the nonce layout and the C2A direction."""
    tx = FrameCipher(K_C2A, Direction.C2A)
    assert tx.seal(FrameType.DATA, 1, 0, b"ls\r") == DATA_SEQ1
    assert tx.seal(FrameType.ACK, 1, 2, (2).to_bytes(8, "big")) == ACK_1
    rx = FrameCipher(K_C2A, Direction.C2A)
    assert rx.open(DATA_SEQ1) == Frame(FrameType.DATA, 0, 1, 0, b"ls\r")


def test_epoch_one_key_is_the_documented_kdf() -> None:
    assert hashlib.blake2b(b"rekey", key=K_C2A, digest_size=32,
                           person=b"tether-epoch").digest() == K_C2A_EPOCH1
    tx = FrameCipher(K_C2A, Direction.C2A)
    blob = tx.seal(FrameType.DATA, 1 << 20, 0, b"x")
    nonce = bytes((0, 0)) + (1).to_bytes(4, "big") + (1 << 20).to_bytes(8, "big") + bytes(10)
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(blob[23:], blob[:23], nonce,
                                                      K_C2A_EPOCH1) == b"x"


def test_a2c_nonce_starts_with_direction_one() -> None:
    blob = FrameCipher(K_C2A, Direction.A2C).seal(FrameType.NOTICE, 7, 0, b"bye")
    nonce = bytes((1, 0)) + (0).to_bytes(4, "big") + (7).to_bytes(8, "big") + bytes(10)
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(blob[23:], blob[:23], nonce, K_C2A) == b"bye"


def test_wire_numbers_are_the_protocols() -> None:
    """docs/protocol.md §9.2; the web client (client/web/src) carries its own copy."""
    assert {t.name: int(t) for t in FrameType} == {
        "DATA": 1, "STDERR": 2, "EOF": 3, "RESIZE": 4, "SIGNAL": 5, "EXIT": 6, "CLOSE": 7,
        "ACK": 8, "NOTICE": 9}
    assert (int(Direction.C2A), int(Direction.A2C)) == (0, 1)
    assert (EPOCH_BITS, MAX_EPOCH_AHEAD, MAX_PAYLOAD) == (20, 4, 65536)
    for t in FrameType:
        assert FrameCipher(K_C2A, Direction.A2C).seal(t, 1, 0, b"")[1] == int(t)


def test_a_65536_byte_payload_seals_and_65537_does_not() -> None:
    tx, rx = FrameCipher(K_C2A, Direction.C2A), FrameCipher(K_C2A, Direction.C2A)
    assert rx.open(tx.seal(FrameType.DATA, 1, 0, bytes(65536))).payload == bytes(65536)
    with pytest.raises(ValueError):
        tx.seal(FrameType.DATA, 2, 0, bytes(65537))


def test_a_fresh_receiver_accepts_epoch_4_and_refuses_epoch_5() -> None:
    """Epoch 0 is the newest a fresh receiver has seen, so 4 ahead is epoch 4."""
    tx = FrameCipher(K_C2A, Direction.C2A)
    rx = FrameCipher(K_C2A, Direction.C2A)
    five = tx.seal(FrameType.DATA, 5 << 20, 0, b"5")
    with pytest.raises(FrameError, match="epoch"):
        rx.open(five)
    assert rx.open(tx.seal(FrameType.DATA, 4 << 20, 0, b"4")).payload == b"4"


def test_the_epoch_ceiling_is_two_to_the_24() -> None:
    """Epoch 2**24 is the last with a key (§9.1: a receiver rejects epoch > 2**24). Deriving
    2**24 keys takes too long for a unit test, so the cipher is given the key of epoch
    2**24 - 1 the way it caches keys it has derived."""
    top = 1 << 24
    tx = FrameCipher(K_C2A, Direction.C2A)
    tx._keys[top - 1] = K_C2A  # type: ignore[attr-defined]
    assert tx.seal(FrameType.DATA, top << 20, 0, b"top")
    with pytest.raises(FrameError, match="epoch out of range"):
        tx.seal(FrameType.DATA, (top + 1) << 20, 0, b"past")


def test_a_frame_is_immutable() -> None:
    frame = FrameCipher(K_C2A, Direction.C2A).open(DATA_SEQ1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.payload = b"rm -rf /\r"  # type: ignore[misc]
