"""Session frames (tether/frames.py) and the reliable channel on top of them (tether/channel.py)."""

from __future__ import annotations

import struct

from tether.channel import Channel
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
from tools.fuzz.base import Harness, seed

_FRAME_KEY = bytes(range(32))


def _frames_raw(data: bytes) -> None:
    FrameCipher(_FRAME_KEY, Direction.C2A).open(data)


def _frames_sealed(data: bytes) -> None:
    """type u8 | flags u8 | seq u32 | ack u64 | payload, sealed, opened, then forged."""
    if len(data) < 14:
        return
    ftype, flags = data[0], data[1]
    seq = int.from_bytes(data[2:6], "big") % ((MAX_EPOCH_AHEAD + 2) << EPOCH_BITS)
    ack = int.from_bytes(data[6:14], "big")
    payload = data[14:14 + MAX_PAYLOAD]
    blob = FrameCipher(_FRAME_KEY, Direction.C2A).seal(ftype, seq, ack, payload, flags)  # type: ignore[arg-type]
    valid = ftype in FrameType._value2member_map_ and seq >> EPOCH_BITS <= MAX_EPOCH_AHEAD
    try:
        frame = FrameCipher(_FRAME_KEY, Direction.C2A).open(blob)
    except FrameError:
        assert not valid, "a frame sealed with the right key did not open"
        return
    assert valid and frame == Frame(FrameType(ftype), flags, seq, ack, payload), "frame changed in transit"
    at = payload[-1] % len(blob) if payload else 0
    forged = blob[:at] + bytes([blob[at] ^ 0x80]) + blob[at + 1:]
    try:
        FrameCipher(_FRAME_KEY, Direction.C2A).open(forged)
    except FrameError:
        return
    raise AssertionError(f"a frame with byte {at} flipped was accepted")


def _frame_seeds() -> list[bytes]:
    cipher = FrameCipher(_FRAME_KEY, Direction.C2A)
    raw = [cipher.seal(FrameType.DATA, 1, 0, b"ls -l\r"), cipher.seal(FrameType.RESIZE, 2, 1, b"\x00\x50\x00\x18"),
           cipher.seal(FrameType.ACK, 1, 2, struct.pack(">QQQ", 1, 3, 4)), cipher.seal(FrameType.CLOSE, 3, 2, b"")]
    sealed = [bytes([FrameType.DATA, 0]) + struct.pack(">IQ", 1, 0) + b"hello",
              bytes([FrameType.ACK, 0]) + struct.pack(">IQ", 1 << EPOCH_BITS, 7) + bytes(8)]
    return [seed(0, b) for b in raw] + [seed(1, b) for b in sealed]


FRAMES = Harness("frames", "tether/frames.py FrameCipher.open", (FrameError,),
                 (_frames_raw, _frames_sealed), _frame_seeds)



_A2C_KEY = bytes(range(1, 33))


def _channel(data: bytes) -> None:
    """A stream of steps against one channel: raw datagrams, authentic frames, ticks."""
    chan = Channel(FrameCipher(_FRAME_KEY, Direction.C2A), FrameCipher(_A2C_KEY, Direction.A2C))
    peer = FrameCipher(_A2C_KEY, Direction.A2C)
    now = 0.0
    for n in range(3):
        chan.send(FrameType.DATA, b"x" * n, now)
    pos = 0
    while pos < len(data):
        op = data[pos]
        length = data[pos + 1] if pos + 1 < len(data) else 0
        body = data[pos + 2:pos + 2 + length]
        pos += 2 + length
        now += (op >> 2) / 100
        if op & 3 == 0:
            chan.receive(body, now)
        elif op & 3 == 1 and len(body) >= 5:
            seq, ack = struct.unpack_from(">HH", body, 1)
            chan.receive(peer.seal(body[0], seq, ack, body[5:]), now)  # type: ignore[arg-type]
        else:
            chan.tick(now)
        chan.take_outgoing()
    chan.tick(now + 10)
    chan.take_outgoing()


def _channel_seeds() -> list[bytes]:
    def frame(ftype: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
        body = bytes([ftype]) + struct.pack(">HH", seq, ack) + payload
        return bytes([1, len(body)]) + body
    nack = struct.pack(">QQQ", 0, 2, 3)
    return [seed(0, frame(FrameType.DATA, 1, 1, b"hi") + frame(FrameType.DATA, 3, 2) + bytes([2, 0])
                  + frame(FrameType.ACK, 1, 1, nack) + bytes([0x42, 0]) + frame(FrameType.CLOSE, 2, 3))]


CHANNEL = Harness("channel", "tether/channel.py Channel.receive (frames, then ACK payloads)", (),
                  (_channel,), _channel_seeds)


HARNESSES = {h.name: h for h in (FRAMES, CHANNEL)}
