"""One live session on the agent: the event-loop glue between MQTT, a process and the core.

The session's decisions (credit, coalescing and UTF-8 cuts, pacing by the recording,
limits, the freeze of a required recording, what is recorded) are made by the sans-IO
`tether.session_core.SessionCore`; what runs behind the session (a shell on a PTY, a
command on pipes) is a kind (`tether.agent.kinds`). This module reads and writes the
kind's descriptors, watches the process exit, keeps the timers and publishes.

Output is read from the PTY master (or stdout/stderr pipes), coalesced for up to 2 ms or
64 KiB. When the client's credit window, the MQTT socket or the recording window is full,
reading stops, so the program blocks in write() exactly as it would over SSH. Input is
written in bounded pieces and credited back only once written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tether.agent.kinds import make_kind
from tether.agent.process import Spawned, SpawnError, resolve_run_as
from tether.agent.recording_link import END_AFTER, FREEZE_AFTER, RecordingLink
from tether.agent.request import SessionRequest
from tether.channel import Channel
from tether.edge.deadline import DeadlineTimer
from tether.edge.mqtt import MqttConnection
from tether.frames import Direction, FrameCipher, FrameType
from tether.grants import Grant
from tether.handshake import SessionKeys
from tether.session_core import (
    DETACHED,
    READ_SIZE,
    Detached,
    Event,
    Frozen,
    Hangup,
    Limits,
    Reader,
    Resize,
    SessionCore,
    Signal,
    Thawed,
)

log = logging.getLogger("tether.agent.session")

COALESCE_SECONDS = 0.002
EXIT_DRAIN_GRACE = 2.0
CLOSE_ACK_TIMEOUT = 10.0
# A client cut off from the broker (or an agent cut off itself) may come back this long
# after it was last heard, and still gets the session's tail and exit status.
RESUME_WINDOW = 90.0
KILL_GRACE = 5.0
DEFAULT_CLIENT_TIMEOUT = 300.0  # ten missed keepalives (tether.channel.KEEPALIVE)


@dataclass
class _Reader:
    fd: int
    stream: int  # index into the core's output streams
    reading: bool = False


@dataclass
class AgentSession:
    conn: MqttConnection
    topic_out: str
    keys: SessionKeys
    grant: Grant
    request: SessionRequest
    on_done: Callable[[AgentSession], None]
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    recording: RecordingLink | None = None

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.kind = make_kind(self.grant.mode)
        self.core = SessionCore(
            Channel(
                FrameCipher(self.keys.a2c, Direction.A2C),
                FrameCipher(self.keys.c2a, Direction.C2A),
                window_bytes=self.request.window,
                auto_consume=False,
            ),
            self.kind.traits,
            Limits(self.grant.max_duration, self.grant.idle_timeout, self.client_timeout,
                   self.grant.detach_timeout),
            max_frame=self.request.max_frame,
            recorder=self.recording,
            now=time.monotonic(),
        )
        self.started = time.time()
        self.sid = self.topic_out.rsplit("/", 2)[-2]  # the session's id, kept across attaches
        self.on_change: Callable[[], None] = lambda: None  # attached, detached: the live list
        self._readers: list[_Reader] = []
        self._input_fd: int | None = None
        self._writing = False
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self._coalesce: asyncio.TimerHandle | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._exit_status: tuple[int | None, int | None] | None = None
        self._finishing = False
        self._cut_until = 0.0  # the last moment the agent was seen cut off from the broker
        self._awaiting_moderator = False
        self._released = False  # the process's descriptors are closed
        self._reader_topics: dict[str, str] = {}  # watchers' and joiners' a2c topics
        self._done = False
        self._end_task: asyncio.Task[None] | None = None

    @property
    def proc(self) -> Spawned | None:
        return self.kind.proc

    @property
    def channel(self) -> Channel:
        """The channel of the client attached now (a new one after each attach)."""
        return self.core.channel

    @property
    def detached(self) -> bool:
        return self.core.detached_at is not None

    @property
    def awaiting_moderator(self) -> bool:
        return self._awaiting_moderator

    def detached_since(self) -> float | None:
        """When the session lost its client, as wall-clock time (for the live list)."""
        at = self.core.detached_at
        return None if at is None else time.time() - (time.monotonic() - at)

    # ----- lifecycle -----

    def start(self) -> None:
        """Start the process, or (a moderated session) wait for a moderator to watch."""
        if self.grant.require_moderator and not self.core.has_moderator:
            self._awaiting_moderator = True
            self.on_change()  # moderators find it in `tether sessions --live`
            groups = ", ".join(self.grant.moderators or []) or "a moderator group"
            self._send(FrameType.NOTICE, f"this session is moderated: it starts when a moderator "
                       f"({groups}) watches it".encode())
            return
        self._start_now()

    def _start_now(self) -> None:
        """Start the process. Whatever fails, the session ends through the normal path, so
        its process, descriptors, slot and recording are all released."""
        self._awaiting_moderator = False
        try:
            self._spawn()
            self._watch()
        except SpawnError as exc:
            self._fail(str(exc), 127 if "not found" in str(exc) else 126)
        except Exception:
            log.exception("%s: the session could not be started", self.topic_out)
            self._fail("the session could not be started; the agent's log says why", 126)

    def _spawn(self) -> None:
        run_as = resolve_run_as(self.grant.run_as)
        self.kind.spawn(run_as, self.grant, self.request)
        self._readers = [_Reader(fd, i) for i, fd in enumerate(self.kind.output_fds())]
        self._input_fd = self.kind.input_fd()
        log.info("session %s: %s as %s for %s", self.topic_out, self.grant.mode, run_as.name,
                 self.grant.user)

    def _fail(self, message: str, code: int) -> None:
        """Tell the user, end the process if there is one, and finish as after an exit."""
        if self.proc is not None and self._exit_status is None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.proc.pidfd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.proc.pid, signal.SIGKILL)
            self.proc.proc.wait()
        self._send(FrameType.STDERR, f"tether: {message}\r\n".encode())
        self._exit_status = (code, None)
        self._begin_end()

    def _watch(self) -> None:
        assert self.proc is not None
        if self.recording is not None:
            self.recording.on_progress = self._on_recording_progress
            self.recording.on_silence = self._on_recording_silence
        self.loop.add_reader(self.proc.pidfd, self._on_exit)
        for r in self._readers:
            self._resume(r)
        self.core.start(time.monotonic())
        self._flush_channel()

    def _handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Hangup):
                if ev.reason.startswith("client silent"):
                    log.warning("%s: %s; ending the session", self.topic_out, ev.reason)
                self.terminate(signal.SIGHUP)
            elif isinstance(ev, Resize):
                if self.proc is not None and not self._released:
                    self.kind.resize(ev.cols, ev.rows)
            elif isinstance(ev, Signal):
                if self.proc is not None and not self._released:
                    self._signal(ev.signum)
            elif isinstance(ev, Frozen):
                self._apply_backpressure()
            elif isinstance(ev, Thawed):
                self._on_recording_progress()
            elif isinstance(ev, Detached):
                # A vanished client is worth a warning; a ~d is routine.
                log.log(logging.INFO if ev.reason == "client detached" else logging.WARNING,
                        "%s: detached (%s); it waits %d s for an attach", self.topic_out,
                        ev.reason, self.grant.detach_timeout)
                self._apply_backpressure()  # reading goes on, paced by the recording alone
                self.on_change()

    @property
    def ending(self) -> bool:
        """The process has gone (or is being ended); only the final flush remains."""
        return self._finishing or self._exit_status is not None

    def end_with_notice(self, notice: str) -> None:
        """Tell the user why, then end the session (revocation or an admin's terminate)."""
        self._send(FrameType.NOTICE, notice.encode())
        self.terminate(signal.SIGHUP)

    def terminate(self, sig: int = signal.SIGHUP) -> None:
        """End the process (client closed, limit reached, or admin request)."""
        if self.proc is not None and self._exit_status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.proc.pid, sig)
            self.loop.call_later(KILL_GRACE, self._kill)
        elif self.proc is None:
            self._begin_end()

    def _kill(self) -> None:
        if self.proc is not None and self._exit_status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.proc.pid, signal.SIGKILL)

    def _on_exit(self) -> None:
        assert self.proc is not None
        if self._exit_status is not None:
            return
        self.loop.remove_reader(self.proc.pidfd)
        rc = self.proc.proc.wait()
        self._exit_status = (rc, None) if rc >= 0 else (None, -rc)
        log.debug("%s: process exited %s", self.topic_out, self._exit_status)
        # Let buffered output drain; a background job holding the PTY open must not keep
        # the session alive once the shell has gone. Nothing drains once the recording is lost.
        self.loop.call_later(0 if self.core.recording_lost else EXIT_DRAIN_GRACE,
                             self._begin_end)
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._exit_status is not None and self.core.output_done:
            self._begin_end()

    def _begin_end(self) -> None:
        if self._finishing:
            return
        self._finishing = True
        self.core.stop_idle()
        self._end_task = self.loop.create_task(self._finish())

    def _peer_may_return(self, since: float) -> bool:
        """Whether the session's tail may still reach its client: it was heard from (or we
        were cut off from the broker ourselves) within the resume window. A client that
        sent CLOSE is not waiting for the tail: it gets the old short grace."""
        now = time.monotonic()
        if self.core.detached_at is not None:
            return False  # no client to take the tail; it is recorded
        if not self.conn.connected:
            self._cut_until = now
        heard = max(self.channel.last_heard or 0.0, self._cut_until, since)
        return now - heard < (CLOSE_ACK_TIMEOUT if self.channel.peer_closed else RESUME_WINDOW)

    async def _finish(self) -> None:
        # Everything read must be sent before EXIT; wait for credit if need be.
        since = time.monotonic()
        for r in self._readers:
            # A busy loop may not have read the last output yet. Bounded, in case a
            # background job that inherited the pipe or PTY keeps writing.
            self._read_into(r, len(self.core.outputs[r.stream].buf) + (1 << 20))
            self.core.output_eof(r.stream)
        # Output held for a required recording that is lost was never recorded, so it may not
        # be shown either: dropped at once, not after the deadline.
        while (self.core.output_pending and not self.core.recording_lost
               and self._peer_may_return(since)):
            self._send_buffered(final=True)
            if self.core.output_pending:
                await asyncio.sleep(0.01)
        code, sig = self._exit_status or (None, None)
        log.debug("%s: sending exit %s", self.topic_out, self._exit_status)
        self.core.finish(code, sig, time.monotonic())
        self._flush_channel()
        # Everything the process will ever say is in the channel now: its descriptors go,
        # while the tail waits (up to the resume window) for a client that may come back.
        self._release_process()
        if self.recording is not None:
            self.recording.finish()
        while not self.channel.all_acked and self._peer_may_return(since):
            await asyncio.sleep(0.02)
        log.debug("%s: finished, all acked: %s", self.topic_out, self.channel.all_acked)
        self.close_resources()

    def close_resources(self) -> None:
        if self._done:
            return
        self._done = True
        self._timer.cancel()
        self.core.stop_limits()
        if self._coalesce is not None:
            self._coalesce.cancel()
        self._release_process()
        self.on_done(self)

    def _release_process(self) -> None:
        """End the process if it still runs, and close every descriptor of it (once)."""
        for r in self._readers:
            self._pause(r)
        self._stop_writing()
        if self.proc is not None and not self._released:
            self._released = True
            if self._exit_status is None:
                self.loop.remove_reader(self.proc.pidfd)
                self._kill()
                with contextlib.suppress(Exception):
                    self.proc.proc.wait(timeout=KILL_GRACE)
            # Close through the owning objects only: a bare fd number may already have been
            # closed and reused by another session or socket.
            for f in (self.proc.proc.stdin, self.proc.proc.stdout, self.proc.proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
            for fd in (self.proc.master, self.proc.pidfd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.proc.master = self.proc.stdin = self.proc.stdout = self.proc.stderr = None
        self._input_fd = None

    # ----- attach -----

    def attach(self, topic_out: str, keys: SessionKeys, request: SessionRequest, who: str) -> None:
        """Another client takes the session over (docs/protocol.md §11): the earlier one,
        if any, is told and let go; the new one gets the recent output, then the rest."""
        now = time.monotonic()
        old, old_topic = self.channel, self.topic_out
        if self.core.detached_at is None and not old.closed:
            old.send(FrameType.NOTICE, b"detached: this session was attached from another client", now)
            old.close(now, DETACHED)
            for blob, qos in old.take_outgoing():
                self.conn.publish(old_topic, blob, qos)
        self.core.rebind(Channel(FrameCipher(keys.a2c, Direction.A2C),
                                 FrameCipher(keys.c2a, Direction.C2A),
                                 window_bytes=request.window, auto_consume=False), now, who)
        self.core.max_frame = request.max_frame
        self.topic_out = topic_out
        if self.proc is not None and not self._released and self.kind.traits.resizable:
            self.kind.resize(request.cols, request.rows)
            # Same size, no SIGWINCH from the kernel: a full-screen program redraws for this.
            self._signal(signal.SIGWINCH)  # to the foreground group
        log.info("session %s attached by %s on %s", self.sid, who, topic_out)
        self._send_buffered()
        self.on_change()

    def add_reader(self, key: str, topic: str, keys: SessionKeys, request: SessionRequest,
                   grant: Grant, who: str) -> None:
        """A watcher or joiner (docs/protocol.md §11): its own channel, read-only unless it
        joined. A moderator's watch starts a moderated session."""
        writes = grant.mode == "join"
        channel = Channel(FrameCipher(keys.a2c, Direction.A2C), FrameCipher(keys.c2a, Direction.C2A),
                          window_bytes=request.window, auto_consume=not writes)
        self._reader_topics[key] = topic
        self.core.add_reader(key, Reader(channel, who, writes=writes, moderator=grant.moderator),
                             time.monotonic())
        log.info("session %s: %s %s", self.sid, who, "joined" if writes else "watches")
        if self._awaiting_moderator and grant.moderator:
            self._start_now()
        self._send_buffered()
        self.on_change()

    def has_reader(self, key: str) -> bool:
        return key in self.core.readers

    def remove_reader(self, key: str, why: str) -> None:
        """Drop a watcher or joiner (its grant was revoked); everyone is told."""
        self.core.remove_reader(key, time.monotonic(), why)
        self._flush_channel()
        self.on_change()

    def on_reader_datagram(self, key: str, blob: bytes) -> None:
        now = time.monotonic()
        before = len(self.core.readers)
        self._handle(self.core.receive_reader(key, blob, now))
        self._after_input(now)
        if len(self.core.readers) != before:
            self.on_change()

    # ----- output -----

    def _resume(self, r: _Reader) -> None:
        if not r.reading and not self.core.outputs[r.stream].eof:
            r.reading = True
            self.loop.add_reader(r.fd, self._on_readable, r)

    def _pause(self, r: _Reader) -> None:
        if r.reading:
            r.reading = False
            self.loop.remove_reader(r.fd)

    def _read_into(self, r: _Reader, limit: int) -> int:
        """Read until nothing is left, EOF, or `limit` bytes are buffered; return the size
        of the last read (a full read means the program is producing in bulk)."""
        out = self.core.outputs[r.stream]
        last = 0
        while len(out.buf) < limit and not out.eof:
            try:
                chunk = os.read(r.fd, min(READ_SIZE, limit - len(out.buf)))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the PTY slave side is closed
                    log.debug("read error: %s", exc)
                chunk = b""
            if not chunk:
                self.core.output_eof(r.stream)
                self._pause(r)
                break
            self.core.feed_output(r.stream, chunk, time.monotonic())
            last = len(chunk)
        return last

    def _on_readable(self, r: _Reader) -> None:
        last = self._read_into(r, READ_SIZE)
        if self.core.should_flush(r.stream, last):
            self._send_buffered()
        elif self._coalesce is None:
            self._coalesce = self.loop.call_later(COALESCE_SECONDS, self._coalesce_due)
        if len(self.core.outputs[r.stream].buf) >= READ_SIZE:
            self._pause(r)
        self._maybe_end()

    def _coalesce_due(self) -> None:
        self._coalesce = None
        self._send_buffered()
        self._maybe_end()

    def _send_buffered(self, final: bool = False) -> None:
        self.core.send_output(time.monotonic(), backlogged=self.conn.backlogged, final=final)
        self._flush_channel()
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        backlogged = self.conn.backlogged
        for r in self._readers:
            if not self.core.may_read(r.stream, backlogged=backlogged):
                self._pause(r)
            elif not self._finishing:
                self._resume(r)
        if backlogged and self._drain_task is None:
            self._drain_task = self.loop.create_task(self._wait_drain())

    async def _wait_drain(self) -> None:
        await self.conn.drain()
        self._drain_task = None
        self._send_buffered()
        self._maybe_end()

    def _send(self, ftype: FrameType, payload: bytes) -> None:
        self.core.send(ftype, payload, time.monotonic())
        self._flush_channel()

    # ----- recording -----

    def _on_recording_progress(self) -> None:
        if self._done:
            return
        self._write_input()
        self.core.credit(time.monotonic())
        if not self._finishing:
            self._send_buffered()
        else:
            self._flush_channel()

    def _on_recording_silence(self, silent: float) -> None:
        assert self.recording is not None
        if self._done:
            return
        events = self.core.on_recording_silence(
            silent, required=self.recording.required, freeze_after=FREEZE_AFTER,
            end_after=END_AFTER, ending=self._finishing, now=time.monotonic())
        if Frozen() in events:
            log.warning("%s: recorder silent for %.0f s; session frozen", self.topic_out, silent)
        self._flush_channel()
        self._handle(events)

    def _flush_channel(self) -> None:
        for blob, qos in self.core.take_outgoing():
            self.conn.publish_frame(self.topic_out, blob, qos)
        for key, blob, qos in self.core.take_reader_outgoing():
            self.conn.publish_frame(self._reader_topics[key], blob, qos)
        if self._done:
            self._timer.arm(None)
            return
        channels = [self.channel, *(r.channel for r in self.core.readers.values())]
        due = [t for t in (*(c.next_deadline() for c in channels), self.core.next_wakeup())
               if t is not None]
        self._timer.arm(min(due) if due else None)

    def _on_timer(self) -> None:
        now = time.monotonic()
        self.channel.tick(now)
        for r in list(self.core.readers.values()):
            r.channel.tick(now)
        idle_due = self.core.idle_check_due
        holds = (self.kind.holds_terminal()
                 if idle_due is not None and now >= idle_due and self.proc is not None
                 and self.proc.master is not None else True)
        events = self.core.tick(now, holds)
        self._flush_channel()
        self._handle(events)

    def on_reconnect(self) -> None:
        self.channel.resend_all(time.monotonic())
        for r in self.core.readers.values():
            r.channel.resend_all(time.monotonic())
        self._flush_channel()

    # ----- input -----

    def on_datagram(self, blob: bytes) -> None:
        now = time.monotonic()
        self._handle(self.core.receive(blob, now))
        self._after_input(now)

    def _after_input(self, now: float) -> None:
        """Write what came in, credit it, and send what that made room for."""
        if not self._awaiting_moderator:  # held, not dropped, until the process runs
            self._write_input()
        self.core.credit(now)
        if not self._finishing:
            self._send_buffered()
        else:
            self._flush_channel()

    def _signal(self, signum: int) -> None:
        if signum not in {s.value for s in signal.Signals}:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.kind.signal_group(), signum)

    def _write_input(self) -> None:
        while (chunk := self.core.next_input(open_=self._input_fd is not None)) is not None:
            fd = self._input_fd
            assert fd is not None
            hidden = self.recording is not None and self.kind.input_hidden()
            try:
                n = os.write(fd, chunk)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self.loop.add_writer(fd, self._on_writable)
                return
            except OSError:
                self.core.input_dropped()  # the reader is gone; drop input like a closed pipe
                continue
            self.core.input_written(n, hidden=hidden)
        if self._input_fd is not None:
            self._stop_writing()
            if self.core.input_drained and self.kind.close_input():
                self._input_fd = None

    def _stop_writing(self) -> None:
        if self._writing and self._input_fd is not None:
            self.loop.remove_writer(self._input_fd)
        self._writing = False

    def _on_writable(self) -> None:
        self._write_input()
        self.core.credit(time.monotonic())
        self._flush_channel()
