"""A hand-driven client of a test stack's agent `local`, for attacks on its handshake:
HELLOs with any body, grants signed with the stack's authority key whatever they claim
(even what the authority would never issue), and the agent's answers decrypted."""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from dataclasses import dataclass, field
from typing import Any

from stack import Stack

from tether import grants, paseto
from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.encoding import b64e, dumps
from tether.handshake import ClientHandshake, HandshakeRefused
from tether.topics import A2C, C2A, Topics

REPLY_TIMEOUT = 10.0
TOPICS = Topics()


def mint(stack: Stack, user: Identity, slot: str, **changes: Any) -> str:
    """A grant for agent `local` signed with the stack's authority key. It is signed
    directly, not through `grants.issue`, so it can claim what no policy would allow."""
    authority = Identity.load(stack.home.authority_identity)
    agent = Identity.load(stack.home.agent_identity("local"))
    now = time.time()
    fields: dict[str, Any] = dict(
        user=user.name, agent="local", agent_key=b64e(agent.public_key),
        client_key=b64e(user.public_key), mqtt_name=slot, mode="exec",
        run_as=getpass.getuser(), command=["true"], max_duration=60, idle_timeout=0,
        recording="off", recorder=None, reason=None, jti=grants.new_jti(os.urandom), expires=now + 120,
    )
    fields.update(changes)
    grant = grants.Grant(**fields)
    return paseto.sign(authority.signing_seed, dumps(grant.claims(now)), implicit=grants.IMPLICIT)


@dataclass
class Answer:
    """The agent's answer to one HELLO: None if it accepted, else its decrypted reason."""

    refused: str | None
    hello: bytes
    handshake: ClientHandshake
    sid: bytes

    @property
    def accepted(self) -> bool:
        return self.refused is None


@dataclass
class Peer:
    """One broker connection of a user on slot `slot` (e.g. `alice.7`), talking to `local`."""

    stack: Stack
    slot_no: int = 7
    user: Identity = field(init=False)
    slot: str = field(init=False)

    def __post_init__(self) -> None:
        self.user = Identity.load(self.stack.home.user_identity)
        self.slot = f"{self.user.name}.{self.slot_no}"
        self._replies: dict[str, asyncio.Queue[bytes]] = {}
        self.conn: MqttConnection | None = None

    async def __aenter__(self) -> Peer:
        settings = BrokerSettings.from_identity(self.user.name, self.user.broker)
        settings.username = settings.client_id = self.slot
        self.conn = MqttConnection(settings, self._on_message)
        await self.conn.connect()
        await self.conn.subscribe_confirmed(TOPICS.session("local", self.slot, "+", A2C), 1)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    def _on_message(self, topic: str, payload: bytes) -> None:
        parsed = TOPICS.parse_session(topic)
        if parsed is not None:
            self._queue(parsed[2]).put_nowait(payload)

    def _queue(self, sid: str) -> asyncio.Queue[bytes]:
        return self._replies.setdefault(sid, asyncio.Queue())

    def grant(self, **changes: Any) -> str:
        return mint(self.stack, self.user, self.slot, **changes)

    def handshake(self, request: dict[str, Any], sid: bytes | None = None) -> ClientHandshake:
        agent = Identity.load(self.stack.home.agent_identity("local"))
        return ClientHandshake(client_key=self.user.signing_key, agent_signing_key=agent.public_key,
                               agent_x25519=agent.x25519_public, sid=sid or os.urandom(16),
                               request=request, rand=os.urandom)

    def request(self, **fields: Any) -> dict[str, Any]:
        """An exec request for `true` with a fresh grant, changed by `fields`."""
        body: dict[str, Any] = {"mode": "exec", "command": ["true"]}
        body.update(fields)
        body.setdefault("grant", self.grant())
        return body

    async def send(self, msg: bytes) -> None:
        assert self.conn is not None
        self.conn.publish(TOPICS.handshake("local", self.slot), msg, qos=1)
        await self.conn.drain()

    async def hello(self, request: dict[str, Any] | None = None, *, confirm: bool = False,
                    handshake: ClientHandshake | None = None, raw: bytes | None = None) -> Answer:
        """Send a HELLO (or `raw`, the bytes `handshake` once made) and decrypt the answer.
        With `confirm`, an accepted handshake is completed, so the agent starts the session."""
        hs = handshake or self.handshake(request if request is not None else self.request())
        msg = raw if raw is not None else hs.hello(time.time())
        queue = self._queue(hs.sid.hex())
        await self.send(msg)
        reply = await asyncio.wait_for(queue.get(), REPLY_TIMEOUT)
        try:
            confirmation, _keys = hs.on_reply(reply)
        except HandshakeRefused as exc:
            return Answer(str(exc), msg, hs, hs.sid)
        if confirm:
            assert self.conn is not None
            self.conn.publish(TOPICS.session("local", self.slot, hs.sid.hex(), C2A), confirmation, qos=1)
            await self.conn.drain()
        return Answer(None, msg, hs, hs.sid)
