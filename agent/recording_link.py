"""The agent's end of one session's recorder stream: the I/O around a RecordingSender.

It publishes what the sender produces, keeps its retransmit timer, routes the recorder's
acks back, and watches for silence. It outlives its session until the end manifest is
acked (or `DRAIN_TIMEOUT` passes), so the tail of a recording is not lost when the
process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tether.edge.deadline import DeadlineTimer
from tether.edge.mqtt import MqttConnection
from tether.grants import Grant
from tether.recevents import EventKind
from tether.recording import REC_WINDOW, RecordingSender, RecType, message_type

log = logging.getLogger("tether.agent.recording")

OPEN_TIMEOUT = 5.0  # a required recording must be acked this soon, or there is no session
FREEZE_AFTER = 10.0  # recorder silent this long: a required session freezes...
END_AFTER = 30.0  # ...and ends
OPTIONAL_STALL = 3.0  # an optional recording stops pacing the session after this silence
DRAIN_TIMEOUT = 120.0
WATCH_PERIOD = 0.5


class RecordingLink:
    def __init__(self, conn: MqttConnection, topic: str, sender: RecordingSender, grant: Grant) -> None:
        self.conn = conn
        self.topic = topic
        self.sender = sender
        self.grant = grant
        self.required = sender.required
        self.loop = asyncio.get_running_loop()
        self.on_progress: Callable[[], None] | None = None  # room in the window again
        self.on_opened: Callable[[str | None], None] | None = None  # None = ok, else refusal
        self.on_silence: Callable[[float], None] | None = None  # seconds the recorder owes us
        self._timer = DeadlineTimer(self.loop, self.flush)
        self._watch: asyncio.TimerHandle | None = self.loop.call_later(WATCH_PERIOD, self._check)
        self._opened_reported = False
        self.closed = False
        self._drain_deadline: float | None = None
        self._created = time.monotonic()
        self._flush_soon = False
        self._was_healthy = True

    # ----- what the session calls -----

    def room(self) -> int:
        """Bytes the recording lets the session send now.

        A healthy recorder paces every session, so nothing is dropped under load. An
        optional recording stops pacing once its recorder is silent for `OPTIONAL_STALL`
        (the sender then buffers, and drops with a recorded gap past its limit).
        """
        if not self.required and not self._healthy(time.monotonic()):
            return REC_WINDOW
        return max(0, REC_WINDOW - self.sender.unacked_bytes)

    def _healthy(self, now: float) -> bool:
        if self.sender.opened:
            return self.sender.silent_for(now) < OPTIONAL_STALL
        return now - self._created < OPTIONAL_STALL

    def record(self, kind: EventKind, data: bytes) -> None:
        self.sender.record(kind, data, time.monotonic())
        if not self._flush_soon:
            # After the current callback: the client's frame goes out first, and a burst
            # of small events leaves in one message.
            self._flush_soon = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_soon = False
        self.flush()

    def finish(self) -> None:
        self.sender.finish(time.monotonic())
        self._drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        self.flush()

    @property
    def silent_for(self) -> float:
        return self.sender.silent_for(time.monotonic())

    # ----- the wire -----

    def flush(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        for blob in self.sender.take_outgoing(now):
            kind, _ = message_type(blob)
            self.conn.publish(self.topic, blob, qos=1 if kind == RecType.OPEN else 0)
        self._timer.arm(self.sender.next_deadline())

    def on_reconnect(self) -> None:
        now = time.monotonic()
        self.sender.excuse_silence(now)
        self.sender.resend_all(now)
        self.flush()

    def on_message(self, blob: bytes) -> None:
        before = self.sender.unacked_bytes
        if not self.sender.on_message(blob, time.monotonic()):
            return
        if not self._opened_reported and (self.sender.opened or self.sender.refused is not None):
            self._opened_reported = True
            if self.on_opened is not None:
                self.on_opened(self.sender.refused)
        self.flush()
        if self.sender.unacked_bytes < before and self.on_progress is not None:
            self.on_progress()
        if self.sender.done:
            self.close()

    def _check(self) -> None:
        self._watch = None
        if self.closed:
            return
        now = time.monotonic()
        if self._drain_deadline is not None and now >= self._drain_deadline:
            log.warning("%s: the recorder never acked the end of the recording; giving up", self.topic)
            self.close()
            return
        if not self.conn.connected:
            # The agent is cut off, not the recorder: the session waits, it is not frozen
            # or ended for a silence nobody could break.
            self.sender.excuse_silence(now)
        if self.on_silence is not None:
            self.on_silence(self.sender.silent_for(now))
        healthy = self._healthy(now)
        if healthy != self._was_healthy:
            self._was_healthy = healthy
            if not healthy and not self.required:
                log.warning("%s: recorder silent; the session goes on and the gap is recorded", self.topic)
            if self.on_progress is not None:
                self.on_progress()
        self._watch = self.loop.call_later(WATCH_PERIOD, self._check)

    def close(self) -> None:
        if not self.closed and self.sender.resends:
            log.warning("%s: the recorder stream was resent %d times", self.topic, self.sender.resends)
        self.closed = True
        self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
