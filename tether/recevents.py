"""Recording events, their hash chain, and the append-only log record (sans-IO).

An event is what the agent recorded at one moment of a session: output, input, a resize,
the exit status, a signed checkpoint. Events are numbered from 0 without gaps. The agent
chains them with keyed BLAKE2b, and every chain value is stored beside its event, so a
verifier can say exactly which event changed, which is missing, and where the tail was cut.

Wire and log encoding of one event (big-endian):

    index u64 | t_us u64 | kind u8 | length u32 | data[length]

The log stores each event followed by its 32-byte chain value:

    chain[i] = BLAKE2b-256(key=chain[i-1], data=encoded event i), chain[-1] = genesis(sid)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from tether.crypto import kdf, personal_hash
from tether.errors import TetherError
from tether.limits import valid_geometry

EVENT_HEADER = struct.Struct(">QQBI")
RESIZE = struct.Struct(">HH")
CHAIN_LEN = 32
MAX_EVENT_DATA = 1 << 20


class EventKind(IntEnum):
    OUTPUT = 1  # PTY output, or stdout of an exec session
    STDERR = 2  # stderr of an exec session
    INPUT = 3  # input as delivered to the program (never while the PTY has echo off)
    RESIZE = 4  # >HH columns, rows
    REDACTION = 5  # JSON {"hidden": bool}: input recording paused (echo off) or resumed
    GAP = 6  # JSON {"lost_bytes": n, "lost_events": n}: optional recording dropped data
    EXIT = 7  # JSON {"code": int | null, "signal": int | null}
    CHECKPOINT = 8  # 64-byte Ed25519 signature by the agent over the chain so far
    END = 9  # 64-byte signature: the end manifest; nothing may follow it
    NOTICE = 10  # UTF-8 text the agent showed the user (freeze, limits)


class EventError(TetherError):
    """Bytes that are not a well-formed event."""


@dataclass(frozen=True)
class Event:
    index: int
    t_us: int  # microseconds since the session started, monotonic
    kind: EventKind
    data: bytes

    @property
    def t(self) -> float:
        return self.t_us / 1e6

    def encode(self) -> bytes:
        return EVENT_HEADER.pack(self.index, self.t_us, self.kind, len(self.data)) + self.data


def decode_events(blob: bytes) -> list[Event]:
    """Events concatenated back to back, as in a recording data message."""
    out: list[Event] = []
    pos = 0
    while pos < len(blob):
        event, pos = _decode_one(blob, pos)
        out.append(event)
    return out


def _decode_one(blob: bytes, pos: int) -> tuple[Event, int]:
    if len(blob) - pos < EVENT_HEADER.size:
        raise EventError("event header truncated")
    index, t_us, kind, length = EVENT_HEADER.unpack_from(blob, pos)
    start = pos + EVENT_HEADER.size
    if length > MAX_EVENT_DATA or start + length > len(blob):
        raise EventError(f"event {index} data truncated")
    try:
        k = EventKind(kind)
    except ValueError as exc:
        raise EventError(f"event {index} has unknown kind {kind}") from exc
    return Event(index, t_us, k, blob[start:start + length]), start + length


def resize_of(data: bytes) -> tuple[int, int] | None:
    """(columns, rows) of a RESIZE event; None if malformed or outside the sizes every role
    accepts (an honest agent never records one: readers ignore it rather than allocate)."""
    if len(data) != RESIZE.size:
        return None
    cols, rows = RESIZE.unpack(data)
    return (cols, rows) if valid_geometry(cols, rows) else None


def genesis(sid: bytes) -> bytes:
    """The chain value before event 0, bound to the session id."""
    return personal_hash(b"tether-rec-gen", sid)


def chain_next(previous: bytes, encoded_event: bytes) -> bytes:
    return kdf(previous, b"", encoded_event)


def checkpoint_message(sid: bytes, index: int, chain: bytes, final: bool) -> bytes:
    """What a CHECKPOINT or END event at `index` signs: the chain through event index-1."""
    label = b"tether-rec-end\x00" if final else b"tether-rec-checkpoint\x00"
    return label + sid + struct.pack(">Q", index) + chain


# ----- the log: each event, then its chain value -----


def log_record(event: Event, chain: bytes) -> bytes:
    return event.encode() + chain


@dataclass(frozen=True)
class StoredEvent:
    event: Event
    chain: bytes  # as stored; a verifier recomputes it
    offset: int  # byte offset of the record in the log


class TruncatedRecord(TetherError):
    def __init__(self, offset: int, index: int | None) -> None:
        super().__init__(f"log ends inside a record at byte {offset}")
        self.offset = offset
        self.index = index


def iter_log(data: bytes | memoryview, start: int = 0) -> Iterator[StoredEvent]:
    """Records of a log image; raises TruncatedRecord on a partial record at the end."""
    view = memoryview(data)
    pos = start
    end = len(view)
    while pos < end:
        if end - pos < EVENT_HEADER.size:
            raise TruncatedRecord(pos, None)
        index, t_us, kind, length = EVENT_HEADER.unpack_from(view, pos)
        stop = pos + EVENT_HEADER.size + length
        if length > MAX_EVENT_DATA:
            raise EventError(f"record at byte {pos} claims {length} bytes of data")
        if stop + CHAIN_LEN > end:
            raise TruncatedRecord(pos, index)
        try:
            k = EventKind(kind)
        except ValueError as exc:
            raise EventError(f"record at byte {pos} has unknown kind {kind}") from exc
        data_bytes = bytes(view[pos + EVENT_HEADER.size:stop])
        yield StoredEvent(Event(index, t_us, k, data_bytes), bytes(view[stop:stop + CHAIN_LEN]), pos)
        pos = stop + CHAIN_LEN
