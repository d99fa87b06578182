"""Detach and attach in tether.session_core: a session outlives its client for the grant's
detach_timeout, keeps its recent terminal output, and goes on over a new client's channel.

Time is simulated and the clients are real Channels on the other end of the frames.
"""

from __future__ import annotations

import os

from test_session_core import SHELL, T0, Window, from_client, notices, run_until, to_client

from tether.channel import Channel
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.recevents import EventKind
from tether.session_core import DETACH, REPLAY_BYTES, Detached, Hangup, Limits, SessionCore


def make(detach: float = 600.0, client_timeout: float = 300.0,
         recorder: Window | None = None) -> tuple[SessionCore, Channel]:
    agent, client = _pair()
    core = SessionCore(agent, SHELL, Limits(3600.0, 0.0, client_timeout, detach),
                       max_frame=MAX_PAYLOAD, recorder=recorder, now=T0)
    core.start(T0)
    return core, client


def _pair() -> tuple[Channel, Channel]:
    kc, ka = os.urandom(32), os.urandom(32)
    agent = Channel(FrameCipher(ka, Direction.A2C), FrameCipher(kc, Direction.C2A), auto_consume=False)
    client = Channel(FrameCipher(kc, Direction.C2A), FrameCipher(ka, Direction.A2C))
    return agent, client


def _output(frames: list[Frame]) -> bytes:
    return b"".join(f.payload for f in frames if f.type == FrameType.DATA)


def test_detach_keeps_the_process_running_and_its_output_recorded_not_sent() -> None:
    rec = Window(size=1 << 30)
    core, client = make(recorder=rec)
    assert from_client(core, client, T0, (FrameType.CLOSE, DETACH)) == [Detached("client detached")]
    assert core.detached_at == T0
    core.feed_output(0, b"while nobody watches\r\n", T0 + 1)
    # Credit does not matter any more: nothing is sent, so the program is never blocked.
    assert not core.output_blocked(backlogged=True)
    core.send_output(T0 + 1, backlogged=True)
    assert core.take_outgoing() == []
    assert not core.output_pending
    assert (EventKind.OUTPUT, b"while nobody watches\r\n") in rec.events
    assert (EventKind.NOTICE, b"detached: client detached") in rec.events
    assert bytes(core.replay).endswith(b"while nobody watches\r\n")


def test_without_a_detach_timeout_a_detach_is_a_close() -> None:
    core, client = make(detach=0.0)
    assert from_client(core, client, T0, (FrameType.CLOSE, DETACH)) == [Hangup("client closed")]
    assert core.detached_at is None


def test_a_silent_client_detaches_the_session_which_ends_after_the_detach_timeout() -> None:
    rec = Window(size=1 << 30)
    core, _client = make(detach=600.0, client_timeout=300.0, recorder=rec)
    fired = run_until(core, T0 + 300.0 + 75.0)
    assert [ev for _, ev in fired] == [Detached("client silent for 300 s")]
    detached_at = core.detached_at
    assert detached_at is not None and T0 + 300.0 <= detached_at <= T0 + 375.0
    assert run_until(core, detached_at + 599.9) == []
    assert run_until(core, detached_at + 600.0) == [(detached_at + 600.0, Hangup("detach timeout"))]
    assert rec.events[-1] == (EventKind.NOTICE,
                              b"session closed: detached for 10 min with no client")


def test_with_no_detach_timeout_silence_still_ends_the_session() -> None:
    core, _client = make(detach=0.0, client_timeout=300.0)
    assert [ev for _, ev in run_until(core, T0 + 400.0)] == [Hangup("client silent for 300 s")]


def test_an_attaching_client_gets_the_recent_output_first_then_the_rest_and_a_notice() -> None:
    rec = Window(size=1 << 30)
    core, old = make(recorder=rec)
    core.feed_output(0, b"$ echo one\r\none\r\n$ ", T0)
    core.send_output(T0, backlogged=False)
    assert _output(to_client(core, old, T0)) == b"$ echo one\r\none\r\n$ "
    from_client(core, old, T0, (FrameType.CLOSE, DETACH))
    core.feed_output(0, b"late\r\n", T0 + 5)
    core.send_output(T0 + 5, backlogged=False)
    recorded = len(rec.events)
    agent, new = _pair()
    core.rebind(agent, T0 + 10, "alice from alice.2")
    assert core.detached_at is None
    core.feed_output(0, b"after\r\n", T0 + 11)
    core.send_output(T0 + 11, backlogged=False)
    frames = to_client(core, new, T0 + 11)
    assert _output(frames) == b"\x1b[H\x1b[2J$ echo one\r\none\r\n$ late\r\nafter\r\n"
    assert notices(frames) == ["attached: alice from alice.2"]
    # The replay is not recorded twice: only the notice and the new output follow.
    assert rec.events[recorded:] == [(EventKind.NOTICE, b"attached: alice from alice.2"),
                                     (EventKind.OUTPUT, b"after\r\n")]


def test_input_the_earlier_client_sent_is_still_written_after_an_attach() -> None:
    core, old = make()
    from_client(core, old, T0, (FrameType.DATA, b"typed before\r"))
    agent, new = _pair()
    core.rebind(agent, T0 + 1, "alice")
    assert core.next_input() == b"typed before\r"
    core.input_written(len(b"typed before\r"), hidden=False)
    core.credit(T0 + 1)  # credits nothing on the new channel: it delivered nothing yet
    from_client(core, new, T0 + 2, (FrameType.DATA, b"typed after\r"))
    assert core.next_input() == b"typed after\r"


def test_the_replay_is_bounded_and_starts_at_a_line() -> None:
    core, client = make()
    from_client(core, client, T0, (FrameType.CLOSE, DETACH))
    line = b"x" * 99 + b"\n"
    for _ in range(3 * REPLAY_BYTES // len(line)):
        core.feed_output(0, line, T0)
        core.send_output(T0, backlogged=False)
    assert not core.output_pending
    assert REPLAY_BYTES <= len(core.replay) <= 2 * REPLAY_BYTES
    agent, _new = _pair()
    core.rebind(agent, T0 + 1, "alice")
    replay = bytes(core.outputs[0].buf)
    assert replay.startswith(b"\x1b[H\x1b[2J" + line) and replay.endswith(line)
    assert len(replay) <= REPLAY_BYTES + len(b"\x1b[H\x1b[2J")
