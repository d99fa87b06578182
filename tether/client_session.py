"""One client session, transport-free: grant request, handshake, then the reliable channel.

The Python twin of `SessionCore` in client/web/src/proto/session.mjs, method for method,
so the two read side by side. The caller owns MQTT, the clock and the timers and passes
them in: `publish(topic, payload, qos)`; `clock.wall()` (Unix s) and `clock.mono()` (s);
`timers.set(fn, seconds) -> handle` and `timers.clear(handle)`; `rand(n)` (n random bytes).
Nothing here reads a clock, the OS random source or a socket.

Output is handed to `on_output(payload, done, stderr)`: the frame's credit goes back to the
agent only once `done()` is called, so output is paced by what the caller has written.
Input is queued (`send_input`) and sent while the c2a window has room; it never waits
behind output. Everything else the caller learns is an event, a dict with a "type":
granted, accepted, exit, notice, peer-closed, agent-offline, agent-online, bad-status,
input-drained; a failure (authority-timeout, too-large, denied, error, revoked, offline,
refused, lost) carries a "message" for the user and is followed by closed.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from nacl.signing import SigningKey

from tether import authz
from tether.channel import DEFAULT_WINDOW_BYTES, KEEPALIVE, Channel
from tether.crypto import Random
from tether.display import safe
from tether.encoding import b64d, loads
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.handshake import HS_VERSION, ClientHandshake, HandshakeError, HandshakeRefused
from tether.presence import read_status
from tether.revocation import BulletinTracker
from tether.signed import BadDocument, peek_document
from tether.topics import A2C, C2A, Topics

AUTHORITY_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
STATUS_WAIT = 1.0  # how long a grant waits for the agent's retained status before trying anyway
# An agent cut off from the broker (a network cut, a broker restart) resumes its sessions
# when it is back; 90 s covers a cut of 60 s plus the reconnect backoff (at most 5 s).
OFFLINE_GRACE = 90.0
MAX_EARLY = 64
MAX_INPUT_QUEUE = 1 << 20

Event = dict[str, Any]
Publish = Callable[[str, bytes, int], None]
OnOutput = Callable[[bytes, Callable[[], None], bool], None]
OnEvent = Callable[[Event], None]


class Clock(Protocol):
    def wall(self) -> float: ...

    def mono(self) -> float: ...


class Timers(Protocol):
    def set(self, fn: Callable[[], None], seconds: float) -> object: ...

    def clear(self, handle: object) -> None: ...


def is_reason_required(error: object) -> bool:
    return re.search(r"reason is required", str(error or ""), re.IGNORECASE) is not None


def authority_timeout_message(broker: str) -> str:
    return (f"the authority did not answer within {AUTHORITY_TIMEOUT:.0f} s via the broker at {broker}. "
            "Is `tether up` (or `tether authority`) running? "
            "(It also ignores a user who sends too many requests at once: wait a minute.)")


def request_too_large_message(size: int) -> str:
    return (f"this request is {size} bytes, over the authority's limit of {authz.MAX_REQUEST_BYTES}; "
            "shorten the command or the reason")


def _nothing_out(_payload: bytes, done: Callable[[], None], _stderr: bool) -> None:
    done()


def _no_event(_evt: Event) -> None:
    return None


@dataclass
class _Delivered:
    seq: int
    done: bool = False


class ClientSessionCore:
    def __init__(self, *, user: str, key: SigningKey, slot: str, authority_ed25519: bytes,
                 authority_x25519: bytes, topics: Topics, agent: str, mode: str = "shell",
                 request: dict[str, Any] | None = None, publish: Publish, clock: Clock, timers: Timers,
                 publish_frame: Publish | None = None,
                 rand: Random, on_output: OnOutput = _nothing_out, on_event: OnEvent = _no_event,
                 sid: bytes | None = None, broker: str = "", status_wait: float = STATUS_WAIT) -> None:
        self.user, self.key, self.slot, self.agent, self.mode = user, key, slot, agent, mode
        self.authority_ed25519, self.authority_x25519 = authority_ed25519, authority_x25519
        self.topics, self.request = topics, dict(request or {})
        self.publish, self.clock, self.timers, self.rand = publish, clock, timers, rand
        # The channel's frames: the channel resends them after a reconnect, so a connection
        # may drop them while offline instead of queueing them (MqttConnection.publish_frame).
        self.publish_frame = publish_frame or publish
        self.on_output, self.on_event = on_output, on_event
        self.broker, self.status_wait = broker, status_wait
        self.sid = sid if sid is not None else rand(16)
        self.sid_hex = self.sid.hex()
        self.state = "new"  # new -> granting -> (status-wait) -> handshaking -> open -> closed
        self.pending: authz.PendingRequest | None = None
        self.hs: ClientHandshake | None = None
        self.channel: Channel | None = None
        self.agent_key: bytes | None = None
        self._agent_x: bytes | None = None
        self._grant: str | None = None
        self.status_raw: bytes | None = None
        self.bulletin = BulletinTracker(authority_ed25519)
        self.early: list[bytes] = []
        self.accepted: dict[str, Any] = {}
        self.exit: dict[str, int | None] = {"code": None, "signal": None}
        self.peer_close_reason = ""  # the agent's CLOSE payload: "detached" after a takeover
        self.input_queue: deque[bytes] = deque()
        self.input_queued = 0
        self._consume_queue: deque[_Delivered] = deque()
        self._close_when_consumed = False
        self._delivering = False
        self._timer: object | None = None
        self._timer_at = 0.0
        self._keepalive: object | None = None
        self._deadline: object | None = None
        self._offline: object | None = None

    def a2c_topic(self) -> str:
        return self.topics.session(self.agent, self.slot, self.sid_hex, A2C)

    def c2a_topic(self) -> str:
        return self.topics.session(self.agent, self.slot, self.sid_hex, C2A)

    def subscriptions(self) -> list[str]:
        """Subscribe to all of these (and wait for the SUBACKs) before start()."""
        return [self.topics.authz_reply(self.slot), self.topics.status(self.agent),
                self.topics.bulletin(), self.a2c_topic()]

    def start(self) -> None:
        body = {"type": "grant", "agent": self.agent, "mode": self.mode,
                "run_as": self.request.get("run_as"), "reason": self.request.get("reason"),
                "command": self.request.get("command")}
        if self.request.get("attach"):
            body["attach"] = self.request["attach"]  # a grant to take over that live session
        self.pending = authz.build_request(self.key, self.user, self.authority_x25519, body,
                                           self.clock.wall(), rand=self.rand)
        if len(self.pending.payload) > authz.MAX_REQUEST_BYTES:  # the authority would drop it unread
            self._fail("too-large", request_too_large_message(len(self.pending.payload)))
            return
        self.state = "granting"
        self.publish(self.topics.authz_request(self.slot), self.pending.payload, 1)
        self._deadline = self.timers.set(self._authority_timeout, AUTHORITY_TIMEOUT)

    def _authority_timeout(self) -> None:
        self._deadline = None
        message = authority_timeout_message(self.broker)
        # Both usually stop together (`tether up` runs both): say the one the user acts on.
        hint = self._status_hint_offline()
        if hint:
            message = (f"agent {self.agent!r} is offline, by its last status (unverified: "
                       f"the authority holds its key). {message}")
        self._fail("authority-timeout", message, offline_hint=hint)

    def _emit(self, evt: Event) -> None:
        self.on_event(evt)

    def _fail(self, kind: str, message: str, **extra: Any) -> None:
        if self.state == "closed":
            return
        self._stop()
        self._emit({"type": kind, "message": message, **extra})
        self._emit({"type": "closed", "exit": None})

    def _stop(self) -> None:
        self.state = "closed"
        for t in (self._deadline, self._timer, self._keepalive, self._offline):
            if t is not None:
                self.timers.clear(t)
        self._deadline = self._timer = self._keepalive = self._offline = None
        self.input_queue.clear()
        self.input_queued = 0

    # ----- incoming -----

    def on_message(self, topic: str, payload: bytes) -> None:
        if self.state == "closed":
            return
        if topic == self.topics.authz_reply(self.slot):
            self._on_reply(payload)
        elif topic == self.topics.status(self.agent):
            self._on_status(payload)
        elif topic == self.topics.bulletin():
            self.bulletin.offer(payload)
        elif topic == self.a2c_topic():
            if self.channel is not None:
                self._on_datagram(payload)
            elif self.state == "handshaking" and payload[:1] == bytes((HS_VERSION,)):
                self._on_handshake(payload)
            elif len(self.early) < MAX_EARLY:
                self.early.append(payload)

    def _on_reply(self, payload: bytes) -> None:
        if self.state != "granting" or self.pending is None:
            return
        try:
            doc = authz.open_reply(self.pending, self.authority_ed25519, payload)
        except authz.AuthzError:
            return  # opens with our key but is not the authority's: ignored
        if doc is None:
            return
        self._clear_deadline()
        if not doc.get("ok"):
            error = doc.get("error", "the authority refused")
            self._fail("denied", safe(error), reason_required=is_reason_required(error))
            return
        agent_info = doc.get("agent") or {}
        try:
            self.agent_key = b64d(str(agent_info["ed25519"]))
            self._agent_x = b64d(str(agent_info["x25519"]))
        except (KeyError, TypeError, ValueError):
            self._fail("error", f"agent {self.agent!r} has no session key registered")
            return
        revoked = self.bulletin.current.agent_refusal(self.agent, str(agent_info["ed25519"]))
        if revoked is not None:
            self._fail("revoked", safe(revoked))
            return
        self._grant = doc.get("grant")
        self._emit({"type": "granted", "grant": self._grant})
        if self.status_raw is not None:
            self._status_known()
        else:  # retained, so it is usually here already; a broker without retained state: try anyway
            self.state = "status-wait"
            self._deadline = self.timers.set(self._status_known, self.status_wait)

    def _status_known(self) -> None:
        self._clear_deadline()
        status = self._verified_status()
        if status is not None and not status.get("online"):
            self._fail("offline", f"agent {self.agent!r} is offline. `tether ls` shows which agents are online.")
            return
        assert self.agent_key is not None and self._agent_x is not None
        self.hs = ClientHandshake(client_key=self.key, agent_signing_key=self.agent_key,
                                  agent_x25519=self._agent_x, sid=self.sid,
                                  request=dict(self.request, grant=self._grant, mode=self.mode),
                                  rand=self.rand)
        self.state = "handshaking"
        self.publish(self.topics.handshake(self.agent, self.slot), self.hs.hello(self.clock.wall()), 1)
        self._deadline = self.timers.set(lambda: self._fail(
            "error", f"agent {self.agent!r} did not answer the handshake within {HANDSHAKE_TIMEOUT:.0f} s; "
            "`tether ls` shows whether it is online"), HANDSHAKE_TIMEOUT)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self.timers.clear(self._deadline)
            self._deadline = None

    def _on_handshake(self, msg: bytes) -> None:
        assert self.hs is not None
        try:
            confirm, keys = self.hs.on_reply(msg)
        except HandshakeRefused as exc:
            self._fail("refused", f"agent {self.agent!r} refused the session: {safe(exc)}")
            return
        except HandshakeError as exc:
            self._fail("error", f"handshake with {self.agent!r} failed: {safe(exc)}")
            return
        self._clear_deadline()
        self.accepted = self.hs.accepted
        window = self.request.get("window")
        self.channel = Channel(FrameCipher(keys.c2a, Direction.C2A), FrameCipher(keys.a2c, Direction.A2C),
                               window_bytes=int(window) if window else DEFAULT_WINDOW_BYTES, auto_consume=False)
        self.state = "open"
        self.publish(self.c2a_topic(), confirm, 1)
        self._emit({"type": "accepted", "extra": self.accepted, "recorded": self.accepted.get("recorded") is True})
        self._keepalive = self.timers.set(self._send_keepalive, KEEPALIVE)
        early, self.early = self.early, []
        for datagram in early:
            if self.state == "open":
                self._on_datagram(datagram)
        self._pump_input()
        self.flush()

    def _verified_status(self) -> dict[str, Any] | None:
        """The agent's retained status, if it carries the agent's signature."""
        if self.status_raw is None or self.agent_key is None:
            return None
        try:
            return read_status(self.status_raw, self.agent_key)
        except BadDocument:
            self._emit({"type": "bad-status"})
            return None

    def _status_hint_offline(self) -> bool:
        """Whether the retained status says offline, read without the agent's key (which
        only the authority's reply gives): a hint for an error message, never a decision."""
        if self.status_raw is None:
            return False
        try:
            return peek_document(self.status_raw).get("online") is False
        except BadDocument:
            return False

    def _on_status(self, payload: bytes) -> None:
        self.status_raw = payload
        if self.state == "status-wait":
            self._status_known()
            return
        status = self._verified_status()
        if self.channel is None or status is None:
            return
        if not status.get("online") and self._offline is None:
            self._emit({"type": "agent-offline", "grace": OFFLINE_GRACE})
            self._offline = self.timers.set(self._agent_gone, OFFLINE_GRACE)
        elif status.get("online") and self._offline is not None:
            self.timers.clear(self._offline)
            self._offline = None
            self._emit({"type": "agent-online"})

    def _agent_gone(self) -> None:
        self._offline = None
        self._emit({"type": "lost", "message": f"agent {self.agent!r} went offline"})
        self.close()

    def _on_datagram(self, payload: bytes) -> None:
        ch = self.channel
        assert ch is not None
        self._delivering = True  # output written at once is accounted for below, once
        try:
            self._deliver(ch.receive(payload, self.clock.mono()))
        finally:
            self._delivering = False
        if self.state != "open":
            return
        self._advance()
        self._pump_input()  # an ack may have opened the window for queued input
        self.flush()
        if ch.peer_closed:
            # Our CLOSE carries the final ack of everything the agent sent (once written).
            self._close_when_consumed = True
            self._maybe_finish()

    def _deliver(self, frames: list[Frame]) -> None:
        for f in frames:
            entry = _Delivered(f.seq)
            self._consume_queue.append(entry)
            if f.type in (FrameType.DATA, FrameType.STDERR):
                self.on_output(f.payload, partial(self._done, entry), f.type == FrameType.STDERR)
                continue
            entry.done = True
            if f.type == FrameType.EXIT:
                try:
                    doc = loads(f.payload)
                    self.exit = {"code": doc.get("code"), "signal": doc.get("signal")}
                except (ValueError, AttributeError):
                    self.exit = {"code": None, "signal": None}
                self._emit({"type": "exit", **self.exit})
            elif f.type == FrameType.NOTICE:
                self._emit({"type": "notice", "text": f.payload.decode(errors="replace")})
            elif f.type == FrameType.CLOSE:
                # "detached": another client attached the session (a NOTICE said so).
                self.peer_close_reason = f.payload.decode(errors="replace")
                self._emit({"type": "peer-closed", "reason": self.peer_close_reason})

    def _done(self, entry: _Delivered) -> None:
        if entry.done:
            return
        entry.done = True
        if self._delivering or self.state != "open" or self.channel is None:
            return
        self._advance()
        self.flush()
        self._maybe_finish()

    def _advance(self) -> None:
        assert self.channel is not None
        upto = 0
        while self._consume_queue and self._consume_queue[0].done:
            upto = self._consume_queue.popleft().seq
        if upto:
            self.channel.consume(upto, self.clock.mono())

    def _maybe_finish(self) -> None:
        if not self._close_when_consumed or self._consume_queue or self.state != "open":
            return
        self.close(local=False)

    # ----- outgoing -----

    def flush(self) -> None:
        ch = self.channel
        if ch is None:
            return
        for blob, qos in ch.take_outgoing():
            self.publish_frame(self.c2a_topic(), blob, qos)
        self._schedule(ch.next_deadline())

    def _schedule(self, deadline: float | None) -> None:
        if self.state == "closed":
            return
        if deadline is None:
            if self._timer is not None:
                self.timers.clear(self._timer)
            self._timer = None
            return
        if self._timer is not None and self._timer_at <= deadline:
            return  # it fires first; the tick then schedules whatever is due then
        if self._timer is not None:
            self.timers.clear(self._timer)
        self._timer_at = deadline
        self._timer = self.timers.set(self._tick, max(0.0, deadline - self.clock.mono()))

    def _tick(self) -> None:
        self._timer = None
        if self.channel is not None and self.state == "open":
            self.channel.tick(self.clock.mono())
            self._pump_input()
            self.flush()

    def _send_keepalive(self) -> None:
        self._keepalive = None
        if self.state != "open" or self.channel is None:
            return
        if not self.channel.closed:
            self.channel.keepalive(self.clock.mono())
            self.flush()
        self._keepalive = self.timers.set(self._send_keepalive, KEEPALIVE)

    def send_input(self, data: bytes) -> bool:
        """Keystrokes, pastes, piped stdin. False if dropped (the queue is full)."""
        if not data or self.state == "closed":
            return True
        if self.input_queued + len(data) > MAX_INPUT_QUEUE:
            return False
        self.input_queue.append(bytes(data))
        self.input_queued += len(data)
        if self.state == "open":
            self._pump_input()
            self.flush()
        return True

    def _pump_input(self) -> None:
        ch = self.channel
        assert ch is not None
        had = self.input_queued
        now = self.clock.mono()
        while self.input_queue and not ch.closed:
            room = min(ch.send_capacity(), MAX_PAYLOAD)
            if room <= 0:
                break
            head = self.input_queue[0]
            part = head[:room]
            if len(part) == len(head):
                self.input_queue.popleft()
            else:
                self.input_queue[0] = head[room:]
            self.input_queued -= len(part)
            ch.send(FrameType.DATA, part, now)
        if had and not self.input_queued:
            self._emit({"type": "input-drained"})

    def send_control(self, ftype: FrameType, payload: bytes = b"") -> None:
        """A frame other than input (RESIZE, SIGNAL, EOF): sent at once, after any input
        the window already has room for, so it keeps its place among what went out."""
        if self.state != "open" or self.channel is None or self.channel.closed:
            return
        self._pump_input()
        self.channel.send(ftype, payload, self.clock.mono())
        self.flush()

    def resize(self, cols: int, rows: int) -> None:
        self.send_control(FrameType.RESIZE, struct.pack(">HH", max(1, min(65535, cols)), max(1, min(65535, rows))))

    def signal(self, n: int) -> None:
        self.send_control(FrameType.SIGNAL, bytes((n,)))

    def eof(self) -> None:
        self.send_control(FrameType.EOF)

    def reconnected(self) -> None:
        """After an MQTT reconnect: resend what the agent has not received."""
        if self.state == "open" and self.channel is not None:
            self.channel.resend_all(self.clock.mono())
            self.flush()

    def close(self, *, local: bool = True, notify: bool = True, detach: bool = False,
              end: bool = False) -> None:
        """End the session: CLOSE to the agent (unless `notify` is off, e.g. no broker),
        carrying the final ack of everything the agent sent. `detach`: leave it running
        for a later `tether attach` (the agent ends it if its policy does not allow that).
        `end`: a moderator watching ends the session (anyone else just stops watching)."""
        ch = self.channel
        if notify and self.state == "open" and ch is not None and not ch.closed:
            now = self.clock.mono()
            ch.close(now, b"detach" if detach else b"end" if end else b"")
            ch.tick(now)
            self.flush()
        if self.state != "closed":
            self._stop()
            self._emit({"type": "closed", "exit": dict(self.exit), "local": local,
                        "reason": self.peer_close_reason})
