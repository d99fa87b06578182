"""Reliable, flow-controlled, encrypted channel over an unreliable datagram path (sans-IO).

MQTT QoS 0 may lose frames (broker restart, queue overflow) and a PUBACK only means the
broker took a message, so reliability and backpressure are end to end, here:

* Every frame except ACK has a sequence number and is delivered once, in order.
* The frame header piggybacks a cumulative ack: the highest seq the receiver has
  *consumed*. It frees sender credit: at most `window_bytes` and `window_frames` may be
  unconsumed at once, so a slow reader stops the writer, as TCP would.
* ACK frames also report the highest contiguous seq *received* and the gaps above it.
  Gaps are resent at once; anything still unreceived after the RTO is resent, byte for
  byte, with exponential backoff.
* Duplicates, forgeries and frames of other sessions are dropped and counted.

Time is always passed in; nothing here reads a clock or touches I/O.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from tether.errors import TetherError
from tether.frames import Frame, FrameCipher, FrameError, FrameType
from tether.retransmit import RTO_MIN, backoff

DEFAULT_WINDOW_BYTES = 1 << 20
DEFAULT_WINDOW_FRAMES = 512
ACK_DELAY = 0.02
NACK_HOLDOFF = 0.05
MAX_NACK_RANGES = 32
KEEPALIVE = 30.0  # an idle client acks at least this often, so the agent knows it is there
UNRELIABLE = frozenset({FrameType.ACK})
QOS0 = frozenset({FrameType.DATA, FrameType.STDERR, FrameType.ACK})

_U64 = struct.Struct(">Q")
_RANGE = struct.Struct(">QQ")


class ChannelClosed(TetherError):
    """Sending on a channel that already sent CLOSE."""


@dataclass
class _Sent:
    blob: bytes
    size: int
    qos: int
    sent_at: float


@dataclass
class ChannelStats:
    frames_sent: int = 0
    frames_resent: int = 0
    frames_received: int = 0
    duplicates: int = 0
    dropped: int = 0
    bad_frames: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass
class Channel:
    send_cipher: FrameCipher
    recv_cipher: FrameCipher
    window_bytes: int = DEFAULT_WINDOW_BYTES
    window_frames: int = DEFAULT_WINDOW_FRAMES
    auto_consume: bool = True
    stats: ChannelStats = field(default_factory=ChannelStats)

    def __post_init__(self) -> None:
        # send side
        self._next_seq = 1
        self._next_ack_no = 1
        self._unacked: OrderedDict[int, _Sent] = OrderedDict()
        self._peer_consumed = 0
        self._peer_received = 0
        self._in_flight = 0
        self._rto = RTO_MIN
        self._closed = False
        # receive side
        self._delivered = 0
        self._consumed = 0
        self._unacked_bytes = 0
        self._unacked_frames = 0
        self._buffer: dict[int, Frame] = {}
        self._buffered_bytes = 0
        # An honest sender keeps within a window (its own may be the default even when
        # ours is smaller), so twice the larger is room for reordering.
        self._max_buffered = 2 * max(self.window_bytes, DEFAULT_WINDOW_BYTES)
        self._sizes: dict[int, int] = {}
        self._last_peer_ack_no = 0
        self._ack_due: float | None = None
        self._last_nack = -1.0
        self._outbox: list[tuple[bytes, int]] = []
        self.peer_closed = False
        # When the peer last sent a frame never seen before: a new ack number or a new
        # sequence number. An authentic frame replayed by the broker proves nothing about
        # the peer, so it must not keep an abandoned session alive.
        self.last_heard: float | None = None

    # ----- sending -----

    @property
    def closed(self) -> bool:
        return self._closed

    def send_capacity(self) -> int:
        """Bytes that may be sent now without exceeding the peer's window."""
        if len(self._unacked) >= self.window_frames:
            return 0
        return max(0, self.window_bytes - self._in_flight)

    def send(self, ftype: FrameType, payload: bytes, now: float) -> int:
        """Queue one reliable frame; returns its seq. Flow control is the caller's duty."""
        if self._closed:
            raise ChannelClosed("channel already closed")
        if ftype in UNRELIABLE:
            raise ValueError("ACK frames are sent by the channel itself")
        seq = self._next_seq
        self._next_seq += 1
        blob = self.send_cipher.seal(ftype, seq, self._consumed, payload)
        qos = 0 if ftype in QOS0 else 1
        self._unacked[seq] = _Sent(blob, len(payload), qos, now)
        self._in_flight += len(payload)
        self._outbox.append((blob, qos))
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(payload)
        self._ack_sent(now)
        if ftype == FrameType.CLOSE:
            self._closed = True
        return seq

    def close(self, now: float, reason: bytes = b"") -> None:
        if not self._closed:
            self.send(FrameType.CLOSE, reason, now)

    @property
    def all_acked(self) -> bool:
        """Everything sent has been received by the peer."""
        return self._peer_received >= self._next_seq - 1 or not self._unacked

    def _on_peer_consumed(self, upto: int, now: float) -> None:
        if upto <= self._peer_consumed or upto >= self._next_seq:
            return
        for seq in range(self._peer_consumed + 1, upto + 1):
            sent = self._unacked.pop(seq, None)
            if sent is not None:
                self._in_flight -= sent.size
        self._peer_consumed = upto
        self._peer_received = max(self._peer_received, upto)
        self._rto = RTO_MIN

    def _on_ack_frame(self, payload: bytes, now: float) -> None:
        # A peer never reports more than MAX_NACK_RANGES gaps; more is hostile, and
        # walking thousands of ranges would cost the agent CPU for every frame.
        ranges, odd = divmod(len(payload) - 8, _RANGE.size)
        if len(payload) < 8 or odd or ranges > MAX_NACK_RANGES:
            self.stats.bad_frames += 1
            return
        (received,) = _U64.unpack_from(payload)
        if self._peer_received < received < self._next_seq:
            self._peer_received = received
            self._rto = RTO_MIN
        for off in range(8, len(payload), _RANGE.size):
            first, last = _RANGE.unpack_from(payload, off)
            for seq in range(max(first, self._peer_received + 1), min(last, self._next_seq - 1) + 1):
                sent = self._unacked.get(seq)
                if sent is not None and now - sent.sent_at >= NACK_HOLDOFF:
                    self._resend(seq, sent, now)

    def _resend(self, seq: int, sent: _Sent, now: float) -> None:
        sent.sent_at = now
        self._outbox.append((sent.blob, sent.qos))
        self.stats.frames_resent += 1

    # ----- receiving -----

    def receive(self, blob: bytes, now: float) -> list[Frame]:
        """Feed one datagram; returns the reliable frames now deliverable, in order."""
        try:
            frame = self.recv_cipher.open(blob)
        except FrameError:
            self.stats.bad_frames += 1
            return []
        if frame.type == FrameType.ACK:
            if frame.seq <= self._last_peer_ack_no:
                self.stats.duplicates += 1
                return []
            self._last_peer_ack_no = frame.seq
            self.last_heard = now
            self._on_peer_consumed(frame.ack, now)
            self._on_ack_frame(frame.payload, now)
            return []
        self._on_peer_consumed(frame.ack, now)
        self.stats.frames_received += 1
        seq = frame.seq
        if seq <= self._delivered or seq in self._buffer:
            self.stats.duplicates += 1
            self._schedule_ack(now)  # the peer may have missed our ack
            return []
        self.last_heard = now
        # Past twice the window, in frames or bytes, the frame is dropped (it is resent).
        if (
            seq > self._delivered + 2 * self.window_frames
            or (
                seq > self._delivered + 1  # the next in order is delivered, never held
                and self._buffered_bytes + len(frame.payload) > self._max_buffered
            )
        ):
            self.stats.dropped += 1
            return []
        self._buffer[seq] = frame
        self._buffered_bytes += len(frame.payload)
        out: list[Frame] = []
        while (nxt := self._buffer.pop(self._delivered + 1, None)) is not None:
            self._buffered_bytes -= len(nxt.payload)
            self._delivered += 1
            self._sizes[self._delivered] = len(nxt.payload)
            self.stats.bytes_received += len(nxt.payload)
            out.append(nxt)
            if nxt.type == FrameType.CLOSE:
                self.peer_closed = True
        if self._buffer and now - self._last_nack >= NACK_HOLDOFF:
            self._ack_due = now  # a gap: tell the sender at once
        else:
            self._schedule_ack(now + ACK_DELAY)
        if self.auto_consume and out:
            self.consume(self._delivered, now)
        return out

    def consume(self, upto: int, now: float) -> None:
        """The application has finished with every frame up to `upto`; free its credit."""
        upto = min(upto, self._delivered)
        for seq in range(self._consumed + 1, upto + 1):
            self._unacked_bytes += self._sizes.pop(seq, 0)
            self._unacked_frames += 1
        self._consumed = max(self._consumed, upto)
        if (
            self._unacked_bytes >= self.window_bytes // 4
            or self._unacked_frames >= self.window_frames // 4
            or self.peer_closed
        ):
            self._ack_due = now

    @property
    def delivered_seq(self) -> int:
        return self._delivered

    def _schedule_ack(self, when: float) -> None:
        if self._ack_due is None or when < self._ack_due:
            self._ack_due = when

    def _ack_sent(self, now: float) -> None:
        if not self._buffer and self._consumed == self._delivered:
            self._ack_due = None
        self._unacked_bytes = 0
        self._unacked_frames = 0

    def _send_ack(self, now: float) -> None:
        missing: list[tuple[int, int]] = []
        expect = self._delivered + 1
        for seq in sorted(self._buffer):
            if seq > expect and len(missing) < MAX_NACK_RANGES:
                missing.append((expect, seq - 1))
            expect = seq + 1
        payload = _U64.pack(self._delivered) + b"".join(_RANGE.pack(a, b) for a, b in missing)
        ack_no = self._next_ack_no
        self._next_ack_no += 1
        self._outbox.append((self.send_cipher.seal(FrameType.ACK, ack_no, self._consumed, payload), 0))
        if missing:
            self._last_nack = now
        self._ack_due = None
        self._ack_sent(now)

    # ----- time -----

    def tick(self, now: float) -> None:
        """Send due acks and retransmit what the peer has not received within the RTO."""
        if self._ack_due is not None and now >= self._ack_due:
            self._send_ack(now)
        if self._unacked:
            oldest = next(iter(self._unacked.values()))
            # The same sum as in next_deadline(): `now - sent_at >= rto` can be false at
            # now == sent_at + rto through rounding, and the caller's timer would spin.
            if now >= oldest.sent_at + self._rto:
                resent = False
                for seq, sent in self._unacked.items():
                    if seq > self._peer_received:
                        self._resend(seq, sent, now)
                        resent = True
                    else:
                        sent.sent_at = now  # received, awaiting consumption: not lost
                if not resent:
                    # Everything arrived but is not consumed yet. The ACK that will free
                    # the credit is unreliable; if it is lost, nothing else would ever
                    # make the peer repeat it. Probe with the oldest frame: the peer drops
                    # it as a duplicate and acks again (a zero-window probe).
                    seq, sent = next(iter(self._unacked.items()))
                    self._resend(seq, sent, now)
                self._rto = backoff(self._rto)

    def next_deadline(self) -> float | None:
        times = []
        if self._ack_due is not None:
            times.append(self._ack_due)
        if self._unacked:
            times.append(next(iter(self._unacked.values())).sent_at + self._rto)
        return min(times) if times else None

    def keepalive(self, now: float) -> None:
        """Send an ACK now even if nothing changed, so an idle peer knows we are alive."""
        self._ack_due = now

    def resend_all(self, now: float) -> None:
        """After a reconnect: everything not known received goes out again now."""
        for seq, sent in self._unacked.items():
            if seq > self._peer_received:
                self._resend(seq, sent, now)
        self._ack_due = now

    def take_outgoing(self) -> list[tuple[bytes, int]]:
        """(datagram, qos) pairs to publish, in order."""
        out, self._outbox = self._outbox, []
        return out
