"""The embedded amqtt broker: tether's zero-setup default.

It reads the same ``passwd`` and ``acl`` files as a production Mosquitto
(:mod:`tether.broker.files`) and enforces them through two amqtt plugins:

* :class:`TetherAuthPlugin` checks the username and password against ``passwd`` (the
  Mosquitto ``$7$`` format), or a web console slot's one-time token against
  ``console-keys`` (as Mosquitto's tether plugin does), refuses anonymous clients,
  requires client id == username and, on TLS listeners with a client CA, a verified
  client certificate.
* :class:`TetherTopicPlugin` answers every PUBLISH, SUBSCRIBE and delivery (RECEIVE)
  through :func:`tether.acl.permits` on the parsed acl file, so both brokers enforce
  literally the same text.

amqtt 0.12.1 has bugs that matter to tether (docs/sources.md, 'amqtt bug 1' to 'amqtt bug 5'). The
broker subclass below defends against each; ``tests/test_broker_amqtt_defences.py``
reproduces every attack against this broker:

1. *Unauthenticated CONNECT wipes a live session.* amqtt deletes the session of the
   requested client id before it authenticates. Here the CONNECT is authenticated first;
   a refused client never touches the session table. The client id is then forced to the
   username (Mosquitto's ``use_username_as_clientid``), so a principal can only ever
   take over its own connection. A takeover closes the old connection completely (its
   will is processed) before the new one is set up; amqtt would otherwise leave the old
   connection running as a zombie, or mark the new one disconnected when the old one
   finally ends.
2. *PUBLISH to ``$...`` or a wildcard topic ends the connection's message loop* while the
   socket stays up. Here such a publish is dropped and logged; the loop carries on.
3. *QoS 0 publishes are delivered at the subscriber's QoS.* Here delivery uses
   min(publish QoS, subscription QoS), as MQTT requires. Retained messages likewise.
4. *QoS 1 deliveries give up after 5 s with no retry.* Here an outgoing QoS 1 message
   waits for its PUBACK for as long as the connection lives, and stays in flight for
   redelivery when a persistent session (clean session off) reconnects. Nothing is
   retransmitted on a live connection (TCP already did), exactly like Mosquitto 2.0.
   tether's own channel numbers and retransmits its frames, so this is defence in depth.
5. *The websocket listener closes connections on messages over ~1 MiB.* Every packet,
   on every listener, is capped at ``max_packet_size`` (131072, as in mosquitto.conf;
   tether frames are at most 64 KiB), counted as Mosquitto 2.0 counts it: the fixed
   header byte plus the remaining length. An over-cap packet closes that connection as
   soon as its length header arrives, before its body is buffered, exactly as Mosquitto
   does ("disconnected due to oversize packet"); other clients are unaffected.

Found while building this, and fixed the same way:

* amqtt never enforces the keepalive: a half-open connection lived forever and its will
  (the agent's "offline" presence) never fired. Here a client silent for 1.5 x its
  keepalive is disconnected, as MQTT requires.
* A reconnecting client was sent the retained messages of every filter any client had
  subscribed to, without an ACL check. Here only its own filters, each message checked.
* Will messages are published only if the acl lets the client write the will topic
  (Mosquitto accepts the CONNECT and drops the will the same way).
* A reload that removes a principal or changes its password disconnects its live
  connections, as Mosquitto does on SIGHUP.
* A client that connects and never sends CONNECT is dropped after ``CONNECT_TIMEOUT``.
* amqtt queues deliveries to a slow subscriber without bound (one task per message,
  holding the payload). Here at most ``MAX_QUEUED`` deliveries and ``MAX_QUEUED_BYTES``
  of payload (unsent, or sent at QoS 1 and not yet acknowledged) wait per client; beyond
  that messages to that client are dropped and logged, exactly like Mosquitto's
  ``max_queued_messages`` and ``max_queued_bytes`` (the same figures in mosquitto.conf).
  tether's credit windows keep well below them.
* Presence is fanned out at a bounded rate per publisher (``PRESENCE_RATE`` per second
  after a burst of ``PRESENCE_BURST``, :class:`tether.throttle.Throttle`): an agent that
  floods its presence reaches every subscriber (each console, ``tether ls``, the
  recorder) at that rate whatever it sends. Updates over the rate are held, only the
  newest per topic, so the last state still goes out; the retained copy is updated at
  once. On Mosquitto tether's plugin applies the same figures and rule
  (broker/mosquitto-plugin/presence_throttle.c), except that a held update becomes the
  retained copy only when it is released.
* Requests to the authority (``authz/req``, ``enrol/req``) over twice the authority's own
  rate per principal (tether.limits; a user's slots share one count, as at the
  authority) are dropped before they are queued: every message
  waits in one broadcast queue, so a flood would delay every other principal's request
  behind it. The authority keeps the rate itself; Mosquitto delivers floods fast enough.
* Only the topics tether's protocol retains (each agent's presence and status, the
  authority's bulletin) are retained; a retained publish anywhere else is delivered but
  not kept, so no principal can grow the retained store (a user could otherwise retain
  any number of messages under its own session topics). A cleared retained message is
  removed, not kept as an empty entry that every later subscriber would be sent.
* Messages kept for an offline persistent session (an agent's) are bounded by the same
  limits as a live client's queue; amqtt kept every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from amqtt.adapters import (
    ReaderAdapter,
    StreamReaderAdapter,
    StreamWriterAdapter,
    WebSocketsReader,
    WebSocketsWriter,
    WriterAdapter,
)
from amqtt.broker import Broker
from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import OUTGOING, Session

from tether.acl import AclFile, Action, valid_topic
from tether.broker.files import ACL_FILE, PASSWD_FILE, read_broker_files, read_console_keys
from tether.broker.passwd import verify_password
from tether.console_login import TokenChecker, is_console_slot
from tether.limits import AUTHORITY_REQUEST_BURST, AUTHORITY_REQUEST_RATE
from tether.ratelimit import RateLimiter
from tether.throttle import Throttle
from tether.topics import DEFAULT_PREFIX, Topics, principal_of_slot, valid_name

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_PACKET_SIZE",
    "MAX_QUEUED",
    "MAX_QUEUED_BYTES",
    "PRESENCE_BURST",
    "PRESENCE_RATE",
    "BrokerLimits",
    "EmbeddedBroker",
    "TetherAuthPlugin",
    "TetherTopicPlugin",
    "TlsConfig",
]

log = logging.getLogger("tether.broker")

MAX_PACKET_SIZE: Final = 131072  # the same as max_packet_size in mosquitto.conf
MAX_QUEUED: Final = 16384  # waiting deliveries per client (mosquitto.conf max_queued_messages)
MAX_QUEUED_BYTES: Final = 128 << 20  # their payload bytes (mosquitto.conf max_queued_bytes)
# An agent publishes presence and status on (re)connect and presence every 60 s: a burst of
# 10 covers a few quick restarts; past it, one update per 2 s per publisher.
PRESENCE_RATE: Final = 0.5
PRESENCE_BURST: Final = 10
PRESENCE_PUBLISHERS: Final = 4096  # token buckets kept (least recently seen forgotten)
PRESENCE_HELD_TOPICS: Final = 4  # held updates per publisher (an agent has two topics)
CONNECT_TIMEOUT: Final = 10.0  # seconds from TCP accept to a complete CONNECT packet
TAKEOVER_TIMEOUT: Final = 5.0

_LISTENER: Final = "tether.listener"
_AUTHENTICATED: Final = "tether.authenticated"
_LOOP_DONE: Final = "tether.loop_done"
_PENDING: Final = "tether.pending"  # deliveries to this client not yet finished
_PENDING_BYTES: Final = "tether.pending_bytes"  # and their payload bytes
_OFFLINE_BYTES: Final = "tether.offline_bytes"  # payload kept for it while it is offline
_DROPPED: Final = "tether.dropped"


@dataclass(frozen=True)
class BrokerLimits:
    """What one client can make the broker hold or send; mosquitto.conf has the same."""

    max_packet_size: int = MAX_PACKET_SIZE
    max_queued: int = MAX_QUEUED
    max_queued_bytes: int = MAX_QUEUED_BYTES
    presence_rate: float = PRESENCE_RATE
    presence_burst: int = PRESENCE_BURST


@dataclass(frozen=True)
class TlsConfig:
    """A TLS listener. With ``cafile``, clients must present a certificate it verifies."""

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    host: str = "127.0.0.1"


class _State:
    """What the plugins enforce: the parsed passwd and acl files, reloadable."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir
        self.passwd: dict[str, str] = {}
        self.acl = AclFile()
        self.console = TokenChecker()
        self.require_cert: frozenset[str] = frozenset()  # listener names

    def load(self) -> None:
        passwd, acl = read_broker_files(self.files_dir)
        self.passwd, self.acl = passwd, acl
        self.console.keys = read_console_keys(self.files_dir)

    def credentials_ok(self, session: Session, *, recheck: bool = False) -> bool:
        """A connecting client's password (or console token), or after a reload whether a
        live client's still holds: a console slot's token was taken once, at connect, so
        then it must still verify under the slot's registered key."""
        username, password = session.username, session.password
        if username is None or password is None or not valid_name(username):
            return False
        if is_console_slot(username):
            ok = (self.console.recheck(username, session.client_id, password) if recheck else
                  self.console.check(username, session.client_id, password, time.time()))
        else:
            ok = verify_password(password, self.passwd.get(username, ""))  # also spends the time for unknown users
        if not ok:
            return False
        if session.attributes.get(_LISTENER) in self.require_cert:
            ssl_object = session.ssl_object
            if ssl_object is None or not ssl_object.getpeercert():
                log.warning("refused %s: no verified client certificate", username)
                return False
        return True

    def permits(self, session: Session | None, topic: str | None, action: Action) -> bool:
        if session is None or topic is None or session.username is None:
            return False
        return self.acl.permits(session.username, topic, action, client_id=session.client_id)


_ACTIONS: Final = {
    AmqttAction.PUBLISH: Action.PUBLISH,
    AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
    AmqttAction.RECEIVE: Action.RECEIVE,
}


class TetherAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Username + password from ``passwd``; no anonymous; client id must be the username."""

    @dataclass
    class Config:
        state: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        state: _State = self.config.state
        if session.username is None or session.password is None:
            return False
        if session.client_id != session.username:
            return False
        return state.credentials_ok(session)


class TetherTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """PUBLISH, SUBSCRIBE and RECEIVE decided by the acl file (``tether.acl``)."""

    @dataclass
    class Config:
        state: Any = None

    def check(self, session: Session | None, topic: str | None, action: Any) -> bool:
        state: _State = self.config.state
        act = _ACTIONS.get(action)
        return act is not None and state.permits(session, topic, act)

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Any = None,
    ) -> bool:
        return self.check(session, topic, action)


class _CappedReader(ReaderAdapter):  # type: ignore[misc]
    """Passes bytes through while following MQTT framing; refuses over-cap packets.

    An over-cap packet is seen as soon as its remaining-length header is complete: from
    then on the reader reports end of stream, so amqtt closes the connection cleanly
    before the body is read. ``feed_eof`` does the same on any transport (amqtt's
    websocket reader ignores ``feed_eof``).
    """

    def __init__(self, inner: ReaderAdapter, cap: int, peer: str) -> None:
        self._inner = inner
        self._cap = cap
        self._peer = peer
        self._closed = False
        self._len_bytes = -1  # -1: the next byte starts a packet
        self._len_value = 0
        self._body_left = 0

    async def read(self, n: int = -1) -> bytes:
        if self._closed:
            return b""
        data: bytes = await self._inner.read(n)
        if self._closed:
            return b""
        if not self._track(data):
            self._closed = True
            return b""
        return data

    def _track(self, data: bytes) -> bool:
        i, size = 0, len(data)
        while i < size:
            if self._body_left:
                take = min(self._body_left, size - i)
                self._body_left -= take
                i += take
            elif self._len_bytes < 0:  # first byte of a packet
                self._len_bytes, self._len_value = 0, 0
                i += 1
            else:
                byte = data[i]
                self._len_value += (byte & 0x7F) << (7 * self._len_bytes)
                self._len_bytes += 1
                i += 1
                if byte & 0x80:
                    if self._len_bytes >= 4:
                        return False  # malformed length
                    continue
                total = 1 + self._len_value  # Mosquitto leaves out the length's own bytes
                if total > self._cap:
                    log.warning(
                        "closing %s: packet of %d bytes exceeds max_packet_size %d",
                        self._peer,
                        total,
                        self._cap,
                    )
                    return False
                self._body_left = self._len_value
                self._len_bytes = -1
        return True

    def feed_eof(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._inner.feed_eof()


class _Handler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's broker-side protocol handler with the keepalive and QoS 1 fixes."""

    _stopped = False

    async def stop(self) -> None:
        # A delivery that starts after this registers its PUBACK waiter too late for
        # amqtt's own cancelling of them, and would wait for ever (with its client's
        # queue count held: enough reconnects and every message to it is dropped).
        self._stopped = True
        await super().stop()

    def handle_read_timeout(self) -> None:
        # Called when nothing arrived for the (1.5x) keepalive: MQTT-3.1.2-24 says close.
        session = self.session
        log.info("closing %s: keepalive expired", session.client_id if session else "?")
        if self.reader is not None:
            self.reader.feed_eof()

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        if session is None or app_message.packet_id is None:
            raise AMQTTError("QoS 1 delivery without a session or packet id")
        packet_id: int = app_message.packet_id
        session.inflight_out[packet_id] = app_message
        retry = app_message.publish_packet is not None
        packet = app_message.build_publish_packet(dup=retry)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        if self._stopped:
            waiter.cancel()  # the connection has gone: redelivered on the next, if it persists
        acked = False
        try:
            await self._send_packet(packet)
            app_message.publish_packet = packet
            # No give-up while the connection lives: the PUBACK comes when it comes.
            app_message.puback_packet = await waiter
            acked = True
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
            # Keep it for redelivery on reconnect if the session persists (MQTT-4.4.0-1).
            if acked or session.clean_session is not False:
                session.inflight_out.pop(packet_id, None)


class _TetherBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with tether's defences. See the module docstring."""

    def __init__(
        self, config: dict[str, Any], state: _State, limits: BrokerLimits, topics: Topics
    ) -> None:
        super().__init__(config)
        self._tether_state = state
        self._limits = limits
        self._topics = topics
        self._presence: Throttle[dict[str, Any]] = Throttle(
            limits.presence_rate, limits.presence_burst, PRESENCE_PUBLISHERS, PRESENCE_HELD_TOPICS
        )
        self._presence_timer: asyncio.TimerHandle | None = None
        self._request_topics = (topics.authz_request(""), topics.enrol_request(""))
        self._requests = RateLimiter(2 * AUTHORITY_REQUEST_RATE, 2 * AUTHORITY_REQUEST_BURST,
                                     PRESENCE_PUBLISHERS)
        self._request_drops = RateLimiter(1 / 60, 1, PRESENCE_PUBLISHERS)  # a log line a minute
        self._tether_tasks: set[asyncio.Task[Any]] = set()
        self._fast_topic: TetherTopicPlugin | None = None
        topic_plugins = list(self.plugins_manager._topic_plugins)
        if len(topic_plugins) == 1 and isinstance(topic_plugins[0], TetherTopicPlugin):
            self._fast_topic = topic_plugins[0]

    # -- background deliveries ----------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tether_tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tether_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("delivery failed: %r", exc)

    def _deliver(
        self, session: Session, handler: Any, topic: str, data: Any, qos: int, retain: bool
    ) -> None:
        """Queue one delivery to ``session``, unless it already has max_queued deliveries
        or max_queued_bytes of payload waiting."""
        pending: int = session.attributes.get(_PENDING, 0)
        pending_bytes: int = session.attributes.get(_PENDING_BYTES, 0)
        size = len(data) if data else 0
        if self._queue_full(session, pending, pending_bytes, "deliveries"):
            return
        session.attributes[_PENDING] = pending + 1
        session.attributes[_PENDING_BYTES] = pending_bytes + size
        task = asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=retain))
        self._tether_tasks.add(task)
        task.add_done_callback(self._task_done)

        def finished(_: asyncio.Task[Any]) -> None:
            session.attributes[_PENDING] = session.attributes.get(_PENDING, 1) - 1
            session.attributes[_PENDING_BYTES] = session.attributes.get(_PENDING_BYTES, size) - size

        task.add_done_callback(finished)

    def _queue_full(self, session: Session, count: int, size: int, what: str) -> bool:
        """As Mosquitto: refused once a queue is at a limit (the last one in may overshoot)."""
        if count < self._limits.max_queued and size < self._limits.max_queued_bytes:
            return False
        dropped = session.attributes.get(_DROPPED, 0) + 1
        session.attributes[_DROPPED] = dropped
        if dropped % 1000 == 1:
            log.warning(
                "dropping messages for %s: %d %s of %d bytes waiting (%d dropped so far)",
                session.client_id,
                count,
                what,
                size,
                dropped,
            )
        return True

    async def _queue_offline(self, session: Session, broadcast: dict[str, Any], qos: int) -> None:
        """Keep a QoS 1 message for a persistent session that is offline, within the same
        limits as a live client's queue (amqtt's queue for it has none)."""
        size = len(broadcast["data"] or b"")
        held: int = session.attributes.get(_OFFLINE_BYTES, 0)
        if self._queue_full(session, session.retained_messages.qsize(), held, "offline messages"):
            return
        session.attributes[_OFFLINE_BYTES] = held + size
        await self._retain_broadcast_message(broadcast, qos, session)

    async def _shutdown_broadcast_loop(self) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        await super()._shutdown_broadcast_loop()
        tasks = list(self._tether_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- transports: cap every packet ---------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        peer = str(writer.get_extra_info("peername"))
        await self._client_connected(
            listener_name,
            _CappedReader(StreamReaderAdapter(reader), self._limits.max_packet_size, peer),
            StreamWriterAdapter(writer),
        )

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        peer = str(getattr(websocket, "remote_address", "?"))
        await self._client_connected(
            listener_name,
            _CappedReader(WebSocketsReader(websocket), self._limits.max_packet_size, peer),
            WebSocketsWriter(websocket),
        )

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: Any,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if listener_type != ListenerType.WS:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        import functools

        import websockets

        # websockets would close at 1 MiB per message on its own; our cap comes first.
        return await websockets.serve(
            functools.partial(self.ws_connected, listener_name=listener_name),
            address,
            port,
            ssl=ssl_context,
            subprotocols=[websockets.Subprotocol("mqtt")],
            max_size=max(4 * self._limits.max_packet_size, 1 << 20),
        )

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context: ssl.SSLContext = Broker._create_ssl_context(listener)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if listener.get("cafile"):
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    # -- CONNECT: authenticate before touching any session ------------------------------

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        server = self._servers.get(listener_name)
        if not server:
            await _close(writer)
            return
        await server.acquire_connection()
        try:
            peer = writer.get_peer_info()
            if peer is None:
                await _close(writer)
                return
            try:
                accepted = await self._tether_connect(listener_name, reader, writer)
            except Exception:
                log.exception("CONNECT from %s failed", peer)
                await _close(writer)
                return
            if accepted is None:
                return
            handler, session = accepted
            try:
                await self._handle_client_session(
                    reader, writer, session, handler, server, listener_name
                )
            except (AMQTTError, MQTTError, NoDataError) as exc:
                log.debug("client %s: %r", session.client_id, exc)
        finally:
            server.release_connection()

    async def _tether_connect(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> tuple[_Handler, Session] | None:
        try:
            handler, incoming = await asyncio.wait_for(
                _Handler.init_from_connect(reader, writer, self.plugins_manager),
                CONNECT_TIMEOUT,
            )
        except Exception as exc:  # any failure before a valid CONNECT: just hang up
            log.debug("no valid CONNECT from %s: %r", writer.get_peer_info(), exc)
            await _close(writer)
            return None
        incoming.attributes[_LISTENER] = listener_name
        requested = incoming.client_id
        if incoming.username is not None:
            incoming.client_id = incoming.username  # use_username_as_clientid
        if not await super()._authenticate(incoming, self.listeners_config[listener_name]):
            log.info(
                "refused CONNECT from %s (username %r, client id %r)",
                writer.get_peer_info(),
                incoming.username,
                requested,
            )
            with contextlib.suppress(Exception):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await _close(writer)
            return None
        client_id: str = incoming.client_id
        await self._take_over(client_id)
        session: Session = incoming
        if incoming.clean_session:
            await self._delete_session(client_id)
            session.parent = 0
        elif client_id in self._sessions:
            existing: Session = self._sessions[client_id][0]
            for attr in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
                "ssl_object",
                "remote_address",
                "remote_port",
                "clean_session",
            ):
                setattr(existing, attr, getattr(incoming, attr))
            existing.attributes[_LISTENER] = listener_name
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        if session.keep_alive > 0:  # the server allows 1.5 x keepalive (MQTT-3.1.2-24)
            session.keep_alive += (session.keep_alive + 1) // 2
        session.attributes[_AUTHENTICATED] = True
        return handler, session

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        # Authentication already happened in _tether_connect, before any session was
        # touched; this is the one-shot result for amqtt's _handle_client_session.
        return bool(session.attributes.pop(_AUTHENTICATED, False))

    async def _take_over(self, client_id: str) -> None:
        """Close a live connection with this client id completely (will included)."""
        entry = self._sessions.get(client_id)
        if entry is None:
            return
        old_session, old_handler = entry
        if not old_session.transitions.is_connected():
            return
        log.info("client %s reconnected; closing its previous connection", client_id)
        done: asyncio.Event | None = old_session.attributes.get(_LOOP_DONE)
        if old_handler is not None:
            await old_handler.handle_connection_closed()
        if done is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), TAKEOVER_TIMEOUT)
        if old_session.transitions.is_connected():
            if old_handler is not None:
                with contextlib.suppress(Exception):
                    await old_handler.stop()
            with contextlib.suppress(Exception):
                old_session.transitions.disconnect()

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        done = asyncio.Event()
        client_session.attributes[_LOOP_DONE] = done
        try:
            await self._message_loop(client_session, handler)
        finally:
            done.set()

    async def _message_loop(self, client_session: Session, handler: Any) -> None:
        """amqtt's client loop, except that what the client published before its
        DISCONNECT is delivered before the disconnect is handled. amqtt's loop delivered at
        most one of the messages queued by then and dropped the rest (an agent's clean stop
        publishes its offline status and presence, then disconnects: the presence was lost)."""
        loop = asyncio.get_running_loop()
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                leaving = disconnect_waiter in done
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    unsubscribe_waiter = asyncio.ensure_future(
                        handler.get_next_pending_unsubscription()
                    )
                if wait_deliver in done:
                    if not await self._handle_message_delivery(client_session, handler, wait_deliver):
                        break
                    if not leaving:  # leaving: a new waiter could take a message and be cancelled
                        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if leaving:
                    queue = client_session.delivered_message_queue
                    while not queue.empty():
                        message: asyncio.Future[Any] = loop.create_future()
                        message.set_result(queue.get_nowait())
                        await self._handle_message_delivery(client_session, handler, message)
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    break
        except asyncio.CancelledError:
            log.debug("client loop of %s cancelled", client_session.client_id)
        finally:
            waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _handle_disconnect(
        self, client_session: Session, handler: Any, disconnect_waiter: Any
    ) -> None:
        if client_session.will_flag and not (
            client_session.will_topic
            and valid_topic(client_session.will_topic)
            and not client_session.will_topic.startswith("$")
            and self._tether_state.permits(
                client_session, client_session.will_topic, Action.PUBLISH
            )
        ):
            log.info(
                "dropping will of %s on %r: not allowed",
                client_session.client_id,
                client_session.will_topic,
            )
            client_session.will_flag = False
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    # -- PUBLISH in: drop bad topics, keep the loop; remember the publisher's QoS --------

    async def _handle_message_delivery(
        self, client_session: Session, handler: Any, wait_deliver: Any
    ) -> bool:
        app_message = wait_deliver.result()
        if app_message is None:
            return True
        topic: str = app_message.topic or ""
        if not valid_topic(topic) or topic.startswith("$"):
            log.info("dropped PUBLISH from %s to invalid topic %r", client_session.client_id, topic)
            return True
        if not await self._topic_filtering(client_session, topic, AmqttAction.PUBLISH):
            log.info("dropped PUBLISH from %s to %r: not allowed", client_session.client_id, topic)
            return True
        if self._over_request_rate(client_session, topic):
            return True
        broadcast = {
            "session": client_session,
            "topic": topic,
            "data": app_message.data,
            "qos": app_message.qos or 0,
        }
        if self._held_back(client_session, topic, broadcast):
            self._arm_presence_release()
        else:
            await self._broadcast_queue.put(broadcast)
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, app_message.data, app_message.qos)
        return True

    async def retain_message(
        self, source_session: Session | None, topic_name: str | None, data: Any, qos: int | None = None
    ) -> None:
        if topic_name is None:
            return
        if not data:
            # amqtt would keep an empty entry that every later subscriber gets sent.
            self._retained_messages.pop(topic_name, None)
            return
        if not self._retainable(topic_name):
            who = source_session.client_id if source_session is not None else "?"
            log.info("not retaining %s's message on %r: tether retains nothing there", who, topic_name)
            return
        await super().retain_message(source_session, topic_name, data, qos)

    def _retainable(self, topic: str) -> bool:
        """The topics tether's protocol retains: each agent's presence and status, and the
        authority's bulletin. Anything else would let any principal that may write a topic
        (a user, its own session topics) grow the retained store without bound."""
        if topic == self._topics.bulletin():
            return True
        agent = self._topics.parse_agent(topic)
        return agent is not None and topic in (self._topics.presence(agent), self._topics.status(agent))

    # -- requests to the authority: a flood guard per publisher -------------------------

    def _over_request_rate(self, session: Session, topic: str) -> bool:
        """Whether a request to the authority is over twice its sender's rate (the authority
        keeps the rate itself): dropped here, a flood never fills the broadcast queue that
        every other publisher's messages wait in."""
        if not topic.startswith(self._request_topics):
            return False
        # Per principal, as the authority counts: all of a user's slots share one bucket.
        key = principal_of_slot(session.username or session.client_id or "")
        now = time.monotonic()
        if self._requests.allow(key, now):
            return False
        if self._request_drops.allow(key, now):
            log.warning("dropping requests to the authority from %r: over its rate", key)
        return True

    # -- presence: a bounded rate of fan-out per publisher ------------------------------

    def _is_presence(self, topic: str) -> bool:
        agent = self._topics.parse_agent(topic)
        if agent is None:
            return False
        own = self._topics.presence(agent)
        return topic == own or topic.startswith(own + "/")

    def _held_back(self, session: Session, topic: str, broadcast: dict[str, Any]) -> bool:
        """Whether a presence update waits for its publisher's rate (see Throttle)."""
        if not self._is_presence(topic):
            return False
        key = session.username or session.client_id or ""
        return not self._presence.offer(key, topic, broadcast, time.monotonic())

    def _arm_presence_release(self) -> None:
        if self._presence_timer is None:
            loop = asyncio.get_running_loop()
            self._presence_timer = loop.call_later(self._presence.retry, self._release_presence)

    def _release_presence(self) -> None:
        self._presence_timer = None
        for broadcast in self._presence.release(time.monotonic()):
            self._broadcast_queue.put_nowait(broadcast)
        if self._presence.pending:
            self._arm_presence_release()

    async def _topic_filtering(self, session: Session, topic: str, action: Any) -> bool:
        if self._fast_topic is not None:  # same decision as the plugin, minus the task fan-out
            return self._fast_topic.check(session, topic, action)
        return bool(await super()._topic_filtering(session, topic, action))

    # -- deliveries out: min(pub, sub) QoS, bounded in-flight, no head-of-line pile-up ---

    async def _run_broadcast(self, running_tasks: Any) -> None:
        broadcast = await self._broadcast_queue.get()
        topic: str = broadcast["topic"]
        data = broadcast["data"]
        pub_qos: int | None = broadcast.get("qos")
        for topic_filter, subscriptions in list(self._subscriptions.items()):
            if not self._matches(topic, topic_filter):
                continue
            for target_session, sub_qos in list(subscriptions):
                qos = sub_qos if pub_qos is None else min(pub_qos, sub_qos)
                if not await self._topic_filtering(target_session, topic, AmqttAction.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                if (
                    not connected
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._queue_offline(target_session, broadcast, qos)
                    continue
                if not connected:
                    continue
                handler = self._get_handler(target_session)
                if handler is None:
                    continue
                self._deliver(target_session, handler, topic, data, qos, retain=False)

    def _subscribed(self, session: Session, topic_filter: str) -> bool:
        return any(
            s.client_id == session.client_id for s, _ in self._subscriptions.get(topic_filter, ())
        )

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        if not self._subscribed(session, topic_filter):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic, AmqttAction.RECEIVE):
                continue
            out_qos = qos if retained.qos is None else min(qos, retained.qos)
            self._deliver(session, handler, retained.topic, retained.data, out_qos, retain=True)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # Messages queued while a persistent session was offline: live messages, so
        # retain=False, and re-checked in case the acl changed meanwhile.
        handler = self._get_handler(session)
        if handler is None:
            return
        session.attributes[_OFFLINE_BYTES] = 0
        while not session.retained_messages.empty():
            msg = session.retained_messages.get_nowait()
            if await self._topic_filtering(session, msg.topic, AmqttAction.RECEIVE):
                self._deliver(session, handler, msg.topic, msg.data, msg.qos or 0, retain=False)

    # -- reload ---------------------------------------------------------------------------

    async def revalidate_sessions(self) -> None:
        """Disconnect live clients whose credentials no longer hold (as Mosquitto does)."""
        for client_id, (session, handler) in list(self._sessions.items()):
            if not session.transitions.is_connected() or handler is None:
                continue
            if self._tether_state.credentials_ok(session, recheck=True):
                continue
            log.info("disconnecting %s: no longer authorised after reload", client_id)
            with contextlib.suppress(Exception):
                await handler.handle_connection_closed()

    @property
    def bound_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name, server in self._servers.items():
            instance = server.instance
            sockets = getattr(instance, "sockets", None)
            if sockets:
                ports[name] = sockets[0].getsockname()[1]
        return ports


async def _close(writer: WriterAdapter) -> None:
    with contextlib.suppress(Exception):
        await writer.close()


class EmbeddedBroker:
    """tether's embedded broker: amqtt with the passwd/acl files and the defences above.

    ``files_dir`` holds ``passwd`` and ``acl`` (see :mod:`tether.broker.files`). ``prefix``
    says where tether's topics are: presence (rate-limited) and the topics that are
    retained; the broker warns when the acl file has no rules under it (the rules
    themselves come from the file). ``port=0`` picks a free port; read it back from
    :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        files_dir: Path,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = DEFAULT_PREFIX,
        *,
        ws_port: int | None = None,
        tls: TlsConfig | None = None,
        limits: BrokerLimits = BrokerLimits(),
    ) -> None:
        self.files_dir = Path(files_dir)
        self.host = host
        self.prefix = prefix
        self._port = port
        self._ws_port = ws_port
        self._tls = tls
        self._limits = limits
        self._state = _State(self.files_dir)
        self._broker: _TetherBroker | None = None

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.host}:{self._port}"},
        }
        if self._ws_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"{self.host}:{self._ws_port}"}
        if self._tls is not None:
            tls: dict[str, Any] = {
                "type": "tcp",
                "bind": f"{self._tls.host}:{self._tls.port}",
                "ssl": True,
                "certfile": str(self._tls.certfile),
                "keyfile": str(self._tls.keyfile),
            }
            if self._tls.cafile is not None:
                tls["cafile"] = str(self._tls.cafile)
            listeners["tls"] = tls
        plugins = {
            f"{__name__}.TetherAuthPlugin": {"state": self._state},
            f"{__name__}.TetherTopicPlugin": {"state": self._state},
        }
        return {"listeners": listeners, "plugins": plugins}

    async def start(self) -> None:
        """Load the files and start listening. Raises FileNotFoundError if they are missing
        and OSError (errno EADDRINUSE) if a port is taken."""
        if self._broker is not None:
            raise RuntimeError("broker already started")
        self._state.load()
        self._check_prefix()
        self._state.require_cert = frozenset(
            {"tls"} if self._tls is not None and self._tls.cafile is not None else set()
        )
        broker = _TetherBroker(self._config(), self._state, self._limits, Topics(self.prefix))
        try:
            await broker.start()
        except Exception as exc:
            for server in list(broker._servers.values()):
                with contextlib.suppress(Exception):
                    await server.close_instance()
            await broker.plugins_manager.close()
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, OSError):
                    raise cause from exc
                cause = cause.__cause__
            raise
        self._broker = broker

    async def stop(self) -> None:
        """Disconnect everyone and close the listeners."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    def reload(self) -> None:
        """Re-read passwd and acl. On a bad file, keep the old rules and raise.

        Clients whose password no longer verifies are disconnected (in the background
        when called from the broker's event loop).
        """
        self._state.load()
        self._check_prefix()
        log.info("reloaded %s and %s", self.files_dir / PASSWD_FILE, self.files_dir / ACL_FILE)
        broker = self._broker
        if broker is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.warning("reload() outside the broker's loop: live clients not re-checked")
            return
        broker._spawn(broker.revalidate_sessions())

    def _check_prefix(self) -> None:
        acl = self._state.acl
        topics = [e.topic for entries in acl.users.values() for e in entries]
        topics += [e.topic for e in acl.patterns]
        if topics and not any(t.startswith(self.prefix + "/") for t in topics):
            log.warning("%s has no rules under prefix %r", self.files_dir / ACL_FILE, self.prefix)

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def port(self) -> int:
        """The TCP port actually bound (differs from the requested one for port 0)."""
        if self._broker is not None:
            return self._broker.bound_ports.get("default", self._port)
        return self._port

    @property
    def ws_port(self) -> int | None:
        if self._broker is not None and self._ws_port is not None:
            return self._broker.bound_ports.get("ws", self._ws_port)
        return self._ws_port

    @property
    def tls(self) -> TlsConfig | None:
        return self._tls

    @property
    def tls_port(self) -> int | None:
        if self._tls is None:
            return None
        if self._broker is not None:
            return self._broker.bound_ports.get("tls", self._tls.port)
        return self._tls.port
