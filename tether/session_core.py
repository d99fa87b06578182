"""The agent's session state machine, without I/O: bytes and time in, frames and events out.

It owns the session's Channel and everything decided about a session that does not touch
the process: the output buffers (coalesced, cut only at UTF-8 boundaries, paced by the
client's credit, the MQTT socket and the recording window), the input queue (credited back
only once written), the limits as deadlines (maximum duration and its warning, idle
timeout, client silence), the required-recording freeze, the EXIT frame, and what goes
into the recording. The caller passes `now` (monotonic seconds) and the facts it observes
(whether the socket is backlogged, whether the shell holds its terminal); the core
answers with events (`Hangup`, `Resize`, `Signal`, ...) the caller acts on and frames to
publish (`take_outgoing`). The recording is a `Recorder`: the core appends to it as it
sends and asks it for room before each piece, since every piece recorded shrinks the
window the next piece is paced by.

What differs between session kinds (shell, exec, ...) reaches the core only as
`KindTraits`: its output streams, whether it takes a window size, whether it idles.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from tether.channel import Channel
from tether.encoding import dumps
from tether.frames import MAX_PAYLOAD, Frame, FrameType
from tether.limits import clamp_geometry
from tether.recevents import EventKind

READ_SIZE = 65536  # an output buffer this full stops reading from the process
BULK_READ = 2048  # a read this large means more is coming: wait briefly to fill the frame
INPUT_WRITE = 4096  # input is written to the process in pieces of at most this
MAX_DURATION_WARNING = 60.0
# The recent terminal output an attaching client is shown first (docs/protocol.md §11).
REPLAY_BYTES = 64 * 1024
DETACH = b"detach"  # CLOSE payload: the client leaves, the session stays
DETACHED = b"detached"  # CLOSE payload to a client whose session was attached elsewhere
END = b"end"  # CLOSE payload from a moderator: end the session


def span(seconds: float) -> str:
    s = int(seconds)
    if s % 3600 == 0 and s >= 3600:
        return f"{s // 3600} h"
    if s % 60 == 0 and s >= 60:
        return f"{s // 60} min"
    return f"{s} s"


def utf8_cut(data: bytes | bytearray, end: int) -> int:
    """The largest cut <= end that does not split a UTF-8 sequence (binary passes through).

    May return 0 when the first character itself does not fit; callers then wait for room.
    """
    if end >= len(data) or (data[end] & 0xC0) != 0x80:
        return end
    i = end
    while i > 0 and end - i < 3 and (data[i] & 0xC0) == 0x80:
        i -= 1
    return i if data[i] >= 0xC0 else end


def utf8_tail_incomplete(data: bytes | bytearray) -> int:
    """How many trailing bytes form an incomplete UTF-8 sequence (0-3)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b & 0xC0 == 0x80:
            continue
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return back if back < need else 0
        return 0
    return 0


# ----- what the core tells its caller -----


@dataclass(frozen=True)
class Hangup:
    """End the process (SIGHUP to its group, SIGKILL after a grace): a limit, the client's
    CLOSE, or a lost recording. Any notice has already been sent and recorded."""

    reason: str


@dataclass(frozen=True)
class Resize:
    cols: int  # already clamped to what every role accepts
    rows: int


@dataclass(frozen=True)
class Signal:
    signum: int  # as the client sent it; the caller checks it names a signal


@dataclass(frozen=True)
class Detached:
    """The session lost its client (`~d`, or silence) and waits for an attach."""

    reason: str


@dataclass(frozen=True)
class Frozen:
    """A required recording stalled: stop reading and writing until `Thawed`."""


@dataclass(frozen=True)
class Thawed:
    """The recording is back: write pending input and send held output."""


Event = Hangup | Resize | Signal | Frozen | Thawed | Detached


@dataclass(frozen=True)
class KindTraits:
    """What the core needs to know of a session kind."""

    streams: tuple[FrameType, ...]  # one output buffer per stream, in this order
    resizable: bool = False  # RESIZE frames reach the kind (it has a terminal)
    idles: bool = False  # the idle timeout applies (see `tick`)


@dataclass(frozen=True)
class Limits:
    max_duration: float
    idle_timeout: float  # 0: none
    client_timeout: float  # the client unheard this long ends (or detaches) the session
    detach_timeout: float = 0.0  # a detached session waits this long; 0: no detaching


class Recorder(Protocol):
    """The session's recording as the core sees it (the agent's RecordingLink)."""

    @property
    def closed(self) -> bool: ...

    def room(self) -> int:
        """Bytes the recording lets the session send now."""

    def record(self, kind: EventKind, data: bytes) -> None: ...


@dataclass
class _Output:
    ftype: FrameType
    buf: bytearray = field(default_factory=bytearray)
    eof: bool = False


@dataclass
class Reader:
    """A client besides the owner: a watcher (read-only: the agent drops its input) or a
    joiner (a second writer). Watchers are best effort: one that falls behind misses
    output and is resynced from the replay, so it never slows the session."""

    channel: Channel
    who: str  # for notices: "alice from alice.2"
    writes: bool = False
    moderator: bool = False
    behind: bool = False


class SessionCore:
    def __init__(self, channel: Channel, traits: KindTraits, limits: Limits, *,
                 max_frame: int, recorder: Recorder | None, now: float) -> None:
        self.channel = channel
        self.traits = traits
        self.limits = limits
        self.max_frame = max_frame
        self.recorder = recorder
        self.outputs = [_Output(t) for t in traits.streams]
        # Input to write, in arrival order: (the channel it came on, its seq, the bytes).
        self._input: deque[tuple[Channel, int, bytearray]] = deque()
        self.readers: dict[str, Reader] = {}  # watchers and joiners, by the glue's key
        self.watcher_input_dropped = 0  # frames of input from watchers, never written
        self._parting: list[tuple[str, bytes, int]] = []  # removed readers' last frames
        self.stdin_eof = False  # the client sent EOF
        self.frozen = False  # a required recording stalled: no output, no input
        self.recording_lost = False  # ended for it: held output can never be sent
        self._input_hidden = False  # echo is off: input is not recorded
        self._last_io = now
        self._limit_at: float | None = None
        self._warn_at: float | None = None
        self._idle_at: float | None = None
        self._watchdog_at: float | None = None
        self._stopped = False
        self.detached_at: float | None = None  # no client: output goes to `replay` only
        self.replay = bytearray()  # the last REPLAY_BYTES of terminal output
        self._unrecorded = 0  # bytes at the head of stream 0 that are a replay, recorded already
        self._after_replay: str | None = None  # a notice shown once the replay is out

    # ----- limits -----

    def start(self, now: float) -> None:
        """The process runs: the limits' clocks start."""
        self._limit_at = now + self.limits.max_duration
        if self.limits.max_duration - MAX_DURATION_WARNING > 0:
            self._warn_at = now + self.limits.max_duration - MAX_DURATION_WARNING
        if self.limits.idle_timeout > 0 and self.traits.idles:
            self._idle_at = now + self._idle_period()
        self.channel.last_heard = now
        self._watchdog_at = now + self.limits.client_timeout / 4

    def stop_limits(self) -> None:
        """The session is ending: no limit fires any more."""
        self._stopped = True
        self._limit_at = self._warn_at = self._idle_at = self._watchdog_at = None

    def stop_idle(self) -> None:
        self._idle_at = None

    def _idle_period(self) -> float:
        return min(1.0, max(0.2, self.limits.idle_timeout / 4))

    @property
    def idle_check_due(self) -> float | None:
        return self._idle_at

    def next_wakeup(self) -> float | None:
        """When `tick` must next be called (the channel's own deadline is separate)."""
        detach_end = (None if self.detached_at is None
                      else self.detached_at + self.limits.detach_timeout)
        due = [t for t in (self._limit_at, self._warn_at, self._idle_at, self._watchdog_at,
                           detach_end) if t is not None]
        due += [(r.channel.last_heard or 0.0) + self.limits.client_timeout
                for r in self.readers.values()]
        return min(due) if due else None

    def tick(self, now: float, holds_terminal: bool = True) -> list[Event]:
        """Fire what is due at `now`. `holds_terminal`: the kind's program waits for input
        (a shell at its prompt); a long silent job in the foreground is not idleness, so
        the idle clock starts when the shell gets the terminal back."""
        events: list[Event] = []
        for key, r in list(self.readers.items()):
            if now - (r.channel.last_heard or 0.0) >= self.limits.client_timeout:
                self.remove_reader(key, now, "silent")
        if self._watchdog_at is not None and now >= self._watchdog_at:
            silent = now - (self.channel.last_heard or 0.0)
            if silent >= self.limits.client_timeout:
                self._watchdog_at = None
                if self.limits.detach_timeout > 0:
                    events.append(self.detach(now, f"client silent for {silent:.0f} s"))
                else:
                    events.append(Hangup(f"client silent for {silent:.0f} s"))
            else:
                self._watchdog_at = now + self.limits.client_timeout / 4
        if (self.detached_at is not None and not self._stopped
                and now >= self.detached_at + self.limits.detach_timeout):
            self.detached_at = None
            self._record(EventKind.NOTICE, f"session closed: detached for "
                         f"{span(self.limits.detach_timeout)} with no client".encode())
            events.append(Hangup("detach timeout"))
        if self._warn_at is not None and now >= self._warn_at:
            self._warn_at = None
            self.notice(f"this session ends in {MAX_DURATION_WARNING:.0f} s: it reaches its "
                        f"maximum duration of {span(self.limits.max_duration)}", now)
        if self._limit_at is not None and now >= self._limit_at:
            self._limit_at = None
            self.notice(f"session closed: maximum duration of {span(self.limits.max_duration)} "
                        "reached", now)
            events.append(Hangup("maximum duration"))
        if self._idle_at is not None and now >= self._idle_at:
            self._idle_at = None
            if not holds_terminal:
                self._last_io = now
            elif now - self._last_io >= self.limits.idle_timeout:
                self.notice(f"session closed: idle for {span(self.limits.idle_timeout)}", now)
                events.append(Hangup("idle"))
                return events
            self._idle_at = now + self._idle_period()
        return events

    # ----- recording -----

    def _record(self, kind: EventKind, data: bytes) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.record(kind, data)

    def room(self) -> int:
        """Bytes the recording lets through now (nothing while frozen)."""
        if self.recorder is None:
            return MAX_PAYLOAD
        return 0 if self.frozen else self.recorder.room()

    def on_recording_silence(self, silent: float, *, required: bool, freeze_after: float,
                             end_after: float, ending: bool, now: float) -> list[Event]:
        """The recorder owes acks for `silent` seconds. Only a required recording freezes
        the session (after `freeze_after`) and ends it (after `end_after`)."""
        if not required:
            return []
        if silent >= end_after and not ending:
            self.recording_lost = True
            self.notice(f"session closed: recording is required and the recorder has not "
                        f"acknowledged for {end_after:.0f} s", now)
            return [Hangup("recording lost")]
        if silent >= freeze_after and not self.frozen:
            self.frozen = True
            self.notice(f"recording stalled: the recorder has not acknowledged for "
                        f"{freeze_after:.0f} s, so this session is frozen until it does (it "
                        f"ends after {end_after:.0f} s)", now)
            return [Frozen()]
        if silent < freeze_after and self.frozen:
            self.frozen = False
            self.notice("recording resumed: the session continues", now)
            return [Thawed()]
        return []

    # ----- frames the core sends -----

    def send(self, ftype: FrameType, payload: bytes, now: float) -> None:
        """A frame of the session's own (NOTICE, STDERR text, EXIT), to every client;
        recorded once; dropped by channels that have closed."""
        for r in self.readers.values():
            if not r.channel.closed:
                r.channel.send(ftype, payload, now)
        if not self.channel.closed:
            self.channel.send(ftype, payload, now)
            if ftype == FrameType.NOTICE:
                self._record(EventKind.NOTICE, payload)
            elif ftype == FrameType.STDERR:
                self._record(EventKind.STDERR, payload)

    def notice(self, text: str, now: float) -> None:
        self.send(FrameType.NOTICE, text.encode(), now)

    def finish(self, code: int | None, signum: int | None, now: float) -> None:
        """The EXIT frame, recorded, then the channel closes."""
        exit_doc = dumps({"code": code, "signal": signum})
        self.send(FrameType.EXIT, exit_doc, now)
        self._record(EventKind.EXIT, exit_doc)
        self.stop_limits()
        self.channel.close(now)
        for r in self.readers.values():
            if not r.channel.closed:
                r.channel.close(now)

    def take_outgoing(self) -> list[tuple[bytes, int]]:
        frames = self.channel.take_outgoing()
        return [] if self.detached_at is not None else frames

    # ----- detach and attach -----

    def detach(self, now: float, reason: str) -> Detached:
        """The client has gone; the process goes on for `detach_timeout`, its output kept
        for a replay and recorded, and nothing is sent until a client attaches."""
        if self.detached_at is None:
            self.detached_at = now
            self._watchdog_at = None
            self._record(EventKind.NOTICE, f"detached: {reason}".encode())
        return Detached(reason)

    def rebind(self, channel: Channel, now: float, who: str) -> None:
        """A client attached (`who` says which, for the recording): the session goes on
        over its channel, starting with the recent output. Input the earlier client sent
        that is still queued is written; its credit went with that channel."""
        self.channel = channel
        channel.last_heard = now
        self.detached_at = None
        self._watchdog_at = now + self.limits.client_timeout / 4
        replay = self._replay_tail()
        if replay:
            self.outputs[0].buf[:0] = replay
            self._unrecorded += len(replay)
            self._after_replay = f"attached: {who}"
        else:
            self.notice(f"attached: {who}", now)

    def _replay_tail(self, limit: int = REPLAY_BYTES) -> bytes:
        """The kept output, from a line start when it was cut, after a clear screen."""
        if not self.replay:
            return b""
        limit = min(limit, REPLAY_BYTES)
        tail = bytes(self.replay[-limit:])
        if len(self.replay) > limit:
            nl = tail.find(b"\n")
            start = nl + 1
            if nl < 0:  # no line at all: at least not inside a UTF-8 character
                start = next((i for i in range(min(4, len(tail))) if tail[i] & 0xC0 != 0x80), 0)
            tail = tail[start:]
        return b"\x1b[H\x1b[2J" + tail

    # ----- output -----

    def feed_output(self, stream: int, data: bytes, now: float) -> None:
        if data:
            self.outputs[stream].buf += data
            self._last_io = now

    def output_eof(self, stream: int) -> None:
        self.outputs[stream].eof = True

    @property
    def output_pending(self) -> bool:
        return any(o.buf for o in self.outputs)

    @property
    def output_done(self) -> bool:
        return all(o.eof and not o.buf for o in self.outputs)

    def should_flush(self, stream: int, last_read: int) -> bool:
        """Send now rather than coalesce: EOF, a full buffer, or a small (final) read."""
        out = self.outputs[stream]
        return out.eof or len(out.buf) >= READ_SIZE or last_read < BULK_READ

    def _sent(self, out: _Output, chunk: bytes, now: float) -> None:
        """`chunk` left stream `out`: recorded, and kept for a later attach (a replay that
        is being re-sent was recorded and kept already)."""
        if out is self.outputs[0] and self._unrecorded:
            skip = min(self._unrecorded, len(chunk))
            self._unrecorded -= skip
            chunk = chunk[skip:]
            if not self._unrecorded and self._after_replay is not None:
                # Below the restored screen, not before it (the replay clears the screen).
                text, self._after_replay = self._after_replay, None
                self.notice(text, now)
        if not chunk:
            return
        self._record(EventKind.STDERR if out.ftype == FrameType.STDERR else EventKind.OUTPUT, chunk)
        if self.traits.resizable:
            self.replay += chunk
            if len(self.replay) > 2 * REPLAY_BYTES:
                del self.replay[:-REPLAY_BYTES]

    def _gating(self) -> list[Channel]:
        """The channels whose credit paces the session: the writers (the owner unless
        detached, and joiners). Watchers never slow it."""
        owner = [] if self.detached_at is not None else [self.channel]
        return owner + [r.channel for r in self.readers.values() if r.writes]

    def send_output(self, now: float, *, backlogged: bool, final: bool = False) -> None:
        """Send what credit, the socket and the recording allow, never splitting a UTF-8
        character unless the stream has ended (`final`: the process has gone). Detached
        with no joiner, output is only recorded, kept for the replay and shown to
        watchers, paced by the recording alone."""
        gating = self._gating()
        for r in self.readers.values():
            self._resync(r, now, backlogged)
        for out in self.outputs:
            while out.buf:
                room = min([self.max_frame, self.room(), *(ch.send_capacity() for ch in gating)])
                if room <= 0 or (backlogged and gating):
                    break
                end = min(room, len(out.buf))
                if end == len(out.buf) and not (out.eof or final):
                    end -= utf8_tail_incomplete(out.buf)
                elif end < len(out.buf):
                    end = utf8_cut(out.buf, end)
                if end <= 0:
                    break
                chunk = bytes(out.buf[:end])
                for ch in gating:
                    ch.send(out.ftype, chunk, now)
                self._to_watchers(out.ftype, chunk, now, backlogged)
                del out.buf[:end]
                self._sent(out, chunk, now)

    def _to_watchers(self, ftype: FrameType, chunk: bytes, now: float, backlogged: bool) -> None:
        for r in self.readers.values():
            if r.writes or r.behind or r.channel.closed:
                continue
            if backlogged or r.channel.send_capacity() < len(chunk):
                r.behind = True  # it misses this; resynced from the replay once it catches up
            else:
                r.channel.send(ftype, chunk, now)

    def _resync(self, r: Reader, now: float, backlogged: bool) -> None:
        """A watcher that fell behind (or just came) gets the screen again once at least
        half its window is free: a clear screen and the recent output that fits."""
        ch = r.channel
        room = ch.send_capacity()
        if not r.behind or backlogged or ch.closed or room < ch.window_bytes // 2:
            return
        r.behind = False
        replay = self._replay_tail(room - 64)
        for i in range(0, len(replay), self.max_frame):
            ch.send(FrameType.DATA, replay[i:i + self.max_frame], now)

    # ----- watchers and joiners -----

    def add_reader(self, key: str, reader: Reader, now: float) -> None:
        reader.channel.last_heard = now
        reader.behind = self.traits.resizable  # a terminal: start from the current screen
        self.readers[key] = reader
        self._resync(reader, now, backlogged=False)  # the screen first: it starts with a clear
        self.notice(f"{reader.who} {'joined' if reader.writes else 'started watching'}", now)

    def remove_reader(self, key: str, now: float, why: str = "") -> None:
        reader = self.readers.pop(key, None)
        if reader is None:
            return
        if not reader.channel.closed:
            if why:  # dropped, not leaving: it is told why before its channel closes
                reader.channel.send(FrameType.NOTICE, f"you were removed from the session: {why}".encode(), now)
            reader.channel.close(now)
        self._parting += [(key, blob, qos) for blob, qos in reader.channel.take_outgoing()]
        verb = "left" if reader.writes else "stopped watching"
        self.notice(f"{reader.who} {verb}{f' ({why})' if why else ''}", now)

    @property
    def has_moderator(self) -> bool:
        return any(r.moderator for r in self.readers.values())

    def receive_reader(self, key: str, blob: bytes, now: float) -> list[Event]:
        """A datagram from a watcher or joiner. A watcher's input is dropped here (it is
        read-only: only the agent holds the keys that make a writer); a joiner's is
        queued like the owner's, except that it neither resizes nor ends the session."""
        r = self.readers.get(key)
        if r is None:
            return []
        events: list[Event] = []
        for frame in r.channel.receive(blob, now):
            t = frame.type
            if t == FrameType.CLOSE:
                if r.moderator and frame.payload == END:
                    self.notice(f"session ended by moderator {r.who}", now)
                    events.append(Hangup("moderator"))
                self.remove_reader(key, now)
                break
            if not r.writes:
                self.watcher_input_dropped += 1
            elif t == FrameType.DATA:
                self._input.append((r.channel, frame.seq, bytearray(frame.payload)))
                self._last_io = now
            else:
                self._input.append((r.channel, frame.seq, bytearray()))
                if t == FrameType.SIGNAL and len(frame.payload) == 1:
                    events.append(Signal(frame.payload[0]))
        if not r.writes:
            r.channel.consume(r.channel.delivered_seq, now)
        return events

    def take_reader_outgoing(self) -> list[tuple[str, bytes, int]]:
        """Each reader's frames, by key; a removed reader's last ones (NOTICE, CLOSE) once."""
        parting, self._parting = self._parting, []
        return parting + [(key, blob, qos) for key, r in list(self.readers.items())
                          for blob, qos in r.channel.take_outgoing()]

    def output_blocked(self, *, backlogged: bool) -> bool:
        """No output can be sent: stop reading from the process."""
        gating = self._gating()
        return (self.room() <= 0 or (backlogged and bool(gating))
                or any(ch.send_capacity() <= 0 for ch in gating))

    def may_read(self, stream: int, *, backlogged: bool) -> bool:
        out = self.outputs[stream]
        return (not out.eof and len(out.buf) < READ_SIZE
                and not self.output_blocked(backlogged=backlogged))

    # ----- input -----

    def receive(self, blob: bytes, now: float) -> list[Event]:
        """A datagram from the client: DATA is queued for the process, the rest are events."""
        events: list[Event] = []
        for frame in self.channel.receive(blob, now):
            events.extend(self._on_frame(frame, now, self.channel))
        return events

    def _on_frame(self, frame: Frame, now: float, channel: Channel) -> list[Event]:
        t = frame.type
        if t == FrameType.DATA:
            self._input.append((channel, frame.seq, bytearray(frame.payload)))
            self._last_io = now
            return []
        # Control frames hold their place in the queue, so credit passes them in order.
        self._input.append((channel, frame.seq, bytearray()))
        if t == FrameType.RESIZE and len(frame.payload) == 4 and self.traits.resizable:
            # Any u16 pair arrives here; the terminal and the recording get a size every
            # role accepts.
            cols, rows = clamp_geometry(*struct.unpack(">HH", frame.payload))
            self._record(EventKind.RESIZE, struct.pack(">HH", cols, rows))
            return [Resize(cols, rows)]
        if t == FrameType.SIGNAL and len(frame.payload) == 1:
            return [Signal(frame.payload[0])]
        if t == FrameType.EOF:
            self.stdin_eof = True
        elif t == FrameType.CLOSE:
            if frame.payload == DETACH and self.limits.detach_timeout > 0:
                return [self.detach(now, "client detached")]
            return [Hangup("client closed")]
        return []

    def next_input(self, *, open_: bool = True) -> bytes | None:
        """The next bytes to write to the process, or None: nothing queued, or the
        recording has no room (recording comes first). `open_`: the input is still open;
        input after EOF goes nowhere, as with a pipe."""
        while self._input:
            _ch, _seq, data = self._input[0]
            if data and not open_:
                data.clear()
            if data:
                room = self.room()
                if room <= 0:
                    return None
                return bytes(data[:min(INPUT_WRITE, room)])
            self._input.popleft()
        return None

    def input_written(self, n: int, *, hidden: bool) -> None:
        """`n` bytes of `next_input` reached the process. `hidden`: echo was off (a
        password prompt), read before the write; such input is not recorded."""
        data = self._input[0][2]
        if n and self.recorder is not None:
            if hidden != self._input_hidden:
                self._input_hidden = hidden
                self._record(EventKind.REDACTION, dumps({"hidden": hidden}))
            if not hidden:
                self._record(EventKind.INPUT, bytes(data[:n]))
        del data[:n]

    def input_dropped(self) -> None:
        """The reader has gone: drop the pending piece, as a closed pipe would."""
        self._input[0][2].clear()

    @property
    def input_drained(self) -> bool:
        """EOF from the client and everything before it written: close the input."""
        return not self._input and self.stdin_eof

    def credit(self, now: float) -> None:
        """Credit each writer for every frame of its the process has taken."""
        for ch in [self.channel, *(r.channel for r in self.readers.values() if r.writes)]:
            first = next((seq for c, seq, _ in self._input if c is ch), None)
            ch.consume(first - 1 if first is not None else ch.delivered_seq, now)
