"""tether.client_session.ClientSessionCore, with simulated time: no broker, no clock, no
randomness from the OS. The authority and the agent are played with the real core pieces
(authz replies, the agent's handshake, a Channel), so every byte the core publishes is
opened and checked as its peer would."""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey

from tether import authz
from tether.channel import ACK_DELAY, KEEPALIVE, Channel
from tether.client_session import (
    AUTHORITY_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_INPUT_QUEUE,
    OFFLINE_GRACE,
    STATUS_WAIT,
    ClientSessionCore,
    Event,
)
from tether.crypto import x25519_public
from tether.encoding import b64e, dumps
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.handshake import AgentHandshake, PendingSession
from tether.presence import status_document
from tether.revocation import Revocations, sign_bulletin
from tether.topics import Topics

WALL0 = 1_700_000_000.0
SLOT = "alice.1"
AGENT = "web1"
BROKER = "127.0.0.1:1883"


class Rng:
    """Reproducible bytes: a hash chain, so a run can be repeated exactly."""

    def __init__(self, seed: bytes) -> None:
        self.state = seed

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self.state = hashlib.blake2b(self.state, digest_size=64).digest()
            out += self.state
        return out[:n]


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return WALL0 + self.now

    def mono(self) -> float:
        return self.now


class SimTimers:
    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.cancelled: set[int] = set()
        self.n = 0

    def set(self, fn: Callable[[], None], seconds: float) -> object:
        self.n += 1
        heapq.heappush(self.heap, (self.clock.now + seconds, self.n, fn))
        return self.n

    def clear(self, handle: object) -> None:
        assert isinstance(handle, int)
        self.cancelled.add(handle)

    def pending(self) -> int:
        return sum(1 for _, n, _ in self.heap if n not in self.cancelled)

    def advance_to(self, t: float) -> None:
        while self.heap and self.heap[0][0] <= t:
            at, n, fn = heapq.heappop(self.heap)
            if n in self.cancelled:
                continue
            self.clock.now = max(self.clock.now, at)
            fn()
        self.clock.now = max(self.clock.now, t)


class World:
    """One client core, its authority and its agent."""

    def __init__(self, request: dict[str, Any] | None = None, *, hold_output: bool = False,
                 seed: bytes = b"seed") -> None:
        rng = Rng(seed)
        self.user_key = SigningKey(rng(32))
        self.authority_key = SigningKey(rng(32))
        self.authority_x = rng(32)
        self.agent_key = SigningKey(rng(32))
        self.agent_x = rng(32)
        self.agent_rng = Rng(seed + b"agent")
        self.clock = SimClock()
        self.timers = SimTimers(self.clock)
        self.topics = Topics()
        self.published: list[tuple[str, bytes, int]] = []
        self.events: list[Event] = []
        self.output: list[tuple[bytes, bool]] = []
        self.held: list[Callable[[], None]] = []
        self.hold_output = hold_output
        self.core = ClientSessionCore(
            user="alice", key=self.user_key, slot=SLOT,
            authority_ed25519=bytes(self.authority_key.verify_key),
            authority_x25519=x25519_public(self.authority_x), topics=self.topics, agent=AGENT,
            mode="shell", request=request if request is not None else {"term": "xterm", "cols": 80, "rows": 24},
            publish=lambda t, p, q: self.published.append((t, p, q)), clock=self.clock,
            timers=self.timers, rand=rng, on_output=self._output, on_event=self.events.append,
            broker=BROKER,
        )
        self.agent_ch: Channel | None = None
        self.pending: PendingSession | None = None
        self._seen = 0  # c2a publishes the agent has read

    def _output(self, payload: bytes, done: Callable[[], None], stderr: bool) -> None:
        self.output.append((payload, stderr))
        if self.hold_output:
            self.held.append(done)
        else:
            done()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def event(self, kind: str) -> Event:
        found = [e for e in self.events if e["type"] == kind]
        assert len(found) == 1, self.events
        return found[0]

    def on(self, topic: str) -> list[tuple[bytes, int]]:
        return [(p, q) for t, p, q in self.published if t == topic]

    def advance(self, dt: float) -> None:
        self.timers.advance_to(self.clock.now + dt)

    # ----- the authority -----

    def status(self, online: bool, key: SigningKey | None = None) -> None:
        blob = status_document(key or self.agent_key, online, self.clock.wall())
        self.core.on_message(self.topics.status(AGENT), blob)

    def grant_request(self) -> dict[str, Any]:
        (payload, qos), = self.on(self.topics.authz_request(SLOT))
        assert qos == 1
        user, blob = authz.open_request_envelope(self.authority_x, payload)
        assert user == "alice"
        return authz.verify_request(bytes(self.user_key.verify_key), blob, self.clock.wall())

    def authority_answers(self, body: dict[str, Any] | None = None, signer: SigningKey | None = None) -> None:
        doc = self.grant_request()
        if body is None:
            body = {"ok": True, "grant": "v4.public.token",
                    "agent": {"ed25519": b64e(bytes(self.agent_key.verify_key)),
                              "x25519": b64e(x25519_public(self.agent_x))}}
        reply = authz.build_reply(signer or self.authority_key, doc, body, os.urandom)
        self.core.on_message(self.topics.authz_reply(SLOT), reply)

    # ----- the agent -----

    def hello(self) -> bytes:
        (hello, qos), = self.on(self.topics.handshake(AGENT, SLOT))
        assert qos == 1
        return hello

    def agent_accepts(self, extra: dict[str, Any] | None = None) -> None:
        hs = AgentHandshake(self.agent_key, self.agent_x, rand=self.agent_rng)
        opened = hs.open_hello(self.hello(), self.clock.wall())
        assert opened.body["grant"] == "v4.public.token" and opened.body["mode"] == "shell"
        self.pending = hs.accept(opened, extra or {"run_as": "alice"})
        self.core.on_message(self.core.a2c_topic(), self.pending.accept)
        confirm, qos = self.on(self.core.c2a_topic())[0]  # input typed meanwhile may follow it
        assert qos == 1
        keys = self.pending.on_confirm(confirm)
        self._seen = 1
        self.agent_ch = Channel(FrameCipher(keys.a2c, Direction.A2C), FrameCipher(keys.c2a, Direction.C2A))

    def agent_refuses(self, reason: str) -> None:
        hs = AgentHandshake(self.agent_key, self.agent_x, rand=self.agent_rng)
        self.core.on_message(self.core.a2c_topic(), hs.open_hello(self.hello(), self.clock.wall()).refuse(reason))

    def open(self, extra: dict[str, Any] | None = None) -> None:
        self.status(True)
        self.core.start()
        self.authority_answers()
        self.agent_accepts(extra)
        assert self.core.state == "open"

    def agent_send(self, ftype: FrameType, payload: bytes = b"") -> None:
        assert self.agent_ch is not None
        self.agent_ch.send(ftype, payload, self.clock.now)
        self.agent_flush()

    def agent_flush(self) -> None:
        assert self.agent_ch is not None
        self.agent_ch.tick(self.clock.now)
        for blob, _qos in self.agent_ch.take_outgoing():
            self.core.on_message(self.core.a2c_topic(), blob)

    def agent_reads(self) -> list[Frame]:
        """What the client sent since last time, through the agent's channel."""
        assert self.agent_ch is not None
        sent = self.on(self.core.c2a_topic())
        frames: list[Frame] = []
        for blob, _qos in sent[self._seen:]:
            frames.extend(self.agent_ch.receive(blob, self.clock.now))
        self._seen = len(sent)
        return frames


# ----- grant request -> handshake -> data -> close -----


def test_grant_handshake_data_close() -> None:
    w = World()
    w.status(True)
    assert w.core.subscriptions() == [w.topics.authz_reply(SLOT), w.topics.status(AGENT), w.topics.bulletin(),
                                      w.core.a2c_topic()]
    w.core.start()
    req = w.grant_request()
    assert (req["type"], req["agent"], req["mode"], req["ts"]) == ("grant", AGENT, "shell", WALL0)
    assert w.core.state == "granting" and w.on(w.topics.handshake(AGENT, SLOT)) == []
    w.advance(0.5)
    w.authority_answers()
    assert w.types() == ["granted"] and w.event("granted")["grant"] == "v4.public.token"
    assert w.core.state == "handshaking"
    w.agent_accepts({"run_as": "alice", "recorded": True})
    assert w.types() == ["granted", "accepted"]
    assert w.event("accepted")["recorded"] is True and w.core.accepted["run_as"] == "alice"

    assert w.core.send_input(b"ls\n")
    w.core.resize(100, 30)
    got = w.agent_reads()
    assert [(f.type, f.payload) for f in got] == [(FrameType.DATA, b"ls\n"),
                                                 (FrameType.RESIZE, b"\x00\x64\x00\x1e")]

    w.agent_send(FrameType.DATA, b"out")
    w.agent_send(FrameType.STDERR, b"err")
    w.agent_send(FrameType.NOTICE, b"recording frozen\xff")
    w.agent_send(FrameType.EXIT, dumps({"code": 3, "signal": None}))
    assert w.output == [(b"out", False), (b"err", True)]
    assert w.event("notice")["text"] == "recording frozen\ufffd"
    assert w.event("exit") == {"type": "exit", "code": 3, "signal": None}
    assert "closed" not in w.types()
    w.agent_send(FrameType.CLOSE)
    assert w.types()[-2:] == ["peer-closed", "closed"]
    assert w.event("closed") == {"type": "closed", "exit": {"code": 3, "signal": None}, "local": False,
                                 "reason": ""}
    # The client's CLOSE carries the final ack: the agent holds nothing unacknowledged.
    assert [f.type for f in w.agent_reads()] == [FrameType.CLOSE]
    assert w.agent_ch is not None and w.agent_ch.all_acked and w.agent_ch.send_capacity() == w.agent_ch.window_bytes
    assert w.core.state == "closed" and w.timers.pending() == 0
    w.core.send_input(b"late")  # after the end: dropped, nothing published
    w.core.close()
    assert w.agent_reads() == [] and w.types().count("closed") == 1


def test_local_close_sends_close_and_stops_every_timer() -> None:
    w = World()
    w.open()
    w.agent_send(FrameType.DATA, b"x")
    w.core.close()
    frames = w.agent_reads()
    assert frames[-1].type == FrameType.CLOSE and w.agent_ch is not None and w.agent_ch.all_acked
    assert w.event("closed")["local"] is True and w.timers.pending() == 0


def test_close_without_notify_sends_nothing() -> None:
    w = World()
    w.open()
    before = len(w.published)
    w.core.close(notify=False)
    assert len(w.published) == before and w.types()[-1] == "closed" and w.timers.pending() == 0


def test_early_datagrams_wait_for_the_channel() -> None:
    """What arrives on the session topic before the handshake is held (at most 64) and
    goes through the channel once it exists; a handshake message from before the HELLO
    is not taken for the reply."""
    w = World()
    w.status(True)
    w.core.start()
    w.core.on_message(w.core.a2c_topic(), bytes((0x81, 4)) + w.core.sid + bytes(40))  # a stale REFUSE
    for _ in range(70):
        w.core.on_message(w.core.a2c_topic(), b"\x01early")
    assert len(w.core.early) == 64
    w.authority_answers()
    w.agent_accepts()
    assert w.core.state == "open" and w.core.channel is not None
    assert w.core.channel.stats.bad_frames == 64 and w.core.early == [] and w.output == []


# ----- keepalives -----


def test_keepalive_every_30_s_while_idle() -> None:
    w = World()
    w.open()
    topic = w.core.c2a_topic()
    start = len(w.on(topic))
    w.advance(KEEPALIVE - 0.01)
    assert len(w.on(topic)) == start
    w.advance(0.01)
    acks = w.on(topic)[start:]
    assert len(acks) == 1 and acks[0][1] == 0
    assert [f for f in w.agent_reads()] == []  # an ACK frame: no reliable frame delivered
    assert w.agent_ch is not None and w.agent_ch.last_heard == pytest.approx(KEEPALIVE)
    w.advance(KEEPALIVE)
    assert len(w.on(topic)) == start + 2
    w.core.close()
    after_close = len(w.on(topic))
    w.advance(10 * KEEPALIVE)
    assert len(w.on(topic)) == after_close and w.timers.pending() == 0


# ----- the authority: timeout, the offline hint, refusals -----


def test_authority_timeout_at_10_s() -> None:
    w = World()
    w.core.start()
    w.advance(AUTHORITY_TIMEOUT - 0.01)
    assert w.events == []
    w.advance(0.01)
    assert w.types() == ["authority-timeout", "closed"]
    evt = w.event("authority-timeout")
    assert evt["offline_hint"] is False
    assert evt["message"].startswith(f"the authority did not answer within 10 s via the broker at {BROKER}.")
    assert w.timers.pending() == 0


def test_authority_timeout_says_the_agent_is_offline_by_its_status() -> None:
    w = World()
    w.status(False)  # read without the agent's key (only the authority's reply gives it)
    w.core.start()
    w.advance(AUTHORITY_TIMEOUT)
    evt = w.event("authority-timeout")
    assert evt["offline_hint"] is True
    assert evt["message"].startswith("agent 'web1' is offline, by its last status (unverified")
    assert "the authority did not answer" in evt["message"]


@pytest.mark.parametrize("status", [b"not a document", None])
def test_no_offline_hint_without_an_offline_status(status: bytes | None) -> None:
    w = World()
    if status is not None:
        w.core.on_message(w.topics.status(AGENT), status)
    else:
        w.status(True)
    w.core.start()
    w.advance(AUTHORITY_TIMEOUT)
    assert w.event("authority-timeout")["offline_hint"] is False


def test_a_reply_not_signed_by_the_authority_is_ignored() -> None:
    w = World()
    w.status(True)
    w.core.start()
    w.authority_answers(signer=SigningKey(b"\x07" * 32))
    assert w.events == [] and w.core.state == "granting"
    w.core.on_message(w.topics.authz_reply(SLOT), b"junk")
    w.advance(AUTHORITY_TIMEOUT)
    assert w.types() == ["authority-timeout", "closed"]


def test_denied_is_escaped_and_says_when_a_reason_is_required() -> None:
    w = World()
    w.core.start()
    w.authority_answers({"ok": False, "error": "a reason is required\x1b]0;pwned\x07"})
    evt = w.event("denied")
    assert evt["reason_required"] is True and "\x1b" not in evt["message"]
    assert evt["message"].startswith("a reason is required") and "\\x1b]0;pwned\\x07" in evt["message"]
    assert w.types() == ["denied", "closed"] and w.timers.pending() == 0
    w2 = World()
    w2.core.start()
    w2.authority_answers({"ok": False})
    assert w2.event("denied") == {"type": "denied", "message": "the authority refused", "reason_required": False}


def test_an_agent_without_keys_is_an_error() -> None:
    w = World()
    w.core.start()
    w.authority_answers({"ok": True, "grant": "g", "agent": {"ed25519": "x"}})
    assert w.event("error")["message"] == "agent 'web1' has no session key registered"


def test_a_revoked_agent_is_refused_by_the_bulletin() -> None:
    w = World()
    revs = Revocations(serial=1, agents={AGENT: {"reason": "stolen"}})
    w.core.on_message(w.topics.bulletin(), sign_bulletin(w.authority_key, revs))
    w.core.start()
    w.authority_answers()
    assert w.event("revoked")["message"] == "agent 'web1' has been revoked by the authority (stolen)"
    assert w.on(w.topics.handshake(AGENT, SLOT)) == []


def test_a_request_over_the_authority_limit_is_not_sent() -> None:
    w = World({"command": ["x" * authz.MAX_REQUEST_BYTES]})
    w.core.start()
    evt = w.event("too-large")
    assert f"over the authority's limit of {authz.MAX_REQUEST_BYTES}" in evt["message"]
    assert w.published == [] and w.timers.pending() == 0


def test_offline_by_its_signed_status_after_the_grant() -> None:
    w = World()
    w.status(False)
    w.core.start()
    w.authority_answers()
    assert w.event("offline")["message"] == "agent 'web1' is offline. `tether ls` shows which agents are online."
    assert w.on(w.topics.handshake(AGENT, SLOT)) == []


def test_a_status_signed_by_someone_else_does_not_count() -> None:
    w = World()
    w.status(False, key=SigningKey(b"\x05" * 32))
    w.core.start()
    w.authority_answers()
    assert "bad-status" in w.types() and "offline" not in w.types()
    assert len(w.on(w.topics.handshake(AGENT, SLOT))) == 1


def test_without_a_status_the_handshake_waits_1_s_for_one() -> None:
    w = World()
    w.core.start()
    w.authority_answers()
    assert w.core.state == "status-wait"
    w.advance(STATUS_WAIT - 0.01)
    assert w.on(w.topics.handshake(AGENT, SLOT)) == []
    w.advance(0.01)
    assert len(w.on(w.topics.handshake(AGENT, SLOT))) == 1  # none came: try anyway
    w2 = World()
    w2.core.start()
    w2.authority_answers()
    w2.advance(0.3)
    w2.status(True)  # arrives within the wait: the handshake starts at once
    assert w2.core.state == "handshaking" and len(w2.on(w2.topics.handshake(AGENT, SLOT))) == 1
    w3 = World()
    w3.core.start()
    w3.authority_answers()
    w3.status(False)
    assert w3.types() == ["granted", "offline", "closed"]


def test_agent_refusal_and_handshake_timeout() -> None:
    w = World()
    w.status(True)
    w.core.start()
    w.authority_answers()
    w.agent_refuses("user 'alice' has been revoked\x1b[2J")
    evt = w.event("refused")
    assert evt["message"] == "agent 'web1' refused the session: user 'alice' has been revoked\\x1b[2J"
    w2 = World()
    w2.status(True)
    w2.core.start()
    w2.authority_answers()
    w2.advance(HANDSHAKE_TIMEOUT - 0.01)
    assert "error" not in w2.types()
    w2.advance(0.01)
    assert w2.event("error")["message"] == (
        "agent 'web1' did not answer the handshake within 10 s; `tether ls` shows whether it is online")
    assert w2.timers.pending() == 0


def test_a_broken_accept_fails_the_handshake() -> None:
    w = World()
    w.status(True)
    w.core.start()
    w.authority_answers()
    hello = w.hello()
    w.core.on_message(w.core.a2c_topic(), bytes((0x81, 2)) + hello[2:18] + bytes(200))
    assert w.event("error")["message"].startswith("handshake with 'web1' failed: ")


# ----- the agent going offline during a session -----


def test_offline_agent_is_lost_after_the_grace() -> None:
    w = World()
    w.open()
    w.status(False)
    assert w.event("agent-offline")["grace"] == OFFLINE_GRACE
    w.advance(OFFLINE_GRACE - 0.01)
    assert "lost" not in w.types()
    w.advance(0.01)
    assert w.event("lost")["message"] == "agent 'web1' went offline"
    assert w.types()[-1] == "closed" and w.core.state == "closed"
    assert w.agent_reads()[-1].type == FrameType.CLOSE  # told, in case it is only its status that flapped


def test_back_online_within_the_grace_keeps_the_session() -> None:
    w = World()
    w.open()
    w.status(False)
    w.advance(OFFLINE_GRACE / 2)
    w.status(True)
    w.advance(OFFLINE_GRACE)
    assert "agent-online" in w.types() and "lost" not in w.types() and w.core.state == "open"


# ----- flow control -----


def test_output_credit_returns_only_when_written() -> None:
    w = World(hold_output=True)
    w.open()
    assert w.agent_ch is not None
    window = w.agent_ch.window_bytes
    for _ in range(4):
        w.agent_send(FrameType.DATA, b"o" * MAX_PAYLOAD)
    sent = 4 * MAX_PAYLOAD
    w.advance(1.0)
    w.agent_reads()
    assert w.agent_ch.send_capacity() == window - sent  # received, not written: no credit
    for done in w.held:
        done()
    w.advance(ACK_DELAY)
    w.agent_reads()
    assert w.agent_ch.send_capacity() == window


def test_peer_close_waits_for_the_output_to_be_written() -> None:
    w = World(hold_output=True)
    w.open()
    w.agent_send(FrameType.DATA, b"last words")
    w.agent_send(FrameType.CLOSE)
    assert "peer-closed" in w.types() and "closed" not in w.types()
    w.held[0]()
    assert w.types()[-1] == "closed"
    assert w.agent_reads()[-1].type == FrameType.CLOSE and w.agent_ch is not None and w.agent_ch.all_acked


def test_input_waits_for_credit_and_control_frames_do_not() -> None:
    window = 3 * MAX_PAYLOAD
    w = World({"window": window})
    w.open()
    data = bytes(range(256)) * (5 * MAX_PAYLOAD // 256 + 1)
    assert w.core.send_input(data)
    assert w.core.input_queued == len(data) - window
    w.core.signal(2)  # Ctrl-C is not stuck behind a paste the agent has no room for
    got = w.agent_reads()
    assert [f.type for f in got] == [FrameType.DATA] * 3 + [FrameType.SIGNAL]
    assert all(len(f.payload) <= MAX_PAYLOAD for f in got) and got[-1].payload == b"\x02"
    received = b"".join(f.payload for f in got if f.type == FrameType.DATA)
    while w.core.input_queued:
        w.advance(ACK_DELAY)
        w.agent_flush()  # the agent's ack frees credit; the core sends more at once
        received += b"".join(f.payload for f in w.agent_reads() if f.type == FrameType.DATA)
    received += b"".join(f.payload for f in w.agent_reads() if f.type == FrameType.DATA)
    assert received == data
    assert w.types().count("input-drained") == 1


def test_input_queue_is_bounded_and_input_before_open_waits() -> None:
    w = World()
    assert w.core.send_input(b"typed early")
    assert not w.core.send_input(b"x" * MAX_INPUT_QUEUE)
    w.open()
    assert [(f.type, f.payload) for f in w.agent_reads()] == [(FrameType.DATA, b"typed early")]


def test_reconnect_resends_what_the_agent_has_not_received() -> None:
    w = World()
    w.open()
    w.core.send_input(b"lost in the broker")
    lost = w.on(w.core.c2a_topic())[-1]
    w._seen = len(w.on(w.core.c2a_topic()))  # the broker dropped it
    w.core.reconnected()
    again = w.on(w.core.c2a_topic())[w._seen:]
    assert lost in again
    assert [(f.type, f.payload) for f in w.agent_reads()] == [(FrameType.DATA, b"lost in the broker")]


def test_same_randomness_same_bytes() -> None:
    """The core's only sources of randomness and time are its parameters: the same ones
    give the same session id and byte for byte the same HELLO."""
    runs = []
    for _ in range(2):
        w = World(seed=b"fixed")
        w.status(True)
        w.core.start()
        w.advance(0.25)
        w.authority_answers()
        runs.append((w.core.sid, w.hello()))
    assert runs[0] == runs[1]
    assert World(seed=b"other").core.sid != runs[0][0]
