"""Session frames: a small clear header that is the AEAD's associated data, then ciphertext.

    version u8 | type u8 | flags u8 | epoch u32 | seq u64 | ack u64 | ciphertext+tag

The XChaCha20-Poly1305 nonce is derived from (direction, number space, epoch, seq) and
never sent. Reliable frames and ACK frames count in separate number spaces, so no two
frames of one direction ever share a nonce. The key changes every 2**20 frames (an epoch).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from tether.crypto import aead_open, aead_seal, kdf
from tether.errors import TetherError

VERSION = 1
HEADER = struct.Struct(">BBBIQQ")
HEADER_LEN = HEADER.size
TAG_LEN = 16
EPOCH_BITS = 20
MAX_PAYLOAD = 64 * 1024
# How many epochs past the newest authenticated one a frame may claim. A live peer moves
# one epoch at a time and at most a window of frames ahead, so this is generous; without a
# bound, one forged header could make the receiver derive and cache millions of keys.
MAX_EPOCH_AHEAD = 4


class Direction(IntEnum):
    C2A = 0
    A2C = 1


class FrameType(IntEnum):
    DATA = 1  # a2c: PTY output or stdout; c2a: input
    STDERR = 2  # a2c: stderr of an exec session
    EOF = 3  # c2a: stdin closed
    RESIZE = 4  # c2a: cols u16, rows u16
    SIGNAL = 5  # c2a: signal number u8
    EXIT = 6  # a2c: JSON {"code": int | None, "signal": int | None}
    CLOSE = 7  # either: the last reliable frame; its seq is the final seq
    ACK = 8  # either, unreliable: received u64, then missing (first, last) u64 pairs
    NOTICE = 9  # a2c: UTF-8 text for the user, e.g. "session ends in 60 s"


class FrameError(TetherError):
    """A frame that fails to parse or authenticate. It is dropped, never acted on."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    flags: int
    seq: int
    ack: int
    payload: bytes


def _next_key(key: bytes) -> bytes:
    return kdf(key, b"tether-epoch", b"rekey")


class FrameCipher:
    """Seals or opens the frames of one direction of one session."""

    __slots__ = ("_direction", "_keys", "_newest")

    def __init__(self, key: bytes, direction: Direction) -> None:
        if len(key) != 32:
            raise ValueError("frame key must be 32 bytes")
        self._direction = direction
        self._keys: dict[int, bytes] = {0: key}
        self._newest = 0  # the newest epoch sealed or authenticated

    def _key(self, epoch: int) -> bytes:
        key = self._keys.get(epoch)
        if key is None:
            if epoch > 1 << 24:
                raise FrameError("epoch out of range")
            start = max(e for e in self._keys if e < epoch)
            key = self._keys[start]
            for e in range(start + 1, epoch + 1):
                key = _next_key(key)
                self._keys[e] = key
        return key

    def _nonce(self, ftype: int, epoch: int, seq: int) -> bytes:
        space = 1 if ftype == FrameType.ACK else 0
        return bytes((self._direction, space)) + struct.pack(">IQ", epoch, seq) + bytes(10)

    def seal(self, ftype: FrameType, seq: int, ack: int, payload: bytes, flags: int = 0) -> bytes:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"frame payload {len(payload)} exceeds {MAX_PAYLOAD}")
        epoch = seq >> EPOCH_BITS
        header = HEADER.pack(VERSION, ftype, flags, epoch, seq, ack)
        sealed = aead_seal(self._key(epoch), self._nonce(ftype, epoch, seq), header, payload)
        self._newest = max(self._newest, epoch)
        return header + sealed

    def open(self, blob: bytes) -> Frame:
        if len(blob) < HEADER_LEN + TAG_LEN:
            raise FrameError("frame too short")
        version, ftype, flags, epoch, seq, ack = HEADER.unpack_from(blob)
        if version != VERSION:
            raise FrameError(f"unknown frame version {version}")
        try:
            kind = FrameType(ftype)
        except ValueError as exc:
            raise FrameError(f"unknown frame type {ftype}") from exc
        if epoch != seq >> EPOCH_BITS:
            raise FrameError("epoch does not match seq")
        if epoch > self._newest + MAX_EPOCH_AHEAD:
            raise FrameError("epoch too far ahead of the last authenticated frame")
        header = blob[:HEADER_LEN]
        payload = aead_open(self._key(epoch), self._nonce(ftype, epoch, seq), header, blob[HEADER_LEN:])
        if payload is None:
            raise FrameError("frame failed authentication")
        self._newest = max(self._newest, epoch)
        return Frame(kind, flags, seq, ack, payload)
