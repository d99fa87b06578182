"""The client end of one session: grant, handshake, then the reliable channel."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.channel import KEEPALIVE, Channel
from tether.client.connect import (
    AuthorityTimeout,
    ClientError,
    GrantRequester,
    Slot,
    acquire_slot,
    connect,
)
from tether.display import safe
from tether.edge.deadline import DeadlineTimer
from tether.edge.keys import Identity
from tether.edge.mqtt import MqttConnection
from tether.encoding import b64d, loads
from tether.frames import MAX_PAYLOAD, Direction, Frame, FrameCipher, FrameType
from tether.handshake import ClientHandshake, HandshakeError, HandshakeRefused
from tether.presence import read_status
from tether.revocation import BulletinTracker
from tether.signed import BadDocument, peek_document
from tether.topics import A2C, C2A, Topics

log = logging.getLogger("tether.client")
HANDSHAKE_TIMEOUT = 10.0
STATUS_WAIT = 1.0
OFFLINE_GRACE = 20.0


@dataclass
class ExitStatus:
    code: int | None = None
    signal: int | None = None

    @property
    def shell_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 255


@dataclass
class ClientSession:
    identity: Identity
    agent: str
    mode: str
    request: dict[str, Any]
    on_frame: Callable[[Frame], None]
    topics: Topics = field(default_factory=Topics)

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sid = os.urandom(16)
        self.slot: Slot | None = None
        self.conn: MqttConnection | None = None
        self.channel: Channel | None = None
        self._hs: ClientHandshake | None = None
        self._grants: GrantRequester | None = None
        self._reply: asyncio.Future[bytes] | None = None
        self._status_raw: bytes | None = None
        self._status_seen = asyncio.Event()
        self._agent_key: bytes | None = None
        self._timer = DeadlineTimer(self.loop, self._tick)
        self._offline_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._early: list[bytes] = []
        self.exit = ExitStatus()
        self.closed = asyncio.Event()
        self.capacity = asyncio.Event()
        self.lost: str | None = None
        self.accepted: dict[str, Any] = {}
        self.bulletin = BulletinTracker(b64d(self.identity.authority.get("ed25519", "")))

    def _topic(self, leg: str) -> str:
        assert self.slot is not None
        return self.topics.session(self.agent, self.slot.name, self.sid.hex(), leg)

    async def open(self) -> None:
        self.slot = acquire_slot(self.identity)
        self.conn = await connect(self.identity, self.slot, self._on_message)
        self.conn.on_connected.append(self._on_reconnected)
        self._grants = GrantRequester(self.identity, self.conn, self.slot, self.topics)
        await self._grants.subscribe()
        self.conn.subscribe(self.topics.status(self.agent), 1)
        # Retained, so it arrives right after this SUBACK: before the grant reply below.
        await self.conn.subscribe_confirmed(self.topics.bulletin(), 1)
        await self.conn.subscribe_confirmed(self._topic(A2C), 1)
        body = {"type": "grant", "agent": self.agent, "mode": self.mode,
                "run_as": self.request.get("run_as"), "reason": self.request.get("reason"),
                "command": self.request.get("command")}
        try:
            reply = await self._grants.request(body)
        except AuthorityTimeout as exc:
            # Both usually stop together (`tether up` runs both): say the one the user acts on.
            if self._status_hint_offline():
                raise ClientError(f"agent {self.agent!r} is offline, by its last status (unverified: "
                                f"the authority holds its key). {exc}") from None
            raise
        if not reply.get("ok"):
            raise ClientError(safe(reply.get("error", "the authority refused")))
        agent_info = reply.get("agent") or {}
        try:
            self._agent_key = b64d(str(agent_info["ed25519"]))
            agent_x = b64d(str(agent_info["x25519"]))
        except (KeyError, ValueError) as exc:
            raise ClientError(f"agent {self.agent!r} has no session key registered") from exc
        revoked = self.bulletin.current.agent_refusal(self.agent, str(agent_info["ed25519"]))
        if revoked is not None:
            raise ClientError(safe(revoked))
        await self._check_online()
        self._hs = ClientHandshake(
            client_key=self.identity.signing_key, agent_signing_key=self._agent_key,
            agent_x25519=agent_x, sid=self.sid,
            request=dict(self.request, grant=reply["grant"], mode=self.mode), rand=os.urandom,
        )
        self._reply = self.loop.create_future()
        self.conn.publish(self.topics.handshake(self.agent, self.slot.name), self._hs.hello(time.time()), qos=1)
        try:
            msg = await asyncio.wait_for(self._reply, HANDSHAKE_TIMEOUT)
            confirm, keys = self._hs.on_reply(msg)
        except TimeoutError:
            raise ClientError(
                f"agent {self.agent!r} did not answer the handshake within {HANDSHAKE_TIMEOUT:.0f} s; "
                "`tether ls` shows whether it is online"
            ) from None
        except HandshakeRefused as exc:
            raise ClientError(f"agent {self.agent!r} refused the session: {safe(exc)}") from None
        except HandshakeError as exc:
            raise ClientError(f"handshake with {self.agent!r} failed: {safe(exc)}") from None
        self.accepted = self._hs.accepted
        self.channel = Channel(FrameCipher(keys.c2a, Direction.C2A), FrameCipher(keys.a2c, Direction.A2C))
        self.conn.publish(self._topic(C2A), confirm, qos=1)
        self.capacity.set()
        self._keepalive = self.loop.call_later(KEEPALIVE, self._send_keepalive)
        for early in self._early:
            self._on_datagram(early)
        self._early.clear()

    async def _check_online(self) -> None:
        try:
            await asyncio.wait_for(self._status_seen.wait(), STATUS_WAIT)
        except TimeoutError:
            return  # no status retained (e.g. a broker without retained state): just try
        status = self._verified_status()
        if status is not None and not status.get("online"):
            raise ClientError(f"agent {self.agent!r} is offline. `tether ls` shows which agents are online.")

    def _status_hint_offline(self) -> bool:
        """Whether the retained status says offline, read without the agent's key (which
        only the authority's reply gives): a hint for an error message, never a decision."""
        if self._status_raw is None:
            return False
        try:
            return peek_document(self._status_raw).get("online") is False
        except BadDocument:
            return False

    def _verified_status(self) -> dict[str, Any] | None:
        """The agent's retained status, if it carries the agent's signature."""
        if self._status_raw is None or self._agent_key is None:
            return None
        try:
            return read_status(self._status_raw, self._agent_key)
        except BadDocument:
            log.warning("ignored a status for %s with a bad signature", self.agent)
            return None

    # ----- incoming -----

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._grants is not None and self._grants.on_message(topic, payload):
            return
        if topic == self.topics.status(self.agent):
            self._on_status(payload)
            return
        if topic == self.topics.bulletin():
            self.bulletin.offer(payload)
            return
        if self.slot is None or topic != self._topic(A2C):
            return
        if self.channel is None:
            if self._reply is not None and not self._reply.done() and payload[:1] == b"\x81":
                self._reply.set_result(payload)
            elif len(self._early) < 64:
                self._early.append(payload)
            return
        self._on_datagram(payload)

    def _on_status(self, payload: bytes) -> None:
        self._status_raw = payload
        self._status_seen.set()
        status = self._verified_status()
        if self.channel is None or status is None:
            return
        if not status.get("online") and self._offline_timer is None:
            self._offline_timer = self.loop.call_later(OFFLINE_GRACE, self._agent_gone)
        elif status.get("online") and self._offline_timer is not None:
            self._offline_timer.cancel()
            self._offline_timer = None

    def _agent_gone(self) -> None:
        self.lost = f"agent {self.agent!r} went offline"
        self.closed.set()

    def _on_datagram(self, payload: bytes) -> None:
        assert self.channel is not None
        frames = self.channel.receive(payload, time.monotonic())
        log.debug("datagram %d bytes -> %s", len(payload), [(f.type.name, f.seq) for f in frames])
        for frame in frames:
            if frame.type == FrameType.EXIT:
                try:
                    doc = loads(frame.payload)
                    self.exit = ExitStatus(doc.get("code"), doc.get("signal"))
                except ValueError:
                    pass
            elif frame.type == FrameType.CLOSE:
                self.closed.set()
            self.on_frame(frame)
        self.flush()

    def _on_reconnected(self) -> None:
        if self.channel is not None:
            self.channel.resend_all(time.monotonic())
            self.flush()

    # ----- outgoing -----

    def flush(self) -> None:
        assert self.conn is not None
        ch = self.channel
        if ch is None:
            return
        for blob, qos in ch.take_outgoing():
            self.conn.publish(self._topic(C2A), blob, qos)
        self._timer.arm(ch.next_deadline())
        if ch.send_capacity() > 0:
            self.capacity.set()
        else:
            self.capacity.clear()

    def _send_keepalive(self) -> None:
        if self.channel is not None and not self.channel.closed:
            self.channel.keepalive(time.monotonic())
            self.flush()
        self._keepalive = self.loop.call_later(KEEPALIVE, self._send_keepalive)

    def _tick(self) -> None:
        if self.channel is not None:
            self.channel.tick(time.monotonic())
            self.flush()

    def send(self, ftype: FrameType, payload: bytes = b"") -> None:
        assert self.channel is not None
        if self.channel.closed:
            return
        self.channel.send(ftype, payload, time.monotonic())
        self.flush()

    def offer(self, data: bytes) -> bytes:
        """Send as much input as the credit window allows now; return the rest."""
        ch = self.channel
        assert ch is not None
        view = memoryview(data)
        while view and not ch.closed:
            room = min(ch.send_capacity(), MAX_PAYLOAD, len(view))
            if room <= 0:
                break
            ch.send(FrameType.DATA, bytes(view[:room]), time.monotonic())
            view = view[room:]
        self.flush()
        return bytes(view)

    async def send_data(self, data: bytes) -> None:
        """Send input, waiting for credit; large input goes in bounded frames."""
        while data and self.channel is not None and not self.channel.closed:
            await self.capacity.wait()
            data = self.offer(data)  # flush() clears `capacity` when the window is full

    async def wait_closed_or(self, other: asyncio.Event) -> None:
        """Until the session ends or `other` is set, whichever comes first."""
        waits = [self.loop.create_task(e.wait()) for e in (self.closed, other)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    def resize(self, cols: int, rows: int) -> None:
        self.send(FrameType.RESIZE, struct.pack(">HH", cols, rows))

    async def close(self) -> None:
        if self.channel is not None and self.conn is not None and self.conn.connected:
            # Our CLOSE carries the final ack of everything the agent sent.
            self.channel.close(time.monotonic())
            self.channel.tick(time.monotonic())
            self.flush()
        self._timer.cancel()
        if self._offline_timer is not None:
            self._offline_timer.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.conn is not None:
            await self.conn.close()
        if self.slot is not None and self.slot.fd is not None:
            os.close(self.slot.fd)
            self.slot.fd = None
