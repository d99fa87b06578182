"""A principal that talks to a running authority directly, over the real broker: crafted
grant requests (fields no tether command would send), raw payloads and floods."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tether import authz
from tether.edge.keys import Identity
from tether.encoding import b64d
from tether.topics import Topics


class Requester:
    """Connected as `identity` (on its last CLI slot, so `tether` commands of the same user
    can run alongside) and subscribed to its reply topic."""

    def __init__(self, port: int, identity: Path, slot: str | None = None) -> None:
        self.identity = Identity.load(identity)
        self.name = slot or f"{self.identity.name}.7"
        self.topics = Topics()
        self.replies: queue.Queue[bytes] = queue.Queue()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.name, protocol=paho.MQTTv311)
        self.client.username_pw_set(self.name, self.identity.broker["password"])
        self.client.on_connect = lambda c, *_: c.subscribe(self.topics.authz_reply(self.name), 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.replies.put(bytes(msg.payload))
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError(f"{self.name} could not subscribe to its replies")

    def request(self, body: dict[str, Any]) -> authz.PendingRequest:
        return authz.build_request(self.identity.signing_key, self.identity.name,
                                   b64d(self.identity.authority["x25519"]), body, time.time(), rand=os.urandom)

    def send(self, payload: bytes, qos: int = 1) -> None:
        self.client.publish(self.topics.authz_request(self.name), payload, qos).wait_for_publish(10)

    def answer(self, pending: authz.PendingRequest, timeout: float = 10.0) -> dict[str, Any] | None:
        """The authority's reply to `pending`, or None if none came within `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                payload = self.replies.get(timeout=left)
            except queue.Empty:
                break
            doc = authz.open_reply(pending, b64d(self.identity.authority["ed25519"]), payload)
            if doc is not None:
                return doc
        return None

    def ask(self, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
        pending = self.request(body)
        self.send(pending.payload)
        return self.answer(pending, timeout)

    def flood(self, payloads: list[bytes], count: int, port: int) -> float:
        """Publish `count` payloads (cycling through `payloads`) on this principal's request
        topic at QoS 0, from a connection of its own (slot .6), as fast as the broker reads
        them: the packets are built first and written in one go. Returns the seconds taken."""
        name = f"{self.identity.name}.6"
        topic = self.topics.authz_request(name).encode()
        packets = [_packet(0x30, _string(topic) + p) for p in payloads]
        stream = b"".join(packets[i % len(packets)] for i in range(count))
        connect = _packet(0x10, _string(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
                          + _string(name.encode()) + _string(name.encode())
                          + _string(self.identity.broker["password"].encode()))
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(connect)
            if sock.recv(4)[:1] != b"\x20":
                raise AssertionError("the broker refused the flooding connection")
            sock.sendall(stream)
            sock.sendall(b"\xe0\x00")  # DISCONNECT: sent after every PUBLISH
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        return time.monotonic() - start

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _packet(header: int, body: bytes) -> bytes:
    """An MQTT packet: fixed header, remaining length (variable-length integer), body."""
    size, length = len(body), bytearray()
    while True:
        size, digit = divmod(size, 128)
        length.append(digit | (0x80 if size else 0))
        if not size:
            return bytes([header]) + bytes(length) + body
