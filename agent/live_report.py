"""The agent's list of its live sessions, reported to the authority (docs/protocol.md §6.3).

The authority answers `tether sessions --live` and grants an attach only for a session the
owning agent reported, so the list goes out 1 s after any change (coalesced) and every
60 s (a restarted authority knows every session again within a minute). It is a signed
request sealed to the authority: the broker and other principals see neither the users
nor the sessions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tether import authz
from tether.edge.keys import Identity
from tether.edge.mqtt import MqttConnection
from tether.encoding import b64d
from tether.grants import Grant
from tether.topics import Topics

log = logging.getLogger("tether.agent.live")

CHANGE_DELAY = 1.0
PERIOD = 60.0
MAX_SESSIONS = 256  # the authority's bound; the request's size limit may cut it shorter
COMMAND_TEXT = 256  # an exec command is shown, never granted, from this list


class LiveSession(Protocol):
    sid: str
    grant: Grant
    started: float

    @property
    def ending(self) -> bool: ...

    @property
    def detached(self) -> bool: ...

    def detached_since(self) -> float | None: ...

    @property
    def awaiting_moderator(self) -> bool: ...


def session_entry(s: LiveSession) -> dict[str, Any]:
    command = None if s.grant.command is None else shlex.join(s.grant.command)[:COMMAND_TEXT]
    return {"sid": s.sid, "user": s.grant.user, "mode": s.grant.mode, "run_as": s.grant.run_as,
            "command": command, "started": s.started, "attached": not s.detached,
            "detached_at": s.detached_since(), "detach_timeout": s.grant.detach_timeout,
            "awaiting_moderator": s.awaiting_moderator}


class LiveReporter:
    def __init__(self, identity: Identity, conn: MqttConnection, topics: Topics, boot: float,
                 sessions: Callable[[], Iterable[LiveSession]]) -> None:
        self.identity = identity
        self.conn = conn
        self.topics = topics
        self.boot = boot
        self.sessions = sessions
        self.loop = asyncio.get_running_loop()
        self._due: asyncio.TimerHandle | None = None
        self._period: asyncio.TimerHandle | None = None
        self.sent = 0
        x25519 = identity.authority.get("x25519")
        self._authority_x25519 = b64d(x25519) if x25519 else None
        if self._authority_x25519 is None:
            log.warning("the identity file has no authority X25519 key: live sessions are not "
                        "reported, so `tether attach` cannot find them; re-enrol this agent")

    def start(self) -> None:
        self.changed()

    def stop(self) -> None:
        for handle in (self._due, self._period):
            if handle is not None:
                handle.cancel()
        self._due = self._period = None

    def changed(self) -> None:
        """Report soon: a session started, ended, detached or was attached."""
        if self._due is None:
            self._due = self.loop.call_later(CHANGE_DELAY, self._report)

    def _report(self) -> None:
        self._due = None
        if self._period is not None:
            self._period.cancel()
        self._period = self.loop.call_later(PERIOD, self._report)
        if self._authority_x25519 is None or not self.conn.connected:
            return  # the reconnect reports (AgentService._on_connected)
        live = sorted((s for s in self.sessions() if not s.ending), key=lambda s: -s.started)
        entries = [session_entry(s) for s in live[:MAX_SESSIONS]]
        while True:
            pending = authz.build_request(
                self.identity.signing_key, self.identity.name, self._authority_x25519,
                {"type": "live", "boot": self.boot, "sessions": entries}, time.time(), os.urandom)
            if len(pending.payload) <= authz.MAX_REQUEST_BYTES or not entries:
                break
            entries = entries[: len(entries) * 3 // 4]  # the newest that fit
        self.conn.publish(self.topics.authz_request(self.identity.name), pending.payload, qos=1)
        self.sent += 1
