"""Tests for tether.channel: the reliable, flow-controlled channel over a lossy datagram path.

Time is always simulated: the channel takes `now` as an argument and nothing here sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.channel import (
    ACK_DELAY,
    MAX_NACK_RANGES,
    NACK_HOLDOFF,
    Channel,
    ChannelClosed,
)
from tether.frames import HEADER, Direction, Frame, FrameCipher, FrameType
from tether.retransmit import RTO_MAX, RTO_MIN

Blob = tuple[bytes, int]


def make_pair(
    a_kw: dict[str, object] | None = None, b_kw: dict[str, object] | None = None
) -> tuple[Channel, Channel, bytes, bytes]:
    """(client side, agent side, c2a key, a2c key)."""
    kc, ka = os.urandom(32), os.urandom(32)
    a = Channel(FrameCipher(kc, Direction.C2A), FrameCipher(ka, Direction.A2C), **(a_kw or {}))  # type: ignore[arg-type]
    b = Channel(FrameCipher(ka, Direction.A2C), FrameCipher(kc, Direction.C2A), **(b_kw or {}))  # type: ignore[arg-type]
    return a, b, kc, ka


def header(blob: bytes) -> tuple[FrameType, int, int]:
    """(type, seq, ack) from the clear header."""
    _, ftype, _, _, seq, ack = HEADER.unpack_from(blob)
    return FrameType(ftype), seq, ack


def reliable(out: list[Blob]) -> list[bytes]:
    return [b for b, _ in out if header(b)[0] != FrameType.ACK]


def acks(out: list[Blob]) -> list[bytes]:
    return [b for b, _ in out if header(b)[0] == FrameType.ACK]


def feed(dst: Channel, blobs: list[bytes], now: float) -> list[Frame]:
    frames: list[Frame] = []
    for blob in blobs:
        frames += dst.receive(blob, now)
    return frames


def exchange(src: Channel, dst: Channel, now: float) -> list[Frame]:
    """Deliver everything src has queued to dst, losslessly and in order."""
    return feed(dst, [b for b, _ in src.take_outgoing()], now)


def parse_ack(key: bytes, direction: Direction, blob: bytes) -> tuple[int, list[tuple[int, int]]]:
    payload = FrameCipher(key, direction).open(blob).payload
    (received,) = struct.unpack_from(">Q", payload)
    ranges = [struct.unpack_from(">QQ", payload, off) for off in range(8, len(payload), 16)]
    return received, [(int(x), int(y)) for x, y in ranges]


# ----- basic delivery -----


def test_in_order_delivery() -> None:
    a, b, _, _ = make_pair()
    sent = [
        (FrameType.DATA, b"ls -l\n"),
        (FrameType.RESIZE, struct.pack(">HH", 120, 40)),
        (FrameType.SIGNAL, b"\x02"),
        (FrameType.DATA, b""),
        (FrameType.EOF, b""),
    ]
    seqs = [a.send(t, p, 0.0) for t, p in sent]
    assert seqs == [1, 2, 3, 4, 5]
    frames = exchange(a, b, 0.0)
    assert [(f.type, f.payload) for f in frames] == sent
    assert [f.seq for f in frames] == seqs
    assert b.delivered_seq == 5
    assert b.stats.frames_received == 5
    assert b.stats.bytes_received == sum(len(p) for _, p in sent)
    assert a.stats.frames_sent == 5
    assert a.stats.bytes_sent == b.stats.bytes_received
    assert (b.stats.duplicates, b.stats.bad_frames, b.stats.dropped) == (0, 0, 0)


def test_qos_per_frame_type() -> None:
    a, _, _, _ = make_pair()
    for t in (FrameType.DATA, FrameType.STDERR, FrameType.RESIZE, FrameType.EXIT, FrameType.NOTICE):
        a.send(t, b"x", 0.0)
    a.close(0.0)
    qos = [q for _, q in a.take_outgoing()]
    assert qos == [0, 0, 1, 1, 1, 1]
    assert a.take_outgoing() == []


def test_reordered_frames_are_delivered_in_order() -> None:
    a, b, _, _ = make_pair()
    payloads = [f"frame {i}".encode() for i in range(1, 11)]
    for p in payloads:
        a.send(FrameType.DATA, p, 0.0)
    blobs = reliable(a.take_outgoing())
    out: list[Frame] = []
    for blob in reversed(blobs):
        got = b.receive(blob, 0.0)
        out += got
        if blob is not blobs[0]:
            assert got == []  # nothing deliverable until the gap at seq 1 closes
    assert [f.payload for f in out] == payloads


def test_duplicates_are_dropped() -> None:
    a, b, _, _ = make_pair()
    for i in range(6):
        a.send(FrameType.DATA, bytes([i]) * 3, 0.0)
    blobs = reliable(a.take_outgoing())
    out = feed(b, blobs + blobs[::-1] + blobs[2:4], 0.0)
    assert [f.payload for f in out] == [bytes([i]) * 3 for i in range(6)]
    assert b.stats.duplicates == 8
    assert b.stats.frames_received == 14


def test_ack_frames_cannot_be_sent_by_the_application() -> None:
    a, _, _, _ = make_pair()
    with pytest.raises(ValueError):
        a.send(FrameType.ACK, b"", 0.0)


# ----- acks and retransmission -----


def test_nack_triggers_resend_of_exactly_the_missing_frames() -> None:
    a, b, _, ka = make_pair()
    for i in range(1, 11):
        a.send(FrameType.DATA, f"{i}".encode() * 10, 0.0)
    originals = reliable(a.take_outgoing())
    lost = {3, 7}
    feed(b, [blob for blob in originals if header(blob)[1] not in lost], 0.0)
    assert b.delivered_seq == 2
    assert b.next_deadline() == 0.0  # a gap is reported at once
    b.tick(0.0)
    out = b.take_outgoing()
    assert len(out) == 1 and out[0][1] == 0
    received, ranges = parse_ack(ka, Direction.A2C, out[0][0])
    assert (received, ranges) == (2, [(3, 3), (7, 7)])
    # Too soon after sending: the sender waits, the frames may still be in flight.
    a.receive(out[0][0], NACK_HOLDOFF / 2)
    assert a.take_outgoing() == []
    # The next NACK (a new ACK frame) after the holdoff gets exactly the gaps resent.
    b.tick(0.04)
    b.receive(originals[4], 0.04)  # a duplicate makes b ack again
    b.tick(0.04)
    nack2 = acks(b.take_outgoing())
    assert nack2
    a.receive(nack2[-1], 0.06)
    resent = a.take_outgoing()
    assert [blob for blob, _ in resent] == [originals[2], originals[6]]  # byte-identical
    assert a.stats.frames_resent == 2
    frames = feed(b, [blob for blob, _ in resent], 0.07)
    assert [f.seq for f in frames] == list(range(3, 11))
    assert b.delivered_seq == 10


def test_nack_ranges_cover_runs_of_missing_frames() -> None:
    a, b, _, ka = make_pair()
    for _ in range(12):
        a.send(FrameType.DATA, b"z", 0.0)
    originals = reliable(a.take_outgoing())
    keep = {1, 2, 6, 7, 12}
    feed(b, [blob for blob in originals if header(blob)[1] in keep], 0.0)
    b.tick(0.0)
    nack = acks(b.take_outgoing())
    assert len(nack) == 1
    received, ranges = parse_ack(ka, Direction.A2C, nack[0])
    assert (received, ranges) == (2, [(3, 5), (8, 11)])
    a.receive(nack[0], NACK_HOLDOFF)
    resent = reliable(a.take_outgoing())
    assert [header(blob)[1] for blob in resent] == [3, 4, 5, 8, 9, 10, 11]
    assert resent == [originals[s - 1] for s in (3, 4, 5, 8, 9, 10, 11)]


def test_rto_resends_with_exponential_backoff() -> None:
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"lost in transit", 0.0)
    original = reliable(a.take_outgoing())
    assert a.next_deadline() == RTO_MIN
    a.tick(RTO_MIN - 0.001)
    assert a.take_outgoing() == []
    resend_times = []
    t = 0.0
    for _ in range(7):
        deadline = a.next_deadline()
        assert deadline is not None
        a.tick(deadline - 0.001)
        assert a.take_outgoing() == []
        t = deadline
        a.tick(t)
        out = a.take_outgoing()
        assert [blob for blob, _ in out] == original  # byte for byte
        resend_times.append(t)
    gaps = [round(y - x, 6) for x, y in zip([0.0, *resend_times], resend_times, strict=False)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert gaps[-1] == RTO_MAX
    assert a.stats.frames_resent == 7
    # Once the frame gets through and is acked, the RTO is back to its minimum.
    assert [f.payload for f in feed(b, original, t)] == [b"lost in transit"]
    b.tick(t + ACK_DELAY)
    exchange(b, a, t + ACK_DELAY)
    assert a.all_acked
    assert a.next_deadline() is None
    a.send(FrameType.DATA, b"next", t + 1)
    assert a.next_deadline() == t + 1 + RTO_MIN


@pytest.mark.parametrize("sent_at", [0.08, 0.18, 0.41, 0.7, 1.3])
def test_tick_at_next_deadline_always_acts(sent_at: float) -> None:
    """At these times `(t + 0.5) - t < 0.5` in floating point; an event loop that sleeps
    until next_deadline() and calls tick() must not find the deadline still pending."""
    a, _, _, _ = make_pair()
    a.send(FrameType.DATA, b"x", sent_at)
    original = reliable(a.take_outgoing())
    deadline = a.next_deadline()
    assert deadline == sent_at + RTO_MIN
    a.tick(deadline)
    assert reliable(a.take_outgoing()) == original
    later = a.next_deadline()
    assert later is not None and later > deadline


def test_unconsumed_frames_are_probed_with_backoff() -> None:
    """A receiver that does not consume: the sender probes with its oldest frame, once per
    RTO with backoff, so a lost credit ack is repaired but the path is not flooded."""
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    for i in range(3):
        a.send(FrameType.DATA, bytes([i]) * 10, 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals, 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    probes = []
    t = ACK_DELAY
    while t < 30:
        deadline = a.next_deadline()
        assert deadline is not None
        t = deadline
        a.tick(t)
        out = reliable(a.take_outgoing())
        assert out == [originals[0]]
        probes.append(t)
        assert b.receive(out[0], t) == []  # a duplicate, never delivered twice
        b.tick(t)
        exchange(b, a, t)
    gaps = [round(y - x, 6) for x, y in itertools.pairwise(probes)]
    assert gaps[:3] == [1.0, 2.0, 4.0]
    assert set(gaps[3:]) == {RTO_MAX}
    assert b.delivered_seq == 3


def test_rto_resends_only_frames_not_known_received() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    for i in range(4):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals[:2], 0.0)  # 1 and 2 arrive, 3 and 4 are lost
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)  # a learns 1..2 were received (not consumed)
    a.tick(RTO_MIN)
    assert reliable(a.take_outgoing()) == originals[2:]


def test_resend_all_after_reconnect() -> None:
    a, b, _, _ = make_pair()
    for i in range(5):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals[:3], 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    a.resend_all(0.1)
    assert reliable(a.take_outgoing()) == originals[3:]
    a.tick(0.1)  # resend_all also schedules an ack of our own receive state
    assert len(acks(a.take_outgoing())) == 1


def test_replayed_ack_frames_are_ignored() -> None:
    a, b, _, _ = make_pair()
    for _ in range(4):
        a.send(FrameType.DATA, b"data", 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, [originals[0], originals[1], originals[3]], 0.0)  # seq 3 lost
    b.tick(0.0)
    nack = acks(b.take_outgoing())
    assert len(nack) == 1
    a.receive(nack[0], 0.1)
    assert reliable(a.take_outgoing()) == [originals[2]]
    # A replay of that ACK (by the broker or an attacker) must not trigger another resend.
    for t in (0.2, 0.3, 1.0):
        a.receive(nack[0], t)
        assert a.take_outgoing() == []
    assert a.stats.duplicates == 3
    assert a.stats.frames_resent == 1


def test_stale_ack_cannot_roll_back_state() -> None:
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"one", 0.0)
    feed(b, reliable(a.take_outgoing()), 0.0)
    b.tick(ACK_DELAY)
    first = acks(b.take_outgoing())
    a.send(FrameType.DATA, b"two", 0.1)
    feed(b, reliable(a.take_outgoing()), 0.1)
    b.tick(0.1 + ACK_DELAY)
    second = acks(b.take_outgoing())
    a.receive(second[0], 0.2)
    assert a.all_acked
    a.receive(first[0], 0.3)  # delivered late
    assert a.all_acked
    assert a.send_capacity() == a.window_bytes


def test_malformed_ack_payload_counts_as_bad_frame() -> None:
    _, b, kc, _ = make_pair()
    forged = FrameCipher(kc, Direction.C2A)  # a party holding the key, but a broken ACK
    b.receive(forged.seal(FrameType.ACK, 1, 0, b"\x00" * 5), 0.0)
    b.receive(forged.seal(FrameType.ACK, 2, 0, b"\x00" * 8 + b"\x01" * 3), 0.0)
    assert b.stats.bad_frames == 2


def test_ack_for_frames_never_sent_is_ignored() -> None:
    a, _, _, ka = make_pair()
    a.send(FrameType.DATA, b"x" * 100, 0.0)
    a.take_outgoing()
    forged = FrameCipher(ka, Direction.A2C)
    a.receive(forged.seal(FrameType.ACK, 1, 5, struct.pack(">Q", 5)), 0.0)
    assert not a.all_acked
    assert a.send_capacity() == a.window_bytes - 100


# ----- hostile and foreign input -----


def test_foreign_session_frames_are_counted_and_ignored() -> None:
    a, b, _, _ = make_pair()
    x, _, _, _ = make_pair()  # another session, other keys
    for i in range(1, 6):
        a.send(FrameType.DATA, f"ours {i}".encode(), 0.0)
        x.send(FrameType.DATA, f"theirs {i}".encode(), 0.0)
    ours = reliable(a.take_outgoing())
    theirs = reliable(x.take_outgoing())
    mixed = [blob for pair in zip(theirs, ours, strict=True) for blob in pair]
    garbage = [b"", b"\x01", os.urandom(60), ours[0][:-1], ours[1] + b"\x00"]
    out = feed(b, mixed + garbage, 0.0)
    assert [f.payload for f in out] == [f"ours {i}".encode() for i in range(1, 6)]
    assert b.stats.bad_frames == len(theirs) + len(garbage)
    assert b.stats.frames_received == 5
    # Our own frames reflected back at us are foreign too (other direction key).
    assert a.receive(ours[0], 0.0) == []
    assert a.stats.bad_frames == 1
    # ... and nothing the foreign frames said (acks) changed the sender's state.
    assert a.send_capacity() == a.window_bytes - sum(len(f.payload) for f in out)


def test_frames_far_beyond_the_window_are_dropped_then_recovered() -> None:
    a, b, _, _ = make_pair(a_kw={"window_frames": 4}, b_kw={"window_frames": 4})
    for i in range(12):
        a.send(FrameType.DATA, bytes([i]), 0.0)  # ignoring credit, on purpose
    originals = reliable(a.take_outgoing())
    assert b.receive(originals[9], 0.0) == []  # seq 10 > 0 + 2 * 4
    assert b.stats.dropped == 1
    feed(b, originals[:9], 0.0)
    assert b.delivered_seq == 9
    assert [f.seq for f in b.receive(originals[9], 0.0)] == [10]


def test_an_ack_with_more_gap_ranges_than_a_peer_sends_is_refused_unread() -> None:
    # Fuzzing found one ACK carrying 4,095 ranges, each walked seq by seq: about half a
    # second of the agent's CPU per frame. A peer never sends more than MAX_NACK_RANGES.
    a, _, _, ka = make_pair()
    for _ in range(20):
        a.send(FrameType.DATA, b"z", 0.0)
    a.take_outgoing()
    forged = FrameCipher(ka, Direction.A2C)
    at_limit = struct.pack(">Q", 0) + struct.pack(">QQ", 1, 1) * MAX_NACK_RANGES
    a.receive(forged.seal(FrameType.ACK, 1, 0, at_limit), 1.0)
    assert a.stats.bad_frames == 0
    assert [header(blob)[1] for blob in reliable(a.take_outgoing())] == [1]  # read: seq 1 resent
    one_past = struct.pack(">Q", 0) + struct.pack(">QQ", 2, 2) * (MAX_NACK_RANGES + 1)
    a.receive(forged.seal(FrameType.ACK, 2, 0, one_past), 2.0)
    assert a.stats.bad_frames == 1
    assert a.take_outgoing() == []  # nothing resent for it


def test_out_of_order_frames_are_buffered_up_to_twice_the_window_in_bytes() -> None:
    window = 1 << 20
    a, b, _, _ = make_pair()
    big = 60_000
    for i in range(50):
        a.send(FrameType.DATA, bytes([i]) * big, 0.0)  # ignoring credit, on purpose
    originals = reliable(a.take_outgoing())
    fits = 2 * window // big  # frames 2.. that fit the receive buffer while 1 is missing
    for blob in originals[1 : 1 + fits]:
        assert b.receive(blob, 0.0) == []
    assert b.stats.dropped == 0
    assert b.receive(originals[1 + fits], 0.0) == []  # one past: dropped, not buffered
    assert b.stats.dropped == 1
    delivered = b.receive(originals[0], 0.0)
    assert [f.seq for f in delivered] == list(range(1, 2 + fits))
    assert [f.seq for f in b.receive(originals[1 + fits], 0.0)] == [2 + fits]  # resent: taken


# ----- flow control -----


def test_window_bytes_limit_and_manual_consume() -> None:
    a, b, _, _ = make_pair(a_kw={"window_bytes": 1000}, b_kw={"window_bytes": 1000, "auto_consume": False})
    sizes = []
    while (cap := a.send_capacity()) > 0:
        n = min(cap, 300)
        a.send(FrameType.DATA, b"x" * n, 0.0)
        sizes.append(n)
    assert sizes == [300, 300, 300, 100]
    delivered = exchange(a, b, 0.0)
    assert len(delivered) == 4
    # Time passes; acks and retransmission timers run; nobody consumes.
    t = 0.0
    for _ in range(200):
        t += 0.1
        b.tick(t)
        a.tick(t)
        feed(b, reliable(a.take_outgoing()), t)
        feed(a, [blob for blob, _ in b.take_outgoing()], t)
        assert a.send_capacity() == 0
    assert b.delivered_seq == 4
    assert a.stats.frames_sent == 4  # no new frame was ever sent
    # The receiver consumes half: half the credit comes back.
    b.consume(2, t)
    b.tick(t)
    exchange(b, a, t)
    assert a.send_capacity() == 600
    b.consume(99, t)  # clamped to what was delivered
    b.tick(t)
    exchange(b, a, t)
    assert a.send_capacity() == 1000
    assert a.all_acked


def test_window_frames_limit() -> None:
    a, b, _, _ = make_pair(a_kw={"window_frames": 4}, b_kw={"auto_consume": False, "window_frames": 4})
    n = 0
    while a.send_capacity() > 0:
        a.send(FrameType.DATA, b"k", 0.0)
        n += 1
    assert n == 4
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    assert a.send_capacity() == 0
    b.consume(1, 0.1)  # a quarter of the frame window: acked at once
    assert b.next_deadline() == 0.1
    b.tick(0.1)
    exchange(b, a, 0.1)
    assert a.send_capacity() > 0


def test_ack_is_due_only_every_quarter_window_of_consumption() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_bytes": 4000, "window_frames": 100})
    for _ in range(10):
        a.send(FrameType.DATA, b"y" * 100, 0.0)
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)  # the receive ack
    b.take_outgoing()
    b.consume(5, 1.0)  # 500 bytes < 1000 and 5 frames < 25: no ack needed yet
    assert b.next_deadline() is None
    b.consume(10, 1.0)  # 1000 bytes: a quarter window
    assert b.next_deadline() == 1.0


def test_lost_credit_ack_does_not_stall_the_sender() -> None:
    """The ack that returns credit is unreliable; losing it must not stall the sender forever."""
    a, b, _, _ = make_pair(a_kw={"window_bytes": 1000}, b_kw={"window_bytes": 1000, "auto_consume": False})
    while (cap := a.send_capacity()) > 0:
        a.send(FrameType.DATA, b"x" * min(cap, 250), 0.0)
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)  # a now knows everything arrived; nothing is consumed yet
    assert a.send_capacity() == 0
    b.consume(b.delivered_seq, 0.1)
    b.tick(0.1)
    assert len(acks(b.take_outgoing())) == 1  # ... and that ack is lost
    t = 0.1
    while a.send_capacity() == 0 and t < 60:
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        assert deadlines, "both sides idle with the sender out of credit: stalled"
        t = max(t, min(deadlines))
        a.tick(t)
        b.tick(t)
        feed(b, reliable(a.take_outgoing()), t)
        feed(a, [blob for blob, _ in b.take_outgoing()], t)
    assert a.send_capacity() == 1000
    assert t < 10


# ----- close -----


def test_close_is_delivered_last_and_sets_peer_closed() -> None:
    a, b, _, _ = make_pair()
    for i in range(5):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    a.send(FrameType.EXIT, b'{"code": 0, "signal": null}', 0.0)
    a.close(0.0, b"bye")
    a.close(0.0)  # idempotent: no second CLOSE
    assert a.closed
    blobs = reliable(a.take_outgoing())
    assert len(blobs) == 7
    assert header(blobs[-1])[0] == FrameType.CLOSE
    # The CLOSE overtakes everything: it must still be delivered last.
    out = b.receive(blobs[-1], 0.0)
    assert out == [] and not b.peer_closed
    out = feed(b, blobs[:-1][::-1], 0.0)
    assert [f.type for f in out] == [FrameType.DATA] * 5 + [FrameType.EXIT, FrameType.CLOSE]
    assert out[-1].payload == b"bye"
    assert b.peer_closed
    # Closing makes the receiver ack at once, so the closer can finish promptly.
    assert b.next_deadline() == 0.0


def test_send_after_close_raises() -> None:
    a, _, _, _ = make_pair()
    a.send(FrameType.CLOSE, b"", 0.0)
    assert a.closed
    for t in (FrameType.DATA, FrameType.CLOSE, FrameType.EOF):
        with pytest.raises(ChannelClosed):
            a.send(t, b"late", 0.0)
    assert a.stats.frames_sent == 1


def test_truncation_is_visible() -> None:
    """Without a CLOSE the receiver never believes the stream ended."""
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"partial", 0.0)
    a.close(0.0)
    blobs = reliable(a.take_outgoing())
    feed(b, blobs[:1], 0.0)
    assert not b.peer_closed


# ----- randomized end-to-end simulation -----


@dataclass
class End:
    ch: Channel
    data: bytes
    chunk: int
    consume_delay: float | None  # None: auto_consume
    off: int = 0
    got: bytearray = field(default_factory=bytearray)
    frames: list[Frame] = field(default_factory=list)
    consumes: list[tuple[float, int]] = field(default_factory=list)
    consumed_bytes: int = 0  # of the peer's data, by our application
    consumed_frames: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    originals: dict[int, bytes] = field(default_factory=dict)
    data_frames_sent: int = 0


def simulate(
    rng: random.Random,
    ends: tuple[End, End],
    loss: float,
    dup: float,
    jitter: float,
    latency: float = 0.002,
    limit: float = 600.0,
    drop: Callable[[int, bytes], bool] | None = None,
) -> float:
    """Run both ends until every byte is delivered, both sides closed and all is acked."""
    net: list[tuple[float, int, int, bytes]] = []
    counter = 0
    t = 0.0
    for _ in range(2_000_000):
        # Applications write while the window allows.
        for i, x in enumerate(ends):
            y = ends[1 - i]
            while x.off < len(x.data) and (cap := x.ch.send_capacity()) > 0:
                n = min(cap, x.chunk, len(x.data) - x.off)
                x.ch.send(FrameType.DATA, x.data[x.off : x.off + n], t)
                x.off += n
                x.data_frames_sent += 1
                # Flow control: never more than a window unconsumed by the peer's application.
                assert x.off - y.consumed_bytes <= x.ch.window_bytes
                assert x.data_frames_sent - y.consumed_frames <= x.ch.window_frames
            if x.off == len(x.data) and not x.ch.closed:
                x.ch.close(t)
        # Everything queued goes on the (lossy, duplicating, reordering) wire.
        for i, x in enumerate(ends):
            for blob, _qos in x.ch.take_outgoing():
                ftype, seq, _ = header(blob)
                if ftype != FrameType.ACK:
                    # Retransmissions are byte for byte.
                    assert x.originals.setdefault(seq, blob) == blob
                counter += 1
                if (drop is not None and drop(i, blob)) or rng.random() < loss:
                    continue
                for _ in range(2 if rng.random() < dup else 1):
                    heapq.heappush(net, (t + latency + rng.random() * jitter, counter, 1 - i, blob))
        if all(
            x.off == len(x.data) and x.ch.closed and x.ch.peer_closed and x.ch.all_acked for x in ends
        ) and all(bytes(ends[i].got) == ends[1 - i].data for i in range(2)):
            return t
        # Jump to the next event.
        times = [d for x in ends if (d := x.ch.next_deadline()) is not None]
        times += [x.consumes[0][0] for x in ends if x.consumes]
        if net:
            times.append(net[0][0])
        assert times, "deadlock: nothing pending on either side"
        t = max(t, min(times))
        assert t < limit, "no progress within the simulated time limit"
        while net and net[0][0] <= t:
            _, _, dst, blob = heapq.heappop(net)
            x = ends[dst]
            frames = x.ch.receive(blob, t)
            for f in frames:
                assert not x.frames or x.frames[-1].type != FrameType.CLOSE, "frame after CLOSE"
                assert f.seq == (x.frames[-1].seq + 1 if x.frames else 1)
                x.frames.append(f)
                x.sizes[f.seq] = len(f.payload)
                if f.type == FrameType.DATA:
                    x.got += f.payload
            assert x.ch.peer_closed == (bool(x.frames) and x.frames[-1].type == FrameType.CLOSE)
            if frames:
                if x.consume_delay is None:
                    x.consumed_bytes += sum(len(f.payload) for f in frames if f.type == FrameType.DATA)
                    x.consumed_frames += sum(1 for f in frames if f.type == FrameType.DATA)
                else:
                    x.consumes.append((t + rng.random() * x.consume_delay, frames[-1].seq))
        for x in ends:
            while x.consumes and x.consumes[0][0] <= t:
                _, upto = x.consumes.pop(0)
                for seq in range(x.consumed_frames + 1, upto + 1):
                    if x.frames[seq - 1].type == FrameType.DATA:
                        x.consumed_bytes += x.sizes[seq]
                x.consumed_frames = max(x.consumed_frames, upto)
                x.ch.consume(upto, t)
        for x in ends:
            x.ch.tick(t)
    raise AssertionError("simulation did not finish")


def build(
    rng: random.Random,
    size_ab: int,
    size_ba: int,
    window_bytes: int,
    window_frames: int,
    consume_delay: float | None,
) -> tuple[End, End]:
    kw: dict[str, object] = {"window_bytes": window_bytes, "window_frames": window_frames}
    a, b, _, _ = make_pair(dict(kw), dict(kw, auto_consume=consume_delay is None))
    # consumed_frames counts only DATA frames; the application consumes CLOSE/EXIT too,
    # which is fine: it only makes the flow-control bound looser, never tighter.
    return (
        End(a, rng.randbytes(size_ab), chunk=rng.randint(1, 3000), consume_delay=None),
        End(b, rng.randbytes(size_ba), chunk=rng.randint(1, 3000), consume_delay=consume_delay),
    )


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    loss=st.sampled_from([0.0, 0.05, 0.2, 0.4]),
    dup=st.sampled_from([0.0, 0.1, 0.3]),
    jitter=st.sampled_from([0.0, 0.01, 0.08]),
    window_bytes=st.sampled_from([2048, 8192, 65536]),
    window_frames=st.sampled_from([4, 16, 512]),
    consume_delay=st.sampled_from([None, None, 0.05, 0.3]),
)
@settings(max_examples=150, deadline=None)
def test_byte_exact_transfer_under_loss_duplication_and_reordering(
    seed: int,
    loss: float,
    dup: float,
    jitter: float,
    window_bytes: int,
    window_frames: int,
    consume_delay: float | None,
) -> None:
    rng = random.Random(seed)
    ends = build(rng, rng.randint(0, 40_000), rng.randint(0, 5_000), window_bytes, window_frames, consume_delay)
    # Tiny frames (2-byte chunks) with a slow reader or 20% loss need hours of simulated
    # time, which is not a stall: allow up to 2 s of simulated time per frame.
    frames = sum(-(-len(x.data) // x.chunk) for x in ends)
    simulate(rng, ends, loss, dup, jitter, limit=600.0 + 2.0 * frames)
    a, b = ends
    assert bytes(b.got) == a.data
    assert bytes(a.got) == b.data
    for x in ends:
        assert x.frames[-1].type == FrameType.CLOSE
        assert sum(1 for f in x.frames if f.type == FrameType.CLOSE) == 1


def test_lossless_path_needs_no_retransmission() -> None:
    rng = random.Random(7)
    ends = build(rng, 200_000, 20_000, 16384, 64, consume_delay=0.01)
    simulate(rng, ends, loss=0.0, dup=0.0, jitter=0.0)
    for x in ends:
        assert x.ch.stats.frames_resent == 0
        assert x.ch.stats.duplicates == 0
        assert x.ch.stats.bad_frames == 0


def test_heavy_loss_of_acks_only_still_completes() -> None:
    rng = random.Random(11)
    ends = build(rng, 60_000, 0, 4096, 8, consume_delay=0.1)

    def drop_acks(i: int, blob: bytes) -> bool:
        return header(blob)[0] == FrameType.ACK and rng.random() < 0.7

    simulate(rng, ends, loss=0.0, dup=0.0, jitter=0.005, drop=drop_acks)
    assert bytes(ends[1].got) == ends[0].data


def test_tail_loss_recovers_by_rto() -> None:
    rng = random.Random(3)
    ends = build(rng, 10_000, 0, 65536, 512, consume_delay=None)
    dropped: set[int] = set()

    def drop_first_copy_of_last_frames(i: int, blob: bytes) -> bool:
        ftype, seq, _ = header(blob)
        if i == 0 and ftype != FrameType.ACK and seq >= 3 and seq not in dropped:
            dropped.add(seq)
            return True
        return False

    elapsed = simulate(rng, ends, loss=0.0, dup=0.0, jitter=0.0, drop=drop_first_copy_of_last_frames)
    assert bytes(ends[1].got) == ends[0].data
    assert ends[0].ch.stats.frames_resent >= len(dropped)
    assert elapsed >= RTO_MIN
