"""tether.recevents against docs/protocol.md §12 (event layout, kinds, chain, checkpoint
message) and at its exact bounds: written out here, not imported, so that a changed number
fails a test (found by mutation testing, tools/mutation/run.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest

from tether.recevents import (
    Event,
    EventError,
    EventKind,
    StoredEvent,
    TruncatedRecord,
    chain_next,
    checkpoint_message,
    decode_events,
    genesis,
    iter_log,
    log_record,
    resize_of,
)

SID = bytes(range(16))
MIB = 1 << 20


def raw(index: int, kind: int, data: bytes, t_us: int = 0, length: int | None = None) -> bytes:
    """One event as §12.1 lays it out: index u64 | t_us u64 | kind u8 | length u32 | data."""
    return struct.pack(">QQBI", index, t_us, kind, len(data) if length is None else length) + data


def test_kinds_are_the_protocols() -> None:
    assert {k.name: int(k) for k in EventKind} == {
        "OUTPUT": 1, "STDERR": 2, "INPUT": 3, "RESIZE": 4, "REDACTION": 5, "GAP": 6, "EXIT": 7,
        "CHECKPOINT": 8, "END": 9, "NOTICE": 10}
    for k in EventKind:
        assert Event(3, 7, k, b"d").encode() == raw(3, int(k), b"d", t_us=7)
        assert decode_events(raw(3, int(k), b"d", t_us=7)) == [Event(3, 7, k, b"d")]


def test_chain_and_checkpoint_message_are_the_protocols() -> None:
    gen = hashlib.blake2b(SID, digest_size=32, person=b"tether-rec-gen").digest()
    assert genesis(SID) == gen
    enc = raw(0, 1, b"hi")
    assert chain_next(gen, enc) == hashlib.blake2b(enc, key=gen, digest_size=32).digest()
    c = bytes(range(32))
    assert checkpoint_message(SID, 5, c, False) == (b"tether-rec-checkpoint\x00" + SID
                                                    + (5).to_bytes(8, "big") + c)
    assert checkpoint_message(SID, 5, c, True) == b"tether-rec-end\x00" + SID + (5).to_bytes(8, "big") + c


def test_event_time_is_microseconds() -> None:
    assert Event(0, 1_500_000, EventKind.OUTPUT, b"").t == 1.5


def test_events_and_stored_records_are_immutable() -> None:
    ev = Event(0, 0, EventKind.OUTPUT, b"ls\r\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.data = b"rm -rf /\r\n"  # type: ignore[misc]
    rec = next(iter_log(log_record(ev, bytes(32))))
    assert isinstance(rec, StoredEvent)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.chain = bytes(32)  # type: ignore[misc]


def test_one_mib_of_data_is_an_event_and_one_byte_more_is_not() -> None:
    assert decode_events(raw(0, 1, bytes(MIB)))[0].data == bytes(MIB)
    with pytest.raises(EventError):
        decode_events(raw(0, 1, bytes(MIB + 1)))  # all of it present: refused for its size
    log = log_record(Event(0, 0, EventKind.OUTPUT, bytes(MIB)), bytes(32))
    assert next(iter_log(log)).event.data == bytes(MIB)
    with pytest.raises(EventError, match="claims"):
        next(iter_log(raw(0, 1, bytes(MIB + 1)) + bytes(32)))


def test_decoding_stops_at_truncated_headers_and_data() -> None:
    one = raw(0, 1, b"abc")
    assert decode_events(raw(0, 1, b"")) == [Event(0, 0, EventKind.OUTPUT, b"")]  # 21 bytes
    with pytest.raises(EventError, match="header truncated"):
        decode_events(one + raw(1, 1, b"")[:20])
    with pytest.raises(EventError, match="data truncated"):
        decode_events(one + raw(1, 1, b"xyz", length=4))


def test_an_unknown_kind_is_an_event_error() -> None:
    with pytest.raises(EventError, match="unknown kind 11"):
        decode_events(raw(0, 11, b""))
    with pytest.raises(EventError, match="unknown kind 0"):
        next(iter_log(raw(0, 0, b"") + bytes(32)))


def test_a_log_cut_after_a_whole_header_names_the_event() -> None:
    with pytest.raises(TruncatedRecord) as exc:
        next(iter_log(raw(7, 1, b"")))  # the header, without its chain value
    assert (exc.value.offset, exc.value.index) == (0, 7)
    with pytest.raises(TruncatedRecord) as exc:
        next(iter_log(raw(7, 1, b"")[:20]))
    assert (exc.value.offset, exc.value.index) == (0, None)


def test_resize_events() -> None:
    assert resize_of(struct.pack(">HH", 80, 24)) == (80, 24)
    assert resize_of(struct.pack(">HH", 0, 24)) is None  # not a geometry any role accepts
    assert resize_of(struct.pack(">HHB", 80, 24, 0)) is None
    assert resize_of(b"\x00\x50") is None
