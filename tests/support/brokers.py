"""Real brokers for tests: the embedded amqtt broker and Mosquitto, same handle interface.

* :func:`start_mosquitto` runs ``/usr/sbin/mosquitto`` from the repository's own
  ``mosquitto.conf``, rewriting only the listener (port, 127.0.0.1), ``password_file``,
  ``acl_file``, the tether plugin and its ``console-keys`` (as ./install.sh builds it),
  ``persistence_location`` and the pid file; its log (stderr) goes to
  ``WORKDIR/mosquitto.log``. When the tests run as root it adds ``user root``: Mosquitto
  would otherwise switch to the ``mosquitto`` user before reading the (0600, root-owned)
  test files and the work directory.
* :func:`start_embedded` runs ``python -m tether.commands.main broker --files DIR --listen
  127.0.0.1:PORT`` as a separate process, so it can be stopped and restarted.

Both return a :class:`BrokerProcess` with ``.host``, ``.port``, ``.kind`` ("amqtt" or
"mosquitto"), ``.stop()``, ``.restart()``, ``.reload()`` and ``.log_text()``; both are
ready (a CONNECT got its CONNACK) when the call returns. Every process is stopped by pid
(SIGTERM, then SIGKILL), also at interpreter exit if a test forgot.

End-to-end tests that run on both brokers::

    from support.brokers import BROKER_KINDS, start_broker

    @pytest.fixture(params=BROKER_KINDS)
    def broker(request, tmp_path):
        write_broker_files(tmp_path / "files", users)
        b = start_broker(request.param, tmp_path / "files", tmp_path / "work")
        yield b
        b.stop()

:class:`ProbeClient` is a small synchronous paho client for asserting what a principal
can and cannot do. To show that something is *not* delivered without sleeping, publish a
marker after it and wait for the marker (see :meth:`ProbeClient.wait_for`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "BROKER_KINDS",
    "MOSQUITTO_BIN",
    "MOSQUITTO_CONF",
    "BrokerProcess",
    "EmbeddedProcess",
    "Message",
    "MosquittoProcess",
    "Packet",
    "ProbeClient",
    "RawClient",
    "connect_packet",
    "connected",
    "free_port",
    "mqtt_probe",
    "poll",
    "puback_packet",
    "publish_packet",
    "render_test_mosquitto_conf",
    "start_broker",
    "start_embedded",
    "start_mosquitto",
    "subscribe_packet",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BROKER_KINDS: Final = ("amqtt", "mosquitto")
MOSQUITTO_CONF: Final = REPO_ROOT / "mosquitto.conf"
# tether's Mosquitto plugin (console logins), as ./install.sh builds it.
MOSQUITTO_PLUGIN: Final = REPO_ROOT / "build" / "mosquitto" / "tether_console_auth.so"
MOSQUITTO_BIN: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 10.0

_LIVE: set[BrokerProcess] = set()


def poll(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Wait until ``condition()`` is truthy and return it; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive: int = 0,
    clean_session: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    """An MQTT 3.1.1 CONNECT packet, byte for byte."""
    flags = 0x02 if clean_session else 0
    payload = _mqtt_str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _mqtt_str(topic) + _mqtt_str(message)
    if username is not None:
        flags |= 0x80
        payload += _mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_str(password)
    body = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 1, *, retain: bool = False
) -> bytes:
    """A PUBLISH packet. Unlike paho, it will happily build an invalid topic."""
    header = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _mqtt_str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([header]) + _varint(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_mqtt_str(f) + bytes([q]) for f, q in filters)
    return b"\x82" + _varint(len(body)) + body


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


@dataclass(frozen=True)
class Packet:
    type: int  # 1 CONNECT ... 14 DISCONNECT
    flags: int
    body: bytes

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    def publish_fields(self) -> tuple[str, int | None, bytes]:
        """(topic, packet id or None, payload) of a PUBLISH."""
        n = struct.unpack("!H", self.body[:2])[0]
        topic = self.body[2 : 2 + n].decode()
        rest = self.body[2 + n :]
        if self.qos:
            return topic, struct.unpack("!H", rest[:2])[0], rest[2:]
        return topic, None, rest


class RawClient:
    """MQTT over a bare socket, for attacks that paho refuses to make."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""
        self.timed_out = False  # the last read ended at the socket timeout, not EOF

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, *args: Any, **kwargs: Any) -> int | None:
        """Send CONNECT; the CONNACK return code, or None if the broker hung up."""
        self.send(connect_packet(*args, **kwargs))
        packet = self.read_packet()
        if packet is None or packet.type != 2:
            return None
        return packet.body[1]

    def _read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            except TimeoutError:
                self.timed_out = True
                return None
            if not chunk:
                return None
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_packet(self) -> Packet | None:
        """The next packet, or None on EOF (or the socket timeout)."""
        first = self._read_exact(1)
        if first is None:
            return None
        length, shift = 0, 0
        while True:
            b = self._read_exact(1)
            if b is None:
                return None
            length += (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
        body = self._read_exact(length)
        if body is None:
            return None
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    def read_until(self, packet_type: int) -> Packet | None:
        while True:
            packet = self.read_packet()
            if packet is None or packet.type == packet_type:
                return packet

    def closed_by_peer(self) -> bool:
        """Whether the broker closes the connection (EOF or reset) before the socket's
        timeout; packets it sends first are skipped. A timeout is not a close."""
        self.timed_out = False
        while self.read_packet() is not None:
            pass
        return not self.timed_out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mqtt_probe(host: str, port: int, timeout: float = 1.0) -> int | None:
    """Send an anonymous CONNECT; the CONNACK return code, or None if none came back.

    A refusal (5, not authorised) still proves that the broker is up and speaks MQTT.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(connect_packet("tether-probe"))
            data = b""
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    if data[0] != 0x20 or data[1] != 0x02:
        return None
    return data[3]


class BrokerProcess:
    """A broker in a child process. Subclasses say how to start it."""

    kind: str = ""

    ws_port: int | None = None  # the websocket listener, if it has one

    def __init__(self, files_dir: Path, workdir: Path, port: int | None = None) -> None:
        self.files_dir = Path(files_dir).resolve()
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.log_path = self.workdir / f"{self.kind}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- to override -------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _reload_marker(self) -> str:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> BrokerProcess:
        if self.alive():
            raise RuntimeError(f"{self.kind} broker already running (pid {self.pid})")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,  # not the repo root: ./tether would shadow the install
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            poll(self._ready, timeout=START_TIMEOUT, interval=0.02)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"{self.kind} broker did not come up on {self.host}:{self.port}:\n{self.log_text()}"
            ) from None
        return self

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(
                f"{self.kind} broker exited with {self._proc.returncode if self._proc else '?'}"
                f":\n{self.log_text()}"
            )
        return mqtt_probe(self.host, self.port, timeout=0.5) is not None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM) by pid and wait; SIGKILL if it does not go.

        Returns the exit status (None if it was not running).
        """
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return None
        if proc.poll() is not None:
            return proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL by pid: a crash, no clean shutdown."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> BrokerProcess:
        """Stop and start again on the same port (Mosquitto keeps its persistence)."""
        self.stop()
        return self.start()

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP, and return once the broker has re-read passwd and acl."""
        if self._proc is None or not self.alive():
            raise RuntimeError(f"{self.kind} broker is not running")
        marker = self._reload_marker()
        before = self.log_text().count(marker)
        os.kill(self._proc.pid, signal.SIGHUP)
        poll(lambda: self.log_text().count(marker) > before, timeout=timeout)
        # The marker is logged while the reload runs; a CONNACK round trip afterwards is
        # only answered once the (single-threaded) reload has finished.
        poll(lambda: mqtt_probe(self.host, self.port) is not None, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.host}:{self.port} pid={self.pid}>"


class EmbeddedProcess(BrokerProcess):
    """``tether broker`` (amqtt) in a child process."""

    kind = "amqtt"

    def __init__(
        self,
        files_dir: Path,
        workdir: Path,
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        ws_port: int | None = None,
    ) -> None:
        super().__init__(files_dir, workdir, port)
        self.extra_args = list(extra_args)
        self.ws_port = ws_port
        if ws_port is not None:
            self.extra_args += ["--ws-listen", f"{HOST}:{ws_port}"]

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tether.commands.main",
            "broker",
            "--files",
            str(self.files_dir),
            "--listen",
            f"{self.host}:{self.port}",
            "--verbose",
            *self.extra_args,
        ]

    def _reload_marker(self) -> str:
        return "reloaded passwd and acl"


def render_test_mosquitto_conf(
    files_dir: Path,
    workdir: Path,
    port: int,
    source: Path = MOSQUITTO_CONF,
    *,
    stay_root: bool | None = None,
    ws_port: int | None = None,
) -> str:
    """The repository's mosquitto.conf with only the test-specific lines rewritten.

    The plain listener moves to ``127.0.0.1:port``; the websockets listener (a listener
    followed by ``protocol websockets``) keeps its interface (``lo``) and moves to
    ``ws_port`` (a free port if None). ``stay_root`` (default: running as root) adds
    ``user root``; without it a root-started Mosquitto drops to the ``mosquitto`` user as
    in production.
    """
    if stay_root is None:
        stay_root = os.geteuid() == 0
    files_dir, workdir = Path(files_dir).resolve(), Path(workdir).resolve()
    lines = source.read_text().splitlines()

    def key_of(raw: str) -> str:
        words = raw.split()
        return words[0] if words and not raw.lstrip().startswith("#") else ""

    # Which listener each active `listener` line opens: the `protocol` line before the
    # next listener says websockets.
    kinds: dict[int, str] = {}
    current: int | None = None
    for i, raw in enumerate(lines):
        key = key_of(raw)
        if key == "listener":
            current = i
            kinds[i] = "mqtt"
        elif key == "protocol" and current is not None:
            kinds[current] = raw.split()[1]
    if sorted(kinds.values()) not in (["mqtt"], ["mqtt", "websockets"]):
        raise ValueError(
            "mosquitto.conf must have one plain listener and at most one websockets listener; "
            "teach tests/support/brokers.py how to run anything else"
        )
    out: list[str] = []
    for i, raw in enumerate(lines):
        key = key_of(raw)
        if key == "listener" and kinds[i] == "websockets":
            iface = raw.split()[2] if len(raw.split()) > 2 else ""
            out.append(f"listener {ws_port if ws_port is not None else free_port()} {iface}".rstrip())
        elif key == "listener":
            out.append(f"listener {port} {HOST}")
        elif key == "password_file":
            out.append(f"password_file {files_dir / 'passwd'}")
        elif key == "acl_file":
            out.append(f"acl_file {files_dir / 'acl'}")
        elif key == "plugin":
            out.append(f"plugin {MOSQUITTO_PLUGIN}")
        elif key == "plugin_opt_console_keys":
            out.append(f"plugin_opt_console_keys {files_dir / 'console-keys'}")
        elif key == "persistence_location":
            out.append(f"persistence_location {workdir}/")
        elif key in ("pid_file", "user"):
            continue
        else:
            out.append(raw)
    out.append("")
    out.append("# --- rewritten for the test run -------------------------------------------")
    out.append(f"pid_file {workdir / 'mosquitto.pid'}")
    if stay_root:
        out.append("user root")
    return "\n".join(out) + "\n"


class MosquittoProcess(BrokerProcess):
    """``mosquitto -c`` with the repository's mosquitto.conf, rewritten for the test."""

    kind = "mosquitto"

    def __init__(
        self,
        files_dir: Path,
        workdir: Path,
        port: int | None = None,
        *,
        stay_root: bool | None = None,
        ws_port: int | None = None,
    ) -> None:
        super().__init__(files_dir, workdir, port)
        self.ws_port: int | None = ws_port if ws_port is not None else free_port()
        self.conf_path = self.workdir / "mosquitto.conf"
        self.conf_path.write_text(
            render_test_mosquitto_conf(self.files_dir, self.workdir, self.port,
                                       stay_root=stay_root, ws_port=self.ws_port)
        )

    def _command(self) -> list[str]:
        return [MOSQUITTO_BIN, "-c", str(self.conf_path)]

    def _reload_marker(self) -> str:
        return "Reloading config."


def start_mosquitto(
    files_dir: Path,
    workdir: Path,
    port: int | None = None,
    *,
    stay_root: bool | None = None,
    ws_port: int | None = None,
) -> MosquittoProcess:
    """Start Mosquitto from the repository's mosquitto.conf; return once it answers.

    ``stay_root=False`` lets a root-started Mosquitto drop to its own user, as in
    production; the files and ``workdir`` must then be readable (writable) by it. Its
    websockets listener (on ``lo``) gets ``ws_port``, or a free port: ``.ws_port``.
    """
    proc = MosquittoProcess(files_dir, workdir, port, stay_root=stay_root, ws_port=ws_port)
    proc.start()
    return proc


def start_embedded(
    files_dir: Path,
    port: int | None = None,
    workdir: Path | None = None,
    *,
    extra_args: Sequence[str] = (),
    ws_port: int | None = None,
) -> EmbeddedProcess:
    """Start ``tether broker`` in a child process; return once it answers.

    ``extra_args`` go to ``tether broker``; ``ws_port`` adds its websocket listener
    (``--ws-listen 127.0.0.1:PORT``), as ``.ws_port``.
    """
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="tether-amqtt-"))
    proc = EmbeddedProcess(files_dir, workdir, port, extra_args=extra_args, ws_port=ws_port)
    proc.start()
    return proc


def start_broker(
    kind: str, files_dir: Path, workdir: Path, port: int | None = None, *, websockets: bool = False
) -> BrokerProcess:
    """``kind`` is "amqtt" or "mosquitto" (the ids of :data:`BROKER_KINDS`).

    Mosquitto always opens the websockets listener of mosquitto.conf; the embedded broker
    only with ``websockets=True``. Either way ``.ws_port`` is its port (or None)."""
    if kind == "amqtt":
        return start_embedded(files_dir, port, workdir, ws_port=free_port() if websockets else None)
    if kind == "mosquitto":
        return start_mosquitto(files_dir, workdir, port)
    raise ValueError(f"unknown broker kind {kind!r}; expected one of {BROKER_KINDS}")


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill()


# ---------------------------------------------------------------------------------------
# A small synchronous MQTT client for assertions.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class ProbeClient:
    """paho (MQTT 3.1.1) on its own thread, with blocking helpers for tests.

    ``client_id`` defaults to the username, as tether principals connect.
    """

    def __init__(
        self,
        broker: BrokerProcess | tuple[str, int],
        username: str | None = None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        keepalive: int = 30,
        will: tuple[str, bytes, int, bool] | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.host, self.port = (
            (broker.host, broker.port) if isinstance(broker, BrokerProcess) else broker
        )
        self.username = username
        self.messages: list[Message] = []
        self.connack: Any = None
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._subacks: dict[int, list[int]] = {}
        cid = client_id if client_id is not None else (username or "")
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cid,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            reconnect_on_failure=False,
            transport=transport,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            self._client.will_set(will[0], will[1], will[2], will[3])
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._keepalive = keepalive

    # paho callbacks (network thread): record only, never raise.
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack = rc

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._lock:
            self._subacks[mid] = [int(getattr(rc, "value", rc)) for rc in rcs]

    # -- blocking API -----------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> bool:
        """Connect; True if the broker accepted (CONNACK 0). False if refused or closed."""
        self._client.connect(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()
        poll(lambda: self.connack is not None or self.disconnected.is_set(), timeout=timeout)
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0) -> int:
        """Subscribe and wait for the SUBACK; its return code (granted QoS or 0x80)."""
        rc, mid = self._client.subscribe(topic_filter, qos)
        if rc != 0 or mid is None:
            raise RuntimeError(f"subscribe failed locally: {rc}")
        codes: list[int] = poll(lambda: self._subacks.get(mid), timeout=timeout)
        return 0x80 if codes[0] >= 0x80 else codes[0]

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout)

    def received(self, topic: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def wait_for(self, topic: str, payload: bytes | None = None, timeout: float = 10.0) -> Message:
        """Wait for a message on ``topic`` (with ``payload``, if given) and return it."""

        def find() -> Message | None:
            for m in self.received(topic):
                if payload is None or m.payload == payload:
                    return m
            return None

        found: Message = poll(find, timeout=timeout)
        return found

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        poll(self.disconnected.is_set, timeout=timeout)

    def drop(self) -> None:
        """Vanish without DISCONNECT (the broker sends the will)."""
        self._client.loop_stop()
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if not self.disconnected.is_set():
                self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> ProbeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def connected(
    broker: BrokerProcess, username: str, password: str, **kwargs: Any
) -> Iterator[ProbeClient]:
    """A connected :class:`ProbeClient` that is closed afterwards."""
    client = ProbeClient(broker, username, password, **kwargs)
    try:
        if not client.connect():
            raise AssertionError(f"{username} could not connect to {broker!r}: {client.connack}")
        yield client
    finally:
        client.close()
