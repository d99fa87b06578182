"""Tests for tether.session_core: the agent's session state machine without I/O.

Time is simulated (`now` is an argument) and the client is a real Channel on the other end
of the frames, so what is asserted is what a client would receive.
"""

from __future__ import annotations

import os
import struct

import orjson
import pytest

from tether.channel import Channel
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.limits import MAX_COLS
from tether.recevents import EventKind
from tether.session_core import (
    BULK_READ,
    INPUT_WRITE,
    MAX_DURATION_WARNING,
    READ_SIZE,
    Frozen,
    Hangup,
    KindTraits,
    Limits,
    Resize,
    SessionCore,
    Signal,
    Thawed,
)


class Window:
    """A recording window as the agent's RecordingLink keeps it: what is recorded counts
    against the window until the recorder acks it."""

    def __init__(self, size: int = MAX_PAYLOAD) -> None:
        self.size = size
        self.unacked = 0
        self.closed = False
        self.events: list[tuple[EventKind, bytes]] = []

    def room(self) -> int:
        return max(0, self.size - self.unacked)

    def record(self, kind: EventKind, data: bytes) -> None:
        self.events.append((kind, data))
        self.unacked += len(data)

    def ack(self) -> None:
        self.unacked = 0

    def take(self) -> list[tuple[EventKind, bytes]]:
        out, self.events = self.events, []
        return out


SHELL = KindTraits(streams=(FrameType.DATA,), resizable=True, idles=True)
EXEC = KindTraits(streams=(FrameType.DATA, FrameType.STDERR))
T0 = 1000.0


def make(traits: KindTraits = SHELL, *, max_duration: float = 3600.0, idle: float = 0.0,
         client_timeout: float = 300.0, recorder: Window | None = None,
         window: int = 1 << 20, max_frame: int = MAX_PAYLOAD) -> tuple[SessionCore, Channel]:
    """A started core and the client's channel; recorded events go to `recorder`."""
    kc, ka = os.urandom(32), os.urandom(32)
    agent = Channel(FrameCipher(ka, Direction.A2C), FrameCipher(kc, Direction.C2A),
                    window_bytes=window, auto_consume=False)
    client = Channel(FrameCipher(kc, Direction.C2A), FrameCipher(ka, Direction.A2C),
                     window_bytes=window)
    core = SessionCore(agent, traits, Limits(max_duration, idle, client_timeout),
                       max_frame=max_frame, recorder=recorder, now=T0)
    core.start(T0)
    return core, client


def to_client(core: SessionCore, client: Channel, now: float) -> list[Frame]:
    frames: list[Frame] = []
    for blob, _ in core.take_outgoing():
        frames += client.receive(blob, now)
    return frames


def from_client(core: SessionCore, client: Channel, now: float,
                *frames: tuple[FrameType, bytes]) -> list[object]:
    for ftype, payload in frames:
        client.send(ftype, payload, now)
    events: list[object] = []
    for blob, _ in client.take_outgoing():
        events += core.receive(blob, now)
    return events


def notices(frames: list[Frame]) -> list[str]:
    return [f.payload.decode() for f in frames if f.type == FrameType.NOTICE]


# ----- limits as deadlines -----


def run_until(core: SessionCore, end: float, holds_terminal: bool = True,
              ) -> list[tuple[float, object]]:
    """Tick the core at every wakeup it asks for up to `end`, as the agent's timer does."""
    fired: list[tuple[float, object]] = []
    while (due := core.next_wakeup()) is not None and due <= end:
        fired += [(due, ev) for ev in core.tick(due, holds_terminal)]
    return fired


def test_max_duration_warns_a_minute_before_and_hangs_up_at_the_limit() -> None:
    rec = Window()
    core, client = make(max_duration=600.0, client_timeout=10_000.0, recorder=rec)
    warn_at = T0 + 600.0 - MAX_DURATION_WARNING
    assert core.next_wakeup() == warn_at
    assert core.tick(warn_at - 0.001) == []
    assert notices(to_client(core, client, warn_at)) == []
    assert core.tick(warn_at) == []
    assert notices(to_client(core, client, warn_at)) == [
        "this session ends in 60 s: it reaches its maximum duration of 10 min"]
    assert core.next_wakeup() == T0 + 600.0
    assert core.tick(T0 + 599.999) == []
    assert core.tick(T0 + 600.0) == [Hangup("maximum duration")]
    assert notices(to_client(core, client, T0 + 600.0)) == [
        "session closed: maximum duration of 10 min reached"]
    assert rec.take()[-1] == (
        EventKind.NOTICE, b"session closed: maximum duration of 10 min reached")


def test_a_short_max_duration_has_no_warning() -> None:
    core, client = make(max_duration=30.0, client_timeout=1000.0)
    assert core.next_wakeup() == T0 + 30.0
    assert core.tick(T0 + 30.0) == [Hangup("maximum duration")]
    assert notices(to_client(core, client, T0 + 30.0)) == [
        "session closed: maximum duration of 30 s reached"]


def test_idle_timeout_fires_at_the_first_check_past_it() -> None:
    core, client = make(idle=2.0, client_timeout=1000.0)
    assert core.idle_check_due == T0 + 0.5  # min(1, max(0.2, 2 / 4))
    fired = run_until(core, T0 + 100.0)
    assert [ev for _, ev in fired] == [Hangup("idle")]
    assert fired[0][0] == pytest.approx(T0 + 2.0)
    assert notices(to_client(core, client, T0 + 2.0)) == ["session closed: idle for 2 s"]
    assert core.idle_check_due is None


def test_input_and_output_restart_the_idle_clock() -> None:
    core, client = make(idle=2.0, client_timeout=1000.0)
    assert run_until(core, T0 + 1.5) == []
    from_client(core, client, T0 + 1.5, (FrameType.DATA, b"x"))
    assert run_until(core, T0 + 3.4) == []
    core.feed_output(0, b"prompt$ ", T0 + 3.4)
    assert run_until(core, T0 + 5.3) == []
    fired = run_until(core, T0 + 100.0)
    assert [ev for _, ev in fired] == [Hangup("idle")]
    assert T0 + 5.4 <= fired[0][0] <= T0 + 5.4 + 0.5


def test_a_foreground_job_is_not_idleness() -> None:
    """The idle clock starts only when the shell holds its terminal again."""
    core, _ = make(idle=2.0, client_timeout=1000.0)
    assert run_until(core, T0 + 10.0, holds_terminal=False) == []
    fired = run_until(core, T0 + 100.0, holds_terminal=True)
    assert [ev for _, ev in fired] == [Hangup("idle")]
    assert fired[0][0] == pytest.approx(T0 + 12.0)


def test_exec_sessions_do_not_idle() -> None:
    core, _ = make(EXEC, idle=2.0, client_timeout=1000.0)
    assert core.idle_check_due is None
    assert run_until(core, T0 + 100.0) == []


def test_client_silence_ends_the_session_and_hearing_from_it_does_not() -> None:
    core, client = make(client_timeout=40.0)
    assert core.next_wakeup() == T0 + 10.0
    assert run_until(core, T0 + 30.0) == []
    from_client(core, client, T0 + 30.0, (FrameType.DATA, b"k"))
    assert run_until(core, T0 + 69.0) == []
    fired = run_until(core, T0 + 1000.0)
    assert fired == [(T0 + 70.0, Hangup("client silent for 40 s"))]  # once


def test_stop_limits_silences_every_deadline() -> None:
    core, _ = make(max_duration=10.0, idle=1.0, client_timeout=4.0)
    core.stop_limits()
    assert core.next_wakeup() is None
    assert core.tick(T0 + 1000.0) == []


# ----- output: credit, UTF-8 and the recording window -----


def test_output_is_paced_by_the_recording_window() -> None:
    rec = Window(2000)
    core, client = make(recorder=rec)
    core.feed_output(0, b"a" * 5000, T0)
    core.send_output(T0, backlogged=False)
    # Each piece recorded shrinks the room the next piece may take.
    assert [len(f.payload) for f in to_client(core, client, T0)] == [2000]
    assert rec.take() == [(EventKind.OUTPUT, b"a" * 2000)]
    assert core.output_blocked(backlogged=False)
    assert not core.may_read(0, backlogged=False)
    core.send_output(T0, backlogged=False)
    assert to_client(core, client, T0) == []
    rec.unacked = 800  # the recorder acked part of it
    core.send_output(T0, backlogged=False)
    assert [len(f.payload) for f in to_client(core, client, T0)] == [1200]
    rec.ack()
    core.send_output(T0, backlogged=False)
    assert b"".join(f.payload for f in to_client(core, client, T0)) == b"a" * 1800
    assert not core.output_pending
    assert b"".join(d for _, d in rec.take()) == b"a" * 3000


def test_without_a_recording_only_credit_and_the_socket_pace_output() -> None:
    core, client = make(window=3000)
    core.feed_output(0, b"b" * 5000, T0)
    core.send_output(T0, backlogged=True)
    assert to_client(core, client, T0) == []
    assert core.output_blocked(backlogged=True)
    core.send_output(T0, backlogged=False)
    assert sum(len(f.payload) for f in to_client(core, client, T0)) == 3000
    assert core.output_blocked(backlogged=False)  # no credit left


def test_output_is_never_cut_inside_a_character() -> None:
    core, client = make(max_frame=4)
    core.feed_output(0, "aé€".encode(), T0)  # 1 + 2 + 3 bytes
    core.send_output(T0, backlogged=False)
    assert [f.payload for f in to_client(core, client, T0)] == [b"a\xc3\xa9", "€".encode()]


def test_an_incomplete_tail_waits_for_the_rest_unless_the_stream_ended() -> None:
    core, client = make()
    core.feed_output(0, b"ok\xe2\x82", T0)
    core.send_output(T0, backlogged=False)
    assert [f.payload for f in to_client(core, client, T0)] == [b"ok"]
    core.send_output(T0, backlogged=False, final=True)
    assert [f.payload for f in to_client(core, client, T0)] == [b"\xe2\x82"]


def test_exec_streams_keep_their_frame_types_and_record_kinds() -> None:
    rec = Window()
    core, client = make(EXEC, recorder=rec)
    core.feed_output(0, b"out", T0)
    core.feed_output(1, b"err", T0)
    core.output_eof(0)
    assert not core.output_done
    core.send_output(T0, backlogged=False)
    assert [(f.type, f.payload) for f in to_client(core, client, T0)] == [
        (FrameType.DATA, b"out"), (FrameType.STDERR, b"err")]
    assert rec.take() == [(EventKind.OUTPUT, b"out"), (EventKind.STDERR, b"err")]
    core.output_eof(1)
    assert core.output_done


def test_coalescing_decision() -> None:
    core, _ = make()
    core.feed_output(0, b"x" * BULK_READ, T0)
    assert not core.should_flush(0, BULK_READ)  # a bulk read: more is coming
    assert core.should_flush(0, BULK_READ - 1)
    core.feed_output(0, b"x" * READ_SIZE, T0)
    assert core.should_flush(0, BULK_READ)  # the buffer is full
    assert not core.may_read(0, backlogged=False)


# ----- frames from the client become events -----


def test_control_frames_become_events_for_the_kind() -> None:
    rec = Window()
    core, client = make(recorder=rec)
    events = from_client(core, client, T0,
                         (FrameType.RESIZE, struct.pack(">HH", 60000, 0)),
                         (FrameType.SIGNAL, bytes([2])),
                         (FrameType.SIGNAL, b"\x02\x03"),  # malformed: ignored
                         (FrameType.CLOSE, b""))
    assert events == [Resize(MAX_COLS, 1), Signal(2), Hangup("client closed")]
    assert rec.take() == [(EventKind.RESIZE, struct.pack(">HH", MAX_COLS, 1))]


def test_a_kind_without_a_terminal_gets_no_resize() -> None:
    rec = Window()
    core, client = make(EXEC, recorder=rec)
    assert from_client(core, client, T0, (FrameType.RESIZE, struct.pack(">HH", 80, 24))) == []
    assert rec.take() == []


def test_input_is_written_in_pieces_and_credited_only_once_written() -> None:
    rec = Window(1 << 20)
    core, client = make(recorder=rec)
    data = bytes(range(256)) * 40  # 10240 bytes
    from_client(core, client, T0, (FrameType.DATA, data))
    core.credit(T0)
    assert core.channel.delivered_seq == 1
    written = b""
    while (chunk := core.next_input()) is not None:
        assert len(chunk) <= INPUT_WRITE
        core.credit(T0)
        core.take_outgoing()
        # nothing is credited while part of the frame is unwritten
        assert client.send_capacity() == client.window_bytes - len(data)
        core.input_written(len(chunk) - 1 if len(chunk) > 1 else 1, hidden=False)
        written += chunk[: len(chunk) - 1 if len(chunk) > 1 else 1]
    assert written == data
    core.credit(T0 + 1.0)
    core.tick(T0 + 1.0)
    core.channel.tick(T0 + 1.0)
    to_client(core, client, T0 + 1.0)
    assert client.send_capacity() == client.window_bytes
    assert b"".join(d for k, d in rec.take() if k == EventKind.INPUT) == data


def test_input_waits_for_the_recording_and_stops_when_frozen() -> None:
    rec = Window(3)
    core, client = make(recorder=rec)
    from_client(core, client, T0, (FrameType.DATA, b"hello"))
    assert core.next_input() == b"hel"
    core.input_written(3, hidden=False)
    assert core.next_input() is None  # the recording first
    rec.ack()
    assert core.next_input() == b"lo"
    core.on_recording_silence(10.0, required=True, freeze_after=10.0, end_after=30.0,
                              ending=False, now=T0)
    assert core.next_input() is None


def test_hidden_input_is_not_recorded_and_the_redaction_is() -> None:
    rec = Window()
    core, client = make(recorder=rec)
    from_client(core, client, T0, (FrameType.DATA, b"secret\r"), (FrameType.DATA, b"ls\r"))
    core.input_written(7, hidden=True)
    assert core.next_input() == b"ls\r"
    core.input_written(3, hidden=False)
    assert rec.take() == [
        (EventKind.REDACTION, b'{"hidden":true}'),
        (EventKind.REDACTION, b'{"hidden":false}'),
        (EventKind.INPUT, b"ls\r"),
    ]


def test_eof_closes_input_after_what_came_before_it() -> None:
    core, client = make(EXEC)
    from_client(core, client, T0, (FrameType.DATA, b"abc"), (FrameType.EOF, b""),
                (FrameType.DATA, b"late"))
    assert core.stdin_eof and not core.input_drained
    assert core.next_input() == b"abc"
    core.input_written(3, hidden=False)
    # Once the input is closed, what follows EOF goes nowhere.
    assert core.next_input(open_=False) is None
    assert core.input_drained


def test_input_to_a_gone_reader_is_dropped() -> None:
    core, client = make(EXEC)
    from_client(core, client, T0, (FrameType.DATA, b"abc"))
    assert core.next_input() == b"abc"
    core.input_dropped()
    assert core.next_input() is None
    core.credit(T0)
    assert core.channel.delivered_seq == 1


# ----- a required recording: freeze, thaw, end -----


def test_a_required_recording_freezes_thaws_and_ends_the_session() -> None:
    core, client = make(recorder=Window())
    kw = {"required": True, "freeze_after": 10.0, "end_after": 30.0, "ending": False}
    assert core.on_recording_silence(9.9, now=T0, **kw) == []  # type: ignore[arg-type]
    assert core.on_recording_silence(10.0, now=T0, **kw) == [Frozen()]  # type: ignore[arg-type]
    assert core.on_recording_silence(20.0, now=T0, **kw) == []  # type: ignore[arg-type]
    core.feed_output(0, b"held", T0)
    core.send_output(T0, backlogged=False)
    assert [f.type for f in to_client(core, client, T0)] == [FrameType.NOTICE]
    assert core.on_recording_silence(0.0, now=T0, **kw) == [Thawed()]  # type: ignore[arg-type]
    core.send_output(T0, backlogged=False)
    assert notices(frames := to_client(core, client, T0)) == [
        "recording resumed: the session continues"]
    assert frames[-1].payload == b"held"
    assert core.on_recording_silence(30.0, now=T0, **kw) == [  # type: ignore[arg-type]
        Hangup("recording lost")]
    assert core.recording_lost
    assert notices(to_client(core, client, T0)) == [
        "session closed: recording is required and the recorder has not acknowledged for 30 s"]


def test_an_optional_recording_never_freezes_or_ends_the_session() -> None:
    core, _ = make(recorder=Window())
    assert core.on_recording_silence(1000.0, required=False, freeze_after=10.0,
                                     end_after=30.0, ending=False, now=T0) == []
    assert not core.frozen


# ----- the end -----


def test_finish_sends_and_records_exit_and_closes_the_channel() -> None:
    rec = Window()
    core, client = make(max_duration=10.0, recorder=rec)
    core.finish(None, 9, T0 + 1.0)
    frames = to_client(core, client, T0 + 1.0)
    assert frames[0].type == FrameType.EXIT
    assert orjson.loads(frames[0].payload) == {"code": None, "signal": 9}
    assert rec.take() == [(EventKind.EXIT, frames[0].payload)]
    assert core.channel.closed
    assert core.next_wakeup() is None
    core.notice("too late", T0 + 2.0)  # nothing is sent once closed
    assert notices(to_client(core, client, T0 + 2.0)) == []
