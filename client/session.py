"""The client end of one session, as the command line runs it: the asyncio, MQTT and
terminal glue around tether.client_session.ClientSessionCore (grant, handshake, channel)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.channel import Channel
from tether.client import terminal
from tether.client.connect import AuthorityTimeout, ClientError, Slot, acquire_slot, connect
from tether.client_session import ClientSessionCore, Event
from tether.edge.keys import Identity
from tether.edge.mqtt import MqttConnection
from tether.encoding import b64d
from tether.frames import FrameType
from tether.topics import Topics

log = logging.getLogger("tether.client")


@dataclass
class ExitStatus:
    code: int | None = None
    signal: int | None = None

    @property
    def shell_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 255


class _SystemClock:
    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()  # the clock asyncio's call_later counts in


class _LoopTimers:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def set(self, fn: Callable[[], None], seconds: float) -> object:
        return self._loop.call_later(seconds, fn)

    def clear(self, handle: object) -> None:
        assert isinstance(handle, asyncio.TimerHandle)
        handle.cancel()


@dataclass
class ClientSession:
    identity: Identity
    agent: str
    mode: str
    request: dict[str, Any]
    topics: Topics = field(default_factory=Topics)
    show_output: Callable[[bytes, bool], None] = terminal.show_output
    show_notice: Callable[[str], None] = terminal.show_notice

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.slot: Slot | None = None
        self.conn: MqttConnection | None = None
        self.core: ClientSessionCore | None = None
        self._opened: asyncio.Future[None] | None = None
        self._drained = asyncio.Event()
        self.exit = ExitStatus()
        self.closed = asyncio.Event()
        self.lost: str | None = None
        self.accepted: dict[str, Any] = {}

    @property
    def sid(self) -> str:
        """The session's id: the one this client attached to, else its own handshake's."""
        attached = self.accepted.get("attach")
        if isinstance(attached, str):
            return attached
        return self.core.sid_hex if self.core is not None else ""

    @property
    def channel(self) -> Channel | None:
        return self.core.channel if self.core is not None else None

    async def open(self) -> None:
        self.slot = acquire_slot(self.identity)
        self.conn = conn = await connect(self.identity, self.slot, self._on_message)
        conn.on_connected.append(self._on_reconnected)
        conn.on_disconnected.append(self._on_disconnected)
        authority = self.identity.authority
        self.core = core = ClientSessionCore(
            user=self.identity.name, key=self.identity.signing_key, slot=self.slot.name,
            authority_ed25519=b64d(authority.get("ed25519", "")),
            authority_x25519=b64d(authority.get("x25519", "")),
            topics=self.topics, agent=self.agent, mode=self.mode, request=self.request,
            publish=lambda topic, payload, qos: conn.publish(topic, payload, qos),
            publish_frame=conn.publish_frame,
            clock=_SystemClock(), timers=_LoopTimers(self.loop), rand=os.urandom,
            on_output=self._on_output, on_event=self._on_event, broker=conn.settings.address,
        )
        await conn.subscribe_confirmed(self.topics.authz_reply(self.slot.name), 1)
        conn.subscribe(self.topics.status(self.agent), 1)
        # Retained, so it arrives right after this SUBACK: before the grant reply.
        await conn.subscribe_confirmed(self.topics.bulletin(), 1)
        await conn.subscribe_confirmed(core.a2c_topic(), 1)
        if "x25519" not in authority:
            raise ClientError("the identity file has no authority key; re-create it")
        self._opened = self.loop.create_future()
        core.start()
        await self._opened

    # ----- from the core -----

    def _on_output(self, payload: bytes, done: Callable[[], None], stderr: bool) -> None:
        self.show_output(payload, stderr)
        done()  # written (blocking): the agent may send more

    def _on_event(self, evt: Event) -> None:
        kind = evt["type"]
        opening = self._opened is not None and not self._opened.done()
        if kind == "accepted":
            self.accepted = evt["extra"]
            if opening:
                assert self._opened is not None
                self._opened.set_result(None)
        elif kind == "exit":
            self.exit = ExitStatus(evt["code"], evt["signal"])
        elif kind == "notice":
            self.show_notice(evt["text"])
        elif kind == "agent-offline":
            self.show_notice(f"agent {self.agent!r} is unreachable; reconnecting… "
                             f"(waiting up to {evt['grace']:.0f} s)")
        elif kind == "agent-online":
            self.show_notice(f"agent {self.agent!r} reconnected")
        elif kind == "input-drained":
            self._drained.set()
        elif kind == "bad-status":
            log.warning("ignored a status for %s with a bad signature", self.agent)
        elif kind == "closed":
            self._drained.set()
            self.closed.set()
        elif "message" in evt:
            message = str(evt["message"])
            if opening:
                assert self._opened is not None
                plain_timeout = kind == "authority-timeout" and not evt.get("offline_hint")
                self._opened.set_exception(AuthorityTimeout(message) if plain_timeout else ClientError(message))
            elif kind == "lost":
                self.lost = message

    # ----- from MQTT -----

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.core is not None:
            self.core.on_message(topic, payload)

    def _on_disconnected(self) -> None:
        if self._in_session():
            assert self.conn is not None
            self.show_notice(f"lost the connection to the broker at {self.conn.settings.address}; "
                             "reconnecting…")

    def _on_reconnected(self) -> None:
        if self.core is not None:
            self.core.reconnected()
        if self._in_session():
            self.show_notice("reconnected to the broker")

    def _in_session(self) -> bool:
        return self.core is not None and self.core.state == "open"

    # ----- from the user -----

    def send(self, ftype: FrameType, payload: bytes = b"") -> None:
        assert self.core is not None
        self.core.send_control(ftype, payload)

    def send_input(self, data: bytes) -> Awaitable[None] | None:
        """Send input as the credit window allows; if some must wait for credit, an
        awaitable that completes once it has gone (or the session ended)."""
        core = self.core
        assert core is not None
        # StdinReader hands over one chunk (64 KiB) and waits for this awaitable before
        # the next, so the core's 1 MiB input queue is never full here.
        sent = core.send_input(data)
        assert sent
        if not core.input_queued or core.state == "closed":
            return None
        self._drained.clear()
        return self._until_drained()

    async def _until_drained(self) -> None:
        await self._drained.wait()

    async def wait_closed_or(self, other: asyncio.Event) -> None:
        """Until the session ends or `other` is set, whichever comes first."""
        waits = [self.loop.create_task(e.wait()) for e in (self.closed, other)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    def resize(self, cols: int, rows: int) -> None:
        assert self.core is not None
        self.core.resize(cols, rows)

    async def close(self, detach: bool = False, end: bool = False) -> None:
        if self.core is not None:
            self.core.close(notify=self.conn is not None and self.conn.connected, detach=detach,
                            end=end)
        if self.conn is not None:
            await self.conn.close()
        if self.slot is not None and self.slot.fd is not None:
            os.close(self.slot.fd)
            self.slot.fd = None
