"""The asyncio edge for MQTT: paho driven from one event loop, no threads for traffic.

* The socket is registered with `add_reader`; `loop_read` runs there, and received
  messages are dispatched after paho's callback has returned: work inside paho
  callbacks is limited to appending to a list (paho issue 874).
* `publish` writes straight to the socket when it can; a writer callback finishes the
  rest. `backlogged` and `drain()` let producers stop when the socket is full.
* TCP_NODELAY is set on every socket; without it a QoS 1 round trip costs 44-88 ms.
* Reconnects back off exponentially and re-subscribe on every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tether.errors import TetherError

log = logging.getLogger("tether.edge.mqtt")

# AWS IoT Core caps payloads at 128 KB; frames carry at most 64 KiB of data plus overhead.
MAX_PAYLOAD = 128 * 1024 - 512
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class BrokerError(TetherError):
    """The broker cannot be reached or refused us; the message says what to do."""


@dataclass
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    client_id: str = ""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 30

    @classmethod
    def from_identity(cls, name: str, broker: dict[str, Any]) -> BrokerSettings:
        tls = broker.get("tls") or {}
        return cls(
            host=str(broker.get("host", "127.0.0.1")),
            port=int(broker.get("port", 1883)),
            username=str(broker.get("username", name)),
            password=str(broker.get("password", "")),
            tls_ca=tls.get("ca"),
            tls_cert=tls.get("cert"),
            tls_key=tls.get("key"),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


MessageHandler = Callable[[str, bytes], None]


@dataclass
class MqttConnection:
    settings: BrokerSettings
    on_message: MessageHandler
    clean_session: bool = True
    will: Will | None = None
    on_connected: list[Callable[[], None]] = field(default_factory=list)
    on_disconnected: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or s.username,
            clean_session=self.clean_session,
            protocol=paho.MQTTv311,
        )
        self._client.suppress_exceptions = True
        self._client.max_queued_messages_set(0)
        self._client.max_inflight_messages_set(100)
        if s.username:
            self._client.username_pw_set(s.username, s.password)
        if self.will is not None:
            w = self.will
            self._client.will_set(w.topic, w.payload, w.qos, w.retain)
        if s.tls_ca or s.tls_cert:
            self._client.tls_set(ca_certs=s.tls_ca, certfile=s.tls_cert, keyfile=s.tls_key)
        self._client.on_connect = self._paho_connect
        self._client.on_disconnect = self._paho_disconnect
        self._client.on_message = self._paho_message
        self._client.on_subscribe = self._paho_subscribe
        self._client.on_socket_open = self._paho_socket_open
        self._client.on_socket_close = self._paho_socket_close
        self._inbox: list[tuple[str, bytes]] = []
        self._subs: dict[str, int] = {}
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._sock: socket.socket | None = None
        self._fd = -1
        self._connack: asyncio.Future[int] | None = None
        self._connected = False
        self._closing = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._events: list[Callable[[], None]] = []
        self.reconnects = 0

    # ----- paho callbacks: record, never act -----

    def _paho_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        rc = int(reason.value) if hasattr(reason, "value") else int(reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(rc)
        if rc == 0:
            self._events.append(self._after_connect)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        if self._connack is not None and not self._connack.done():
            # Closed before the CONNACK (e.g. reset while a link is cut): this attempt has
            # failed now, so the back-off goes on instead of waiting out the CONNACK timeout.
            self._connack.set_exception(ConnectionResetError("closed before the broker's CONNACK"))
        self._events.append(self._after_disconnect)

    def _paho_subscribe(self, _c: Any, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _paho_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.append((msg.topic, bytes(msg.payload)))

    def _paho_socket_open(self, _c: Any, _u: Any, sock: Any) -> None:
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_sock", sock)
        with contextlib.suppress(OSError, AttributeError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _paho_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        # Bound to that socket: the event may run after a newer socket is registered.
        self._events.append(lambda: self._unregister(sock))

    # ----- event loop side -----

    def _run_events(self) -> None:
        while self._events or self._inbox:
            events, self._events = self._events, []
            for ev in events:
                ev()
            inbox, self._inbox = self._inbox, []
            for topic, payload in inbox:
                try:
                    self.on_message(topic, payload)
                except Exception:
                    log.exception("message handler failed for %s", topic)

    def _on_readable(self) -> None:
        sock = self._sock
        self._client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see.
        while isinstance(sock, ssl.SSLSocket) and self._sock is sock and sock.pending():
            self._client.loop_read()
        self._run_events()
        self._update_writer()

    def _on_writable(self) -> None:
        self._client.loop_write()
        self._update_writer()

    def _update_writer(self) -> None:
        if self._sock is None or self._client.socket() is not self._sock:
            # Not watched, or paho closed it just now (a write into a reset connection,
            # inside publish): its number may be closed or reused, and the socket-close
            # event queued for it unwatches it.
            return
        if self._client.want_write():
            if self._writable.is_set():
                self._writable.clear()
                self._loop.add_writer(self._fd, self._on_writable)
        elif not self._writable.is_set():
            self._loop.remove_writer(self._fd)
            self._writable.set()

    def _register(self) -> None:
        sock = self._client.socket()
        if sock is None:
            return
        self._sock = sock  # type: ignore[assignment]
        self._fd = sock.fileno()
        self._loop.add_reader(sock, self._on_readable)
        self._update_writer()

    def _unregister(self, sock: Any = None) -> None:
        """Stop watching the socket; `sock`: only if that is still the one watched."""
        if sock is not None and sock is not self._sock:
            return
        if self._sock is not None:
            # By now paho may have closed the socket; the selector knows it by number.
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._sock = None
        self._writable.set()

    def _after_connect(self) -> None:
        self._connected = True
        for topic, qos in self._subs.items():
            self._client.subscribe(topic, qos)
        for cb in list(self.on_connected):
            cb()

    def _after_disconnect(self) -> None:
        was = self._connected
        self._connected = False
        self._unregister()
        if was:
            for cb in list(self.on_disconnected):
                cb()
        if not self._closing and self._reconnect_task is None:
            self._reconnect_task = self._loop.create_task(self._reconnect_forever())

    async def _open(self, timeout: float) -> None:
        s = self.settings
        self._connack = self._loop.create_future()
        try:
            await asyncio.wait_for(
                self._loop.run_in_executor(None, self._client.connect, s.host, s.port, s.keepalive),
                timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise BrokerError(
                f"cannot reach the MQTT broker at {s.address} ({reason}). "
                "Is `tether up` or your broker running there? Check host, port and TLS settings."
            ) from exc
        self._register()
        try:
            rc = await asyncio.wait_for(self._connack, timeout)
        except TimeoutError as exc:
            self._client.disconnect()
            raise BrokerError(f"the broker at {s.address} did not answer CONNECT in {timeout:.0f} s") from exc
        except ConnectionResetError as exc:
            self._unregister()
            raise BrokerError(f"the broker at {s.address} closed the connection before accepting "
                              "it. Is it a TLS port (set broker.tls), or is it shutting down?") from exc
        if rc != 0:
            self._closing = True
            self._client.disconnect()
            self._unregister()
            # paho reports MQTT 3.1.1 return codes as MQTT 5 reason codes.
            what = {
                4: "bad username or password", 134: "bad username or password",
                5: "not authorised", 135: "not authorised (unknown user or wrong password)",
                2: "client id refused", 133: "client id refused",
            }
            raise BrokerError(
                f"the broker at {s.address} refused {s.username!r}: {what.get(rc, f'code {rc}')}. "
                "Check the credentials in your identity file."
            )
        self._run_events()

    async def connect(self, timeout: float = 10.0) -> None:
        await self._open(timeout)
        self._misc_task = self._loop.create_task(self._misc_forever())

    async def _reconnect_forever(self) -> None:
        delay = BACKOFF_MIN
        try:
            while not self._closing and not self._connected:
                await asyncio.sleep(delay)
                try:
                    self._connack = self._loop.create_future()
                    await asyncio.wait_for(self._loop.run_in_executor(None, self._client.reconnect), 10)
                    # reconnect() closed the last attempt's socket on its own thread, and may
                    # have failed and closed this one: those events run now, before this
                    # attempt's socket is watched, or one ran later would unhook it (seen:
                    # "reconnected", then nothing read or sent for good).
                    self._run_events()
                    self._register()
                    rc = await asyncio.wait_for(self._connack, 10)
                    self._run_events()
                    if rc == 0:
                        self.reconnects += 1
                        log.info("reconnected to %s", self.settings.address)
                        break
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    log.debug("reconnect to %s failed: %s", self.settings.address, exc)
                    self._unregister()
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            self._reconnect_task = None

    async def _misc_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._client.loop_misc()
                self._run_events()
                self._update_writer()

    @property
    def connected(self) -> bool:
        return self._connected

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subs[topic] = qos
        if self._connected:
            self._client.subscribe(topic, qos)
            self._update_writer()

    async def subscribe_confirmed(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK, so messages published next are not missed."""
        self._subs[topic] = qos
        if not self._connected:
            raise BrokerError(f"not connected to the broker at {self.settings.address}")
        _rc, mid = self._client.subscribe(topic, qos)
        if mid is None:
            raise BrokerError(f"subscribing to {topic} failed")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._subacks[mid] = fut
        self._update_writer()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise BrokerError(f"the broker at {self.settings.address} did not confirm a subscription") from exc

    def unsubscribe(self, topic: str) -> None:
        if self._subs.pop(topic, None) is not None and self._connected:
            self._client.unsubscribe(topic)
            self._update_writer()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte cap")
        if not self._connected and qos == 0:
            return  # lost like any QoS 0 message; the channel retransmits
        self._client.publish(topic, payload, qos, retain)
        self._update_writer()

    def publish_frame(self, topic: str, payload: bytes, qos: int) -> None:
        """A session channel's frame. The channel keeps every reliable frame until it is
        acknowledged and resends them all after a reconnect (Channel.resend_all), so while
        offline a frame is dropped here instead of queued in paho: queued, every RTO's
        resend of a cut would be flooded onto the broker on reconnect (17 MiB of
        duplicates for one session after a 60 s cut, measured)."""
        if self._connected:
            self.publish(topic, payload, qos)

    @property
    def backlogged(self) -> bool:
        return not self._writable.is_set()

    async def drain(self) -> None:
        await self._writable.wait()

    async def close(self) -> None:
        """Disconnect cleanly (the broker does not publish the will)."""
        self._closing = True
        for task in (self._reconnect_task, self._misc_task):
            if task is not None:
                task.cancel()
        if self._sock is not None:
            self._client.disconnect()
            self._client.loop_write()
        self._unregister()
        self._connected = False
