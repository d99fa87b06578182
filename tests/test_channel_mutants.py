"""tether.channel at its exact edges (found by mutation testing, tools/mutation/run.py):
the receive buffer's byte bound, the number of gap ranges an ACK carries, consumption
counting, what counts as received, and the first ACK number. Simulated time, no sleeps."""

from __future__ import annotations

import struct

import pytest
from test_channel import exchange, feed, header, make_pair, parse_ack, reliable

from tether.channel import (
    ACK_DELAY,
    DEFAULT_WINDOW_BYTES,
    DEFAULT_WINDOW_FRAMES,
    KEEPALIVE,
    MAX_NACK_RANGES,
    NACK_HOLDOFF,
    Channel,
)
from tether.frames import Direction, FrameCipher, FrameType
from tether.retransmit import RTO_MIN


def test_out_of_order_buffer_holds_exactly_twice_the_window_in_bytes() -> None:
    """2 MiB of held frames fit (frame 1 missing); one byte more does not."""
    a, b, _, _ = make_pair()
    full = 65536
    count = 32  # 2 MiB: twice the default window (docs/protocol.md §10: 1 MiB)
    assert DEFAULT_WINDOW_BYTES == 1 << 20
    a.send(FrameType.DATA, b"1", 0.0)  # "lost"
    for i in range(count):
        a.send(FrameType.DATA, bytes([i]) * full, 0.0)
    a.send(FrameType.DATA, b"!", 0.0)
    originals = reliable(a.take_outgoing())
    for blob in originals[1 : count + 1]:  # frames 2..33: exactly 2 MiB held
        assert b.receive(blob, 0.0) == []
    assert b.stats.dropped == 0
    assert b.receive(originals[count + 1], 0.0) == []  # one byte over the bound
    assert b.stats.dropped == 1


def test_an_ack_carries_at_most_32_gap_ranges_and_the_sender_accepts_it() -> None:
    a, b, _, ka = make_pair()
    for i in range(2 * MAX_NACK_RANGES + 10):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals[1::2], 0.0)  # every other frame: a gap before each one
    b.tick(0.0)
    ack = [blob for blob, _ in b.take_outgoing()]
    assert len(ack) == 1
    _, ranges = parse_ack(ka, Direction.A2C, ack[0])
    assert len(ranges) == MAX_NACK_RANGES == 32
    feed(a, ack, 1.0)
    assert a.stats.bad_frames == 0
    assert len(reliable(a.take_outgoing())) == 32  # each gap resent


def test_consuming_one_frame_counts_one_frame() -> None:
    """window_frames 8: consuming frames one by one asks for an ack at the second, not the first."""
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_frames": 8})
    for _ in range(3):
        a.send(FrameType.DATA, b"z", 0.0)
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)
    b.take_outgoing()
    b.consume(1, 1.0)
    assert b.next_deadline() is None
    b.consume(2, 2.0)
    assert b.next_deadline() == 2.0  # 2 frames of 8 is a quarter: due now


def test_resend_all_skips_frames_received_but_not_consumed() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    for i in range(4):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals[:2], 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)  # received = 2, consumed = 0
    a.resend_all(1.0)
    assert reliable(a.take_outgoing()) == originals[2:]


def test_everything_received_is_all_acked_before_it_is_consumed() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    a.send(FrameType.DATA, b"1", 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    exchange(a, b, 0.0)
    assert not a.all_acked
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    assert a.all_acked  # received = 2 although nothing was consumed (credit still out)
    assert a.send_capacity() < a.window_bytes


def test_an_ack_numbered_zero_is_never_taken() -> None:
    """ACK numbers start at 1; an authentic ACK numbered 0 (not one a peer sends) is a duplicate."""
    a, _, _, ka = make_pair()
    zero = FrameCipher(ka, Direction.A2C).seal(FrameType.ACK, 0, 0, bytes(8))
    assert a.receive(zero, 5.0) == []
    assert a.stats.duplicates == 1 and a.last_heard is None


def test_rto_resend_skips_frames_received_but_not_consumed() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    for i in range(3):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    feed(b, originals[:2], 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    a.tick(RTO_MIN)
    assert reliable(a.take_outgoing()) == originals[2:]


def test_the_timers_are_the_protocols() -> None:
    """docs/protocol.md §10: an ACK no later than 20 ms after a frame; an idle client acks
    at least every 30 s."""
    assert (ACK_DELAY, KEEPALIVE) == (0.02, 30.0)
    assert (DEFAULT_WINDOW_BYTES, DEFAULT_WINDOW_FRAMES) == (1 << 20, 512)
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"x", 1.0)
    exchange(a, b, 1.0)
    assert b.next_deadline() == pytest.approx(1.02)
    b.tick(1.01)
    assert b.take_outgoing() == []  # not yet: acks are batched for 20 ms
    b.tick(1.02)
    assert len(b.take_outgoing()) == 1


def test_consumption_acks_at_exactly_a_quarter_of_the_byte_window() -> None:
    """window_bytes 4000: 999 consumed bytes do not ask for an ack, 1000 do, counting from
    zero before any ack was sent."""
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_bytes": 4000})
    a.send(FrameType.DATA, b"a" * 999, 0.0)
    a.send(FrameType.DATA, b"b", 0.0)
    exchange(a, b, 0.0)
    b.consume(1, 0.0)
    assert b.next_deadline() == ACK_DELAY  # only the receive ack, not yet due
    b.consume(2, 0.0)
    assert b.next_deadline() == 0.0


def test_a_gap_range_reaching_below_what_was_received_resends_only_the_gap() -> None:
    """A range is clipped to above the ACK's `received`: frames the peer has are not resent
    even if a (buggy or hostile) range names them."""
    a, _, _, ka = make_pair()
    for i in range(4):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    payload = struct.pack(">Q", 2) + struct.pack(">QQ", 1, 3)
    ack = FrameCipher(ka, Direction.A2C).seal(FrameType.ACK, 1, 0, payload)
    a.receive(ack, NACK_HOLDOFF)
    assert reliable(a.take_outgoing()) == [originals[2]]


def test_consumption_acks_at_exactly_a_quarter_of_the_frame_window() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_frames": 8})
    a.send(FrameType.DATA, b"a", 0.0)
    a.send(FrameType.DATA, b"b", 0.0)
    exchange(a, b, 0.0)
    b.consume(1, 0.0)
    assert b.next_deadline() == ACK_DELAY
    b.consume(2, 0.0)
    assert b.next_deadline() == 0.0


def test_a_reply_frame_carries_the_ack_so_no_ack_frame_follows() -> None:
    """Everything delivered is consumed and acked in the header of b's own frame."""
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"ping", 0.0)
    exchange(a, b, 0.0)
    b.send(FrameType.DATA, b"pong", 0.001)
    b.tick(ACK_DELAY)
    out = b.take_outgoing()
    assert [header(blob)[0] for blob, _ in out] == [FrameType.DATA]
    assert header(out[0][0])[2] == 1  # the piggybacked ack: frame 1 consumed


def test_the_first_ack_frame_is_taken() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False})
    a.send(FrameType.DATA, b"1", 0.0)
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    assert a.stats.duplicates == 0 and a.all_acked


def _backed_off() -> tuple[Channel, Channel]:
    """a sent one frame that was lost and has resent it twice: its RTO is 2 s."""
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"lost", 0.0)
    a.take_outgoing()
    a.tick(RTO_MIN)
    a.tick(RTO_MIN + 2 * RTO_MIN)
    a.take_outgoing()
    assert a.next_deadline() == 1.5 + 2.0
    return a, b


def test_an_ack_of_nothing_does_not_reset_the_backoff() -> None:
    """An ACK saying 'received 0' (a keepalive) and a frame whose header acks 0 are no
    progress: the RTO stays where the backoff took it."""
    a, b = _backed_off()
    b.keepalive(2.0)
    b.tick(2.0)
    b.send(FrameType.DATA, b"hello", 2.0)  # its header acks 0
    exchange(b, a, 2.0)
    a.tick(2.0 + ACK_DELAY)  # a acks b's frame
    a.take_outgoing()
    assert a.next_deadline() == 1.5 + 2.0


def test_a_first_gap_at_time_zero_is_nacked_at_once() -> None:
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"1", 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    feed(b, reliable(a.take_outgoing())[1:], 0.0)
    assert b.next_deadline() == 0.0


def test_nack_holdoff_is_50_ms_from_the_last_nack() -> None:
    a, b, _, _ = make_pair()
    for i in range(6):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    frames = reliable(a.take_outgoing())
    feed(b, [frames[1]], 0.0)  # gap at 1
    b.tick(0.0)  # NACK sent at 0.0
    assert len(b.take_outgoing()) == 1
    feed(b, [frames[3]], 0.01)  # another gap within the holdoff: the normal ack delay
    assert b.next_deadline() == pytest.approx(0.03)
    b.tick(0.03)
    b.take_outgoing()
    feed(b, [frames[5]], 0.05 + 0.03)  # 50 ms after the last NACK (at 0.03): at once
    assert b.next_deadline() == 0.08


def test_capacity_is_never_negative() -> None:
    a, _, _, _ = make_pair(a_kw={"window_bytes": 1000})
    a.send(FrameType.DATA, bytes(1500), 0.0)  # a caller ignoring credit
    assert a.send_capacity() == 0


def test_a_header_ack_one_past_what_was_sent_is_ignored() -> None:
    a, b, _, ka = make_pair(a_kw={"window_bytes": 1000})
    a.send(FrameType.DATA, b"x" * 100, 0.0)
    first = reliable(a.take_outgoing())
    bogus = FrameCipher(ka, Direction.A2C).seal(FrameType.DATA, 1, 2, b"")  # acks seq 2
    a.receive(bogus, 0.0)
    assert a.send_capacity() == 900  # frame 1 still counts
    a.send(FrameType.DATA, b"y" * 100, 0.0)
    feed(b, first, 0.0)
    exchange(a, b, 0.0)
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)
    assert a.send_capacity() == 1000


def test_the_reorder_window_is_twice_window_frames_past_the_delivered() -> None:
    a, b, _, _ = make_pair(b_kw={"window_frames": 4})
    for i in range(10):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    frames = reliable(a.take_outgoing())
    assert b.receive(frames[7], 0.0) == [] and b.stats.dropped == 0  # seq 8 = 0 + 2 * 4: held
    assert b.receive(frames[8], 0.0) == [] and b.stats.dropped == 1  # seq 9: dropped


def test_only_the_next_frame_in_order_passes_a_full_buffer() -> None:
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"1", 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    for i in range(32):
        a.send(FrameType.DATA, bytes([i]) * 65536, 0.0)
    frames = reliable(a.take_outgoing())
    for blob in frames[2:]:  # frames 3..34: 2 MiB held
        b.receive(blob, 0.0)
    assert b.stats.dropped == 0
    assert b.receive(frames[1], 0.0) == [] and b.stats.dropped == 1  # frame 2: over the bound
    delivered = b.receive(frames[0], 0.0)  # frame 1, next in order: always taken
    assert [f.seq for f in delivered] == [1]


def test_a_gap_keeps_its_nack_due_when_a_reply_frame_goes_out() -> None:
    """A frame's header carries only the cumulative ack, not the gap: the NACK still goes."""
    a, b, _, ka = make_pair()
    a.send(FrameType.DATA, b"1", 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    feed(b, reliable(a.take_outgoing())[1:], 0.0)
    b.send(FrameType.DATA, b"reply", 0.0)
    b.tick(0.0)
    acked = [blob for blob, _ in b.take_outgoing() if header(blob)[0] == FrameType.ACK]
    assert len(acked) == 1 and parse_ack(ka, Direction.A2C, acked[0]) == (0, [(1, 1)])


def test_quarter_window_bytes_are_counted_afresh_after_each_ack() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_bytes": 4000})
    a.send(FrameType.DATA, b"a" * 10, 0.0)
    a.send(FrameType.DATA, b"b" * 999, 0.0)
    a.send(FrameType.DATA, b"c", 0.0)
    exchange(a, b, 0.0)
    b.consume(1, 0.0)
    b.tick(ACK_DELAY)  # an ack goes out: the count restarts
    assert len(b.take_outgoing()) == 1
    b.consume(2, 1.0)
    assert b.next_deadline() is None  # 999 bytes since the ack
    b.consume(3, 1.0)
    assert b.next_deadline() == 1.0  # 1000


def test_a_gap_range_up_to_the_last_frame_sent_resends_it() -> None:
    a, _, _, ka = make_pair()
    for i in range(4):
        a.send(FrameType.DATA, bytes([i]), 0.0)
    originals = reliable(a.take_outgoing())
    payload = struct.pack(">Q", 0) + struct.pack(">QQ", 1, 4)
    a.receive(FrameCipher(ka, Direction.A2C).seal(FrameType.ACK, 1, 0, payload), NACK_HOLDOFF)
    assert reliable(a.take_outgoing()) == originals


def test_an_ack_repeating_what_was_received_does_not_reset_the_backoff() -> None:
    a, b, _, _ = make_pair()
    a.send(FrameType.DATA, b"1", 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    feed(b, reliable(a.take_outgoing())[:1], 0.0)  # 2 is lost
    b.tick(ACK_DELAY)
    exchange(b, a, ACK_DELAY)  # received = 1
    a.tick(ACK_DELAY + RTO_MIN)
    a.tick(ACK_DELAY + 3 * RTO_MIN)  # 2 resent twice (lost): RTO 2 s
    a.take_outgoing()
    assert a.next_deadline() == ACK_DELAY + 3 * RTO_MIN + 2.0
    b.keepalive(1.7)
    b.tick(1.7)  # received = 1 again: no progress
    exchange(b, a, 1.7)
    assert a.next_deadline() == ACK_DELAY + 3 * RTO_MIN + 2.0


def test_consumption_acks_at_a_quarter_of_twelve_frames() -> None:
    a, b, _, _ = make_pair(b_kw={"auto_consume": False, "window_frames": 12})
    for _ in range(3):
        a.send(FrameType.DATA, b"f", 0.0)
    exchange(a, b, 0.0)
    b.consume(2, 0.0)
    assert b.next_deadline() == ACK_DELAY
    b.consume(3, 0.0)
    assert b.next_deadline() == 0.0


def test_an_ack_claiming_one_more_frame_than_was_sent_is_ignored() -> None:
    """Otherwise the next frame would count as received and never be resent."""
    a, _, _, ka = make_pair()
    a.send(FrameType.DATA, b"1", 0.0)
    a.take_outgoing()
    bogus = FrameCipher(ka, Direction.A2C).seal(FrameType.ACK, 1, 0, struct.pack(">Q", 2))
    a.receive(bogus, 0.0)
    a.send(FrameType.DATA, b"2", 0.0)
    sent = reliable(a.take_outgoing())
    assert not a.all_acked
    a.tick(RTO_MIN)
    assert reliable(a.take_outgoing())[-1] == sent[0]  # frame 2 resent
