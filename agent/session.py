"""One live session on the agent: the bridge between a reliable channel and a process.

Output is read from the PTY master (or stdout/stderr pipes), coalesced for up to 2 ms or
64 KiB, cut only at UTF-8 boundaries and sent as frames. When the client's credit window
or the MQTT socket is full, reading stops, so the program blocks in write() exactly as it
would over SSH. Input is written in bounded pieces and credited back only once written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.agent.process import (
    Spawned,
    SpawnError,
    resolve_run_as,
    set_winsize,
    spawn_exec,
    spawn_shell,
)
from tether.agent.recording_link import END_AFTER, FREEZE_AFTER, RecordingLink
from tether.agent.request import SessionRequest
from tether.channel import Channel
from tether.edge.deadline import DeadlineTimer
from tether.edge.mqtt import MqttConnection
from tether.encoding import dumps
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.grants import Grant
from tether.handshake import SessionKeys
from tether.limits import clamp_geometry
from tether.recevents import EventKind

log = logging.getLogger("tether.agent.session")

READ_SIZE = 65536
DEFAULT_TERM = "xterm-256color"
COALESCE_SECONDS = 0.002
BULK_READ = 2048  # a read this large means more is coming: wait briefly to fill the frame
EXIT_DRAIN_GRACE = 2.0
CLOSE_ACK_TIMEOUT = 10.0
KILL_GRACE = 5.0
MAX_DURATION_WARNING = 60.0
DEFAULT_CLIENT_TIMEOUT = 300.0  # ten missed keepalives (tether.channel.KEEPALIVE)


def _span(seconds: float) -> str:
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


@dataclass
class _Output:
    fd: int
    ftype: FrameType
    buf: bytearray = field(default_factory=bytearray)
    eof: bool = False
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
        self.channel = Channel(
            FrameCipher(self.keys.a2c, Direction.A2C),
            FrameCipher(self.keys.c2a, Direction.C2A),
            window_bytes=self.request.window,
            auto_consume=False,
        )
        self.started = time.time()
        self.max_frame = self.request.max_frame
        self.proc: Spawned | None = None
        self._outputs: list[_Output] = []
        self._input: deque[tuple[int, bytearray]] = deque()
        self._input_fd: int | None = None
        self._writing = False
        self._stdin_eof = False
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        self._coalesce: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain_task: asyncio.Task[None] | None = None
        self._exit_status: tuple[int | None, int | None] | None = None
        self._finishing = False
        self._done = False
        self._end_task: asyncio.Task[None] | None = None
        self._limit_timer: asyncio.TimerHandle | None = None
        self._warn_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_io = time.monotonic()
        self._watchdog: asyncio.TimerHandle | None = None
        self._frozen = False  # a required recording stalled: no output, no input
        self._recording_lost = False  # ended for it: held output can never be sent
        self._input_hidden = False  # echo is off: input is not recorded

    # ----- lifecycle -----

    def start(self) -> None:
        """Start the process. Whatever fails, the session ends through the normal path, so
        its process, descriptors, slot and recording are all released."""
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
        req = self.request
        if self.grant.mode == "shell":
            self.proc = spawn_shell(run_as, req.term or DEFAULT_TERM, req.cols, req.rows, req.env)
            assert self.proc.master is not None
            self._outputs = [_Output(self.proc.master, FrameType.DATA)]
            self._input_fd = self.proc.master
        else:
            # Exactly the argv the authority bound into the grant (the service refused a
            # HELLO whose grant binds none, or whose command differs).
            if not self.grant.command:
                raise SpawnError("the grant names no command")
            self.proc = spawn_exec(run_as, self.grant.command, req.env)
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self._outputs = [
                _Output(self.proc.stdout, FrameType.DATA),
                _Output(self.proc.stderr, FrameType.STDERR),
            ]
            self._input_fd = self.proc.stdin
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
        for out in self._outputs:
            self._resume(out)
        self._limit_timer = self.loop.call_later(self.grant.max_duration, self._on_max_duration)
        warn_at = self.grant.max_duration - MAX_DURATION_WARNING
        if warn_at > 0:
            self._warn_timer = self.loop.call_later(warn_at, self._warn_max_duration)
        if self.grant.idle_timeout > 0 and self.proc.master is not None:
            self._idle_timer = self.loop.call_later(self._idle_period(), self._check_idle)
        self.channel.last_heard = time.monotonic()
        self._watchdog = self.loop.call_later(self.client_timeout / 4, self._check_client)

    def _check_client(self) -> None:
        silent = time.monotonic() - (self.channel.last_heard or 0.0)
        if silent >= self.client_timeout:
            log.warning("%s: client silent for %.0f s; ending the session", self.topic_out, silent)
            self.terminate(signal.SIGHUP)
            return
        self._watchdog = self.loop.call_later(self.client_timeout / 4, self._check_client)

    def _warn_max_duration(self) -> None:
        self._send(FrameType.NOTICE, f"this session ends in {MAX_DURATION_WARNING:.0f} s: it reaches "
                   f"its maximum duration of {_span(self.grant.max_duration)}".encode())

    def _on_max_duration(self) -> None:
        self._send(FrameType.NOTICE, f"session closed: maximum duration of "
                   f"{_span(self.grant.max_duration)} reached".encode())
        self.terminate(signal.SIGHUP)

    def _idle_period(self) -> float:
        return min(1.0, max(0.2, self.grant.idle_timeout / 4))

    def _shell_in_foreground(self) -> bool:
        """A long silent job is not idleness: only the shell waiting at its prompt is."""
        assert self.proc is not None and self.proc.master is not None
        try:
            return os.tcgetpgrp(self.proc.master) == self.proc.proc.pid
        except OSError:
            return False

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._finishing or self.proc is None or self.proc.master is None:
            return
        now = time.monotonic()
        if not self._shell_in_foreground():
            self._last_io = now  # the idle clock starts when the shell gets the terminal back
        elif now - self._last_io >= self.grant.idle_timeout:
            self._send(FrameType.NOTICE, f"session closed: idle for {_span(self.grant.idle_timeout)}"
                       .encode())
            self.terminate(signal.SIGHUP)
            return
        self._idle_timer = self.loop.call_later(self._idle_period(), self._check_idle)

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
        self.loop.call_later(0 if self._recording_lost else EXIT_DRAIN_GRACE, self._begin_end)
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._exit_status is not None and all(o.eof and not o.buf for o in self._outputs):
            self._begin_end()

    def _begin_end(self) -> None:
        if self._finishing:
            return
        self._finishing = True
        self._end_task = self.loop.create_task(self._finish())

    async def _finish(self) -> None:
        # Everything read must be sent before EXIT; wait for credit if need be.
        deadline = time.monotonic() + CLOSE_ACK_TIMEOUT
        for out in self._outputs:
            # A busy loop may not have read the last output yet. Bounded, in case a
            # background job that inherited the pipe or PTY keeps writing.
            self._read_into(out, len(out.buf) + (1 << 20))
            out.eof = True
        # Output held for a required recording that is lost was never recorded, so it may not
        # be shown either: dropped at once, not after the deadline.
        while (any(o.buf for o in self._outputs) and not self._recording_lost
               and time.monotonic() < deadline):
            self._send_buffered(final=True)
            if any(o.buf for o in self._outputs):
                await asyncio.sleep(0.01)
        code, sig = self._exit_status or (None, None)
        log.debug("%s: sending exit %s", self.topic_out, self._exit_status)
        exit_doc = dumps({"code": code, "signal": sig})
        self._send(FrameType.EXIT, exit_doc)
        self._record(EventKind.EXIT, exit_doc)
        if self.recording is not None:
            self.recording.finish()
        self.channel.close(time.monotonic())
        self._flush_channel()
        while not self.channel.all_acked and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.debug("%s: finished, all acked: %s", self.topic_out, self.channel.all_acked)
        self.close_resources()

    def close_resources(self) -> None:
        if self._done:
            return
        self._done = True
        self._timer.cancel()
        for handle in (self._coalesce, self._limit_timer, self._watchdog,
                       self._warn_timer, self._idle_timer):
            if handle is not None:
                handle.cancel()
        for out in self._outputs:
            self._pause(out)
        self._stop_writing()
        if self.proc is not None:
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
        self.on_done(self)

    # ----- output -----

    def _resume(self, out: _Output) -> None:
        if not out.reading and not out.eof:
            out.reading = True
            self.loop.add_reader(out.fd, self._on_readable, out)

    def _pause(self, out: _Output) -> None:
        if out.reading:
            out.reading = False
            self.loop.remove_reader(out.fd)

    def _read_into(self, out: _Output, limit: int) -> int:
        """Read until nothing is left, EOF, or `limit` bytes are buffered; return the size
        of the last read (a full read means the program is producing in bulk)."""
        last = 0
        while len(out.buf) < limit and not out.eof:
            try:
                chunk = os.read(out.fd, min(READ_SIZE, limit - len(out.buf)))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the PTY slave side is closed
                    log.debug("read error: %s", exc)
                chunk = b""
            if not chunk:
                out.eof = True
                self._pause(out)
                break
            out.buf += chunk
            last = len(chunk)
            self._last_io = time.monotonic()
        return last

    def _on_readable(self, out: _Output) -> None:
        last = self._read_into(out, READ_SIZE)
        if out.eof or len(out.buf) >= READ_SIZE or last < BULK_READ:
            self._send_buffered()
        elif self._coalesce is None:
            self._coalesce = self.loop.call_later(COALESCE_SECONDS, self._coalesce_due)
        if len(out.buf) >= READ_SIZE:
            self._pause(out)
        self._maybe_end()

    def _coalesce_due(self) -> None:
        self._coalesce = None
        self._send_buffered()
        self._maybe_end()

    def _send_buffered(self, final: bool = False) -> None:
        now = time.monotonic()
        for out in self._outputs:
            while out.buf:
                room = min(self.channel.send_capacity(), self.max_frame, self._recording_room())
                if room <= 0 or self.conn.backlogged:
                    break
                end = min(room, len(out.buf))
                if end == len(out.buf) and not (out.eof or final):
                    end -= utf8_tail_incomplete(out.buf)
                elif end < len(out.buf):
                    end = utf8_cut(out.buf, end)
                if end <= 0:
                    break
                chunk = bytes(out.buf[:end])
                self.channel.send(out.ftype, chunk, now)
                del out.buf[:end]
                self._record(EventKind.STDERR if out.ftype == FrameType.STDERR else EventKind.OUTPUT,
                             chunk)
        self._flush_channel()
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        blocked = (self.channel.send_capacity() <= 0 or self.conn.backlogged
                   or self._recording_room() <= 0)
        for out in self._outputs:
            if blocked or len(out.buf) >= READ_SIZE:
                self._pause(out)
            elif not self._finishing:
                self._resume(out)
        if self.conn.backlogged and self._drain_task is None:
            self._drain_task = self.loop.create_task(self._wait_drain())

    async def _wait_drain(self) -> None:
        await self.conn.drain()
        self._drain_task = None
        self._send_buffered()
        self._maybe_end()

    def _send(self, ftype: FrameType, payload: bytes) -> None:
        if not self.channel.closed:
            self.channel.send(ftype, payload, time.monotonic())
            self._flush_channel()
            if ftype == FrameType.NOTICE:
                self._record(EventKind.NOTICE, payload)
            elif ftype == FrameType.STDERR:
                self._record(EventKind.STDERR, payload)

    # ----- recording -----

    def _record(self, kind: EventKind, data: bytes) -> None:
        if self.recording is not None and not self.recording.closed:
            self.recording.record(kind, data)

    def _recording_room(self) -> int:
        if self.recording is None:
            return MAX_PAYLOAD
        return 0 if self._frozen else self.recording.room()

    def _on_recording_progress(self) -> None:
        if self._done:
            return
        self._write_input()
        self._credit_input(time.monotonic())
        if not self._finishing:
            self._send_buffered()
        else:
            self._flush_channel()

    def _on_recording_silence(self, silent: float) -> None:
        assert self.recording is not None
        if not self.recording.required or self._done:
            return
        if silent >= END_AFTER and not self._finishing:
            self._recording_lost = True
            self._send(FrameType.NOTICE, f"session closed: recording is required and the recorder "
                       f"has not acknowledged for {END_AFTER:.0f} s".encode())
            self.terminate(signal.SIGHUP)
        elif silent >= FREEZE_AFTER and not self._frozen:
            self._frozen = True
            log.warning("%s: recorder silent for %.0f s; session frozen", self.topic_out, silent)
            self._send(FrameType.NOTICE, f"recording stalled: the recorder has not acknowledged "
                       f"for {FREEZE_AFTER:.0f} s, so this session is frozen until it does (it "
                       f"ends after {END_AFTER:.0f} s)".encode())
            self._apply_backpressure()
        elif silent < FREEZE_AFTER and self._frozen:
            self._frozen = False
            self._send(FrameType.NOTICE, b"recording resumed: the session continues")
            self._on_recording_progress()

    def _echo_off(self) -> bool:
        """A password prompt: the line discipline collects a line but does not echo it.

        Readline, vim and other full-screen programs also turn ECHO off, but they read raw
        (ICANON off) and draw what is typed themselves, so their input is recorded.
        """
        if self.proc is None or self.proc.master is None:
            return False
        try:
            lflag = termios.tcgetattr(self.proc.master)[3]
        except termios.error:
            return False
        return not lflag & termios.ECHO and bool(lflag & termios.ICANON)

    def _record_input(self, data: bytes, hidden: bool) -> None:
        """`hidden` must be read before the write: the line discipline echoes (or not) as
        the bytes arrive, and the program may change the mode as soon as it has read them."""
        if self.recording is None:
            return
        if hidden != self._input_hidden:
            self._input_hidden = hidden
            self._record(EventKind.REDACTION, dumps({"hidden": hidden}))
        if not hidden:
            self._record(EventKind.INPUT, data)

    def _flush_channel(self) -> None:
        for blob, qos in self.channel.take_outgoing():
            self.conn.publish(self.topic_out, blob, qos)
        self._timer.arm(None if self._done else self.channel.next_deadline())

    def _on_timer(self) -> None:
        self.channel.tick(time.monotonic())
        self._flush_channel()

    def on_reconnect(self) -> None:
        self.channel.resend_all(time.monotonic())
        self._flush_channel()

    # ----- input -----

    def on_datagram(self, blob: bytes) -> None:
        now = time.monotonic()
        for frame in self.channel.receive(blob, now):
            self._on_frame(frame)
        self._write_input()
        self._credit_input(now)
        if not self._finishing:
            self._send_buffered()
        else:
            self._flush_channel()

    def _on_frame(self, frame: Frame) -> None:
        t = frame.type
        if t == FrameType.DATA:
            self._input.append((frame.seq, bytearray(frame.payload)))
            self._last_io = time.monotonic()
            return
        if t == FrameType.RESIZE and len(frame.payload) == 4 and self.proc and self.proc.master:
            # Any u16 pair arrives here; the PTY and the recording get a size every role accepts.
            cols, rows = clamp_geometry(*struct.unpack(">HH", frame.payload))
            with contextlib.suppress(OSError):
                set_winsize(self.proc.master, cols, rows)
            self._record(EventKind.RESIZE, struct.pack(">HH", cols, rows))
        elif t == FrameType.SIGNAL and len(frame.payload) == 1 and self.proc:
            self._signal(frame.payload[0])
        elif t == FrameType.EOF:
            self._stdin_eof = True
        elif t == FrameType.CLOSE:
            self.terminate(signal.SIGHUP)
        self._input.append((frame.seq, bytearray()))

    def _signal(self, signum: int) -> None:
        if signum not in {s.value for s in signal.Signals}:
            return
        assert self.proc is not None
        try:
            pgrp = os.tcgetpgrp(self.proc.master) if self.proc.master is not None else self.proc.proc.pid
        except OSError:
            pgrp = self.proc.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgrp, signum)

    def _write_input(self) -> None:
        fd = self._input_fd
        while self._input:
            _seq, data = self._input[0]
            if data and fd is None:
                data.clear()  # stdin is closed: input after EOF goes nowhere, as with a pipe
            if data and fd is not None:
                room = self._recording_room()
                if room <= 0:
                    self._stop_writing()
                    return  # recording comes first; _on_recording_progress resumes
                hidden = self.recording is not None and self._echo_off()
                try:
                    n = os.write(fd, data[:min(4096, room)])
                except BlockingIOError:
                    if not self._writing:
                        self._writing = True
                        self.loop.add_writer(fd, self._on_writable)
                    return
                except OSError:
                    data.clear()  # the reader is gone; drop input like a closed pipe
                    n = 0
                if n:
                    self._record_input(bytes(data[:n]), hidden)
                del data[:n]
                if data:
                    continue
            self._input.popleft()
        if self._input_fd is not None:
            self._stop_writing()
        if not self._input and self._stdin_eof and self.proc and self.proc.proc.stdin:
            self.proc.proc.stdin.close()
            self._input_fd = self.proc.stdin = None

    def _stop_writing(self) -> None:
        if self._writing and self._input_fd is not None:
            self.loop.remove_writer(self._input_fd)
        self._writing = False

    def _on_writable(self) -> None:
        self._write_input()
        self._credit_input(time.monotonic())
        self._flush_channel()

    def _credit_input(self, now: float) -> None:
        upto = self._input[0][0] - 1 if self._input else self.channel.delivered_seq
        self.channel.consume(upto, now)
