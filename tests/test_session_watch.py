"""Watchers and joiners in tether.session_core: a watcher sees the screen and what follows,
its input never reaches the program, and a slow one never slows the session (it is
resynced from the replay); a joiner is a second writer; everyone is told who came and went;
a moderator can end the session.

Time is simulated and every client is a real Channel on the other end of the frames.
"""

from __future__ import annotations

import os

from test_session_core import SHELL, T0, Window, from_client, notices, to_client

from tether.channel import Channel
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.recevents import EventKind
from tether.session_core import END, Hangup, Limits, Reader, SessionCore, Signal


def _pair(window: int = 1 << 20, auto_consume: bool = False) -> tuple[Channel, Channel]:
    kc, ka = os.urandom(32), os.urandom(32)
    agent = Channel(FrameCipher(ka, Direction.A2C), FrameCipher(kc, Direction.C2A),
                    window_bytes=window, auto_consume=auto_consume)
    client = Channel(FrameCipher(kc, Direction.C2A), FrameCipher(ka, Direction.A2C), window_bytes=window)
    return agent, client


def make(recorder: Window | None = None) -> tuple[SessionCore, Channel]:
    agent, client = _pair()
    core = SessionCore(agent, SHELL, Limits(3600.0, 0.0, 300.0, 600.0), max_frame=MAX_PAYLOAD,
                       recorder=recorder, now=T0)
    core.start(T0)
    return core, client


def add(core: SessionCore, key: str, who: str, *, writes: bool = False, moderator: bool = False,
        window: int = 1 << 20) -> Channel:
    agent, client = _pair(window, auto_consume=not writes)
    core.add_reader(key, Reader(agent, who, writes=writes, moderator=moderator), T0)
    return client


def reader_frames(core: SessionCore, key: str, client: Channel, now: float) -> list[Frame]:
    frames: list[Frame] = []
    for k, blob, _ in core.take_reader_outgoing():
        if k == key:
            frames += client.receive(blob, now)
    return frames


def reader_send(core: SessionCore, key: str, client: Channel, now: float,
                *frames: tuple[FrameType, bytes]) -> list[object]:
    for ftype, payload in frames:
        client.send(ftype, payload, now)
    events: list[object] = []
    for blob, _ in client.take_outgoing():
        events += core.receive_reader(key, blob, now)
    return events


def data(frames: list[Frame]) -> bytes:
    return b"".join(f.payload for f in frames if f.type == FrameType.DATA)


def output(core: SessionCore, text: bytes, now: float) -> None:
    core.feed_output(0, text, now)
    core.send_output(now, backlogged=False)


def test_a_watcher_sees_the_screen_then_the_output_and_its_input_is_dropped() -> None:
    rec = Window(size=1 << 30)
    core, owner = make(recorder=rec)
    output(core, b"$ ls\r\nfile\r\n$ ", T0)
    to_client(core, owner, T0)
    watcher = add(core, "w", "carol from carol.1")
    frames = reader_frames(core, "w", watcher, T0)
    assert data(frames) == b"\x1b[H\x1b[2J$ ls\r\nfile\r\n$ "
    assert notices(frames) == ["carol from carol.1 started watching"]
    assert notices(to_client(core, owner, T0)) == ["carol from carol.1 started watching"]
    output(core, b"more\r\n", T0 + 1)
    assert data(reader_frames(core, "w", watcher, T0 + 1)) == b"more\r\n"
    assert data(to_client(core, owner, T0 + 1)) == b"more\r\n"
    # Typing, resizing, signalling, EOF: none of it reaches the program.
    events = reader_send(core, "w", watcher, T0 + 2, (FrameType.DATA, b"rm -rf /\r"),
                         (FrameType.RESIZE, b"\x00\x10\x00\x10"), (FrameType.SIGNAL, b"\x02"),
                         (FrameType.EOF, b""))
    assert events == []
    assert core.next_input() is None and not core.stdin_eof
    assert core.watcher_input_dropped == 4
    assert not any(kind == EventKind.INPUT for kind, _ in rec.events)


def test_a_watcher_that_never_reads_does_not_slow_the_session_and_is_resynced() -> None:
    core, owner = make()
    watcher = add(core, "w", "carol", window=65536)
    reader_frames(core, "w", watcher, T0)  # the (empty) screen
    # 1 MiB of output: the owner gets all of it; the watcher's 64 KiB window fills.
    sent = b""
    for i in range(64):
        chunk = (b"%06d " % i) * 2340 + b"\n"
        output(core, chunk, T0 + 1)
        got = to_client(core, owner, T0 + 1)
        owner.consume(owner.delivered_seq, T0 + 1)
        for blob, _ in owner.take_outgoing():
            core.receive(blob, T0 + 1)
        owner.tick(T0 + 2)
        for blob, _ in owner.take_outgoing():
            core.receive(blob, T0 + 2)
        sent += data(got)
    assert sent.count(b"\n") == 64 and not core.output_pending
    assert core.readers["w"].behind
    # The watcher reads what it was sent and acks: it gets the current screen again.
    first = reader_frames(core, "w", watcher, T0 + 3)
    assert len(data(first)) <= 65536
    watcher.tick(T0 + 4)
    for blob, _ in watcher.take_outgoing():
        core.receive_reader("w", blob, T0 + 4)
    output(core, b"", T0 + 4)
    again = data(reader_frames(core, "w", watcher, T0 + 4))
    assert again.startswith(b"\x1b[H\x1b[2J") and again.endswith(b"%06d \n" % 63)
    assert not core.readers["w"].behind


def test_a_joiner_writes_like_the_owner_but_neither_resizes_nor_ends_the_session() -> None:
    core, owner = make()
    joiner = add(core, "j", "bob from bob.1", writes=True)
    assert notices(reader_frames(core, "j", joiner, T0)) == ["bob from bob.1 joined"]
    from_client(core, owner, T0, (FrameType.DATA, b"owner\r"))
    events = reader_send(core, "j", joiner, T0, (FrameType.DATA, b"bob\r"),
                         (FrameType.RESIZE, b"\x00\x10\x00\x10"), (FrameType.SIGNAL, b"\x02"),
                         (FrameType.EOF, b""))
    assert events == [Signal(2)]
    written = []
    while (chunk := core.next_input()) is not None:
        written.append(chunk)
        core.input_written(len(chunk), hidden=False)
    assert written == [b"owner\r", b"bob\r"] and not core.stdin_eof
    # Both are credited once their input is written.
    core.credit(T0 + 1)
    assert core.readers["j"].channel._consumed == core.readers["j"].channel.delivered_seq
    # A joiner's CLOSE is leaving, not the end of the session.
    assert reader_send(core, "j", joiner, T0 + 2, (FrameType.CLOSE, b"")) == []
    assert "j" not in core.readers
    assert notices(to_client(core, owner, T0 + 2))[-1] == "bob from bob.1 left"


def test_only_a_moderator_ends_the_session() -> None:
    core, owner = make()
    plain = add(core, "w", "carol")
    assert reader_send(core, "w", plain, T0, (FrameType.CLOSE, END)) == []
    assert "w" not in core.readers
    mod = add(core, "m", "mona", moderator=True)
    assert core.has_moderator
    assert reader_send(core, "m", mod, T0 + 1, (FrameType.CLOSE, END)) == [Hangup("moderator")]
    assert "session ended by moderator mona" in notices(to_client(core, owner, T0 + 1))


def test_a_silent_watcher_is_dropped_after_the_client_timeout() -> None:
    core, owner = make()
    add(core, "w", "carol")
    assert core.next_wakeup() is not None and core.next_wakeup() <= T0 + 300.0  # type: ignore[operator]
    core.tick(T0 + 299.0)
    assert "w" in core.readers
    core.tick(T0 + 300.0)
    assert "w" not in core.readers
    assert notices(to_client(core, owner, T0 + 300.0))[-1] == "carol stopped watching (silent)"


def test_notices_and_the_exit_reach_every_reader() -> None:
    core, _owner = make()
    watcher = add(core, "w", "carol")
    reader_frames(core, "w", watcher, T0)
    core.finish(0, None, T0 + 1)
    frames = reader_frames(core, "w", watcher, T0 + 1)
    assert [f.type for f in frames][-2:] == [FrameType.EXIT, FrameType.CLOSE]


def test_a_dropped_watcher_is_told_why_and_closed() -> None:
    core, _owner = make()
    watcher = add(core, "w", "carol")
    reader_frames(core, "w", watcher, T0)
    core.remove_reader("w", T0 + 1, "revoked: user 'carol' has been revoked")
    frames = reader_frames(core, "w", watcher, T0 + 1)
    assert notices(frames) == ["you were removed from the session: revoked: user 'carol' has been revoked"]
    assert frames[-1].type == FrameType.CLOSE
    assert core.take_reader_outgoing() == []  # its last frames go once
