"""What every client command needs: its identity, a broker connection slot, a grant."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether import authz
from tether.client_session import (
    AUTHORITY_TIMEOUT,
    authority_timeout_message,
    request_too_large_message,
)
from tether.edge.home import Home
from tether.edge.keys import Identity, KeyFileError
from tether.edge.mqtt import BrokerError, BrokerSettings, MessageHandler, MqttConnection
from tether.encoding import b64d
from tether.errors import TetherError
from tether.topics import USER_SLOTS, Topics, user_slot


class ClientError(TetherError):
    """A client command cannot go on: the text says why and what to do."""


def add_identity_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--identity", metavar="FILE",
        help="identity file to use (default: $TETHER_IDENTITY, else $TETHER_HOME/user.json, "
        "which `tether up` creates)",
    )


def load_identity(path: str | None) -> Identity:
    chosen = Path(path or os.environ.get("TETHER_IDENTITY") or Home.default().user_identity)
    if not chosen.exists():
        raise ClientError(
            f"no identity at {chosen}. Run `tether up` first (it creates one), "
            "or pass --identity FILE / set TETHER_IDENTITY"
        )
    try:
        return Identity.load(chosen)
    except KeyFileError as exc:
        raise ClientError(str(exc)) from exc


@dataclass
class Slot:
    name: str
    fd: int | None


def acquire_slot(identity: Identity) -> Slot:
    """Pick a free broker username of this user's, so commands can run side by side.

    The broker ties the client id to the username (a client id takeover defence), so two
    connections with one username would keep kicking each other off.
    """
    base = str(identity.broker.get("username", identity.name))
    if identity.kind != "user":
        return Slot(base, None)
    lock_dir = Home.default().run_dir / "slots"
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_dir.parent.chmod(0o700)
    for i in range(USER_SLOTS):
        name = user_slot(base, i)
        fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(name, fd)
    raise ClientError(f"{USER_SLOTS} tether commands are already connected as {base!r}; close one first")


async def connect(identity: Identity, slot: Slot, on_message: MessageHandler) -> MqttConnection:
    settings = BrokerSettings.from_identity(identity.name, identity.broker)
    settings.username = settings.client_id = slot.name
    # A person waits on this link: a silent one (no reset) is noticed within two keepalives,
    # so 10 s here rather than the 60 s of the 30 s agents use.
    settings.keepalive = CLIENT_KEEPALIVE
    conn = MqttConnection(settings, on_message)
    try:
        await conn.connect()
    except BrokerError as exc:
        raise ClientError(str(exc)) from exc
    return conn


CLIENT_KEEPALIVE = 5


class AuthorityTimeout(ClientError):
    """The authority sent no reply in time (as opposed to a reply that refuses)."""


class GrantRequester:
    """Sends one grant request and waits for the authority's signed reply."""

    def __init__(self, identity: Identity, conn: MqttConnection, slot: Slot, topics: Topics) -> None:
        self.identity = identity
        self.conn = conn
        self.slot = slot
        self.topics = topics
        self._pending: authz.PendingRequest | None = None
        self._reply: asyncio.Future[dict[str, Any]] | None = None

    def on_message(self, topic: str, payload: bytes) -> bool:
        if topic != self.topics.authz_reply(self.slot.name) or self._pending is None:
            return False
        try:
            doc = authz.open_reply(self._pending, b64d(self.identity.authority["ed25519"]), payload)
        except authz.AuthzError:
            return True
        if doc is not None and self._reply is not None and not self._reply.done():
            self._reply.set_result(doc)
        return True

    async def subscribe(self) -> None:
        await self.conn.subscribe_confirmed(self.topics.authz_reply(self.slot.name), 1)

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            authority_x = b64d(self.identity.authority["x25519"])
        except KeyError as exc:
            raise ClientError("the identity file has no authority key; re-create it") from exc
        self._pending = authz.build_request(
            self.identity.signing_key, self.identity.name, authority_x, body, time.time(),
            rand=os.urandom)
        if len(self._pending.payload) > authz.MAX_REQUEST_BYTES:  # the authority would drop it unread
            raise ClientError(request_too_large_message(len(self._pending.payload)))
        self._reply = asyncio.get_running_loop().create_future()
        self.conn.publish(self.topics.authz_request(self.slot.name), self._pending.payload, qos=1)
        try:
            return await asyncio.wait_for(self._reply, AUTHORITY_TIMEOUT)
        except TimeoutError:
            raise AuthorityTimeout(authority_timeout_message(self.conn.settings.address)) from None


async def ask_authority(identity: Identity, body: dict[str, Any], topics: Topics | None = None) -> dict[str, Any]:
    """One request to the authority, on a broker connection of its own; its signed reply."""
    topics = topics or Topics()
    slot = acquire_slot(identity)
    requester: GrantRequester | None = None

    def on_message(topic: str, payload: bytes) -> None:
        if requester is not None:
            requester.on_message(topic, payload)

    try:
        conn = await connect(identity, slot, on_message)
        try:
            requester = GrantRequester(identity, conn, slot, topics)
            await requester.subscribe()
            return await requester.request(body)
        finally:
            await conn.close()
    finally:
        if slot.fd is not None:
            os.close(slot.fd)
            slot.fd = None
