"""Each amqtt 0.12.1 bug (docs/sources.md#amqtt-bug-1 to -5), attacked against OUR embedded broker.

Every test reproduces the attack with a raw socket or paho and shows that it fails here.
The broker runs as `tether broker` in its own process, as in production.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import (
    BrokerProcess,
    ProbeClient,
    RawClient,
    connected,
    free_port,
    poll,
    puback_packet,
    publish_packet,
    start_embedded,
    subscribe_packet,
)
from support.pki import make_pki

from tether.broker.files import BrokerUser, write_broker_files

P = "tether/v1"
PRINCIPALS = {"web1": "agent", "web2": "agent", "alice": "user", "bob": "user", "root": "admin"}
PUBLISH, PUBACK, SUBACK = 3, 4, 9


def pw(name: str) -> str:
    return f"pw-{name}"


@pytest.fixture(scope="module")
def ws_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, ws_port: int) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("amqtt")
    write_broker_files(
        base / "files", [BrokerUser.with_password(n, r, pw(n)) for n, r in PRINCIPALS.items()]
    )
    b = start_embedded(
        base / "files", workdir=base / "work", extra_args=["--ws-listen", f"127.0.0.1:{ws_port}"]
    )
    try:
        yield b
    finally:
        b.stop()


def raw_login(broker: BrokerProcess, name: str, **kwargs: object) -> RawClient:
    raw = RawClient(broker.host, broker.port)
    assert raw.connect(name, name, pw(name), **kwargs) == 0  # type: ignore[arg-type]
    return raw


# -- 1. an unauthenticated CONNECT reusing a live client id wiped its subscriptions ------


def test_unauthenticated_connect_cannot_touch_a_live_session(broker: BrokerProcess) -> None:
    with (
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "web1", pw("web1")) as web1,
    ):
        alice.subscribe(f"{P}/a/+/s/alice/#", 1)
        attacks = [
            {"client_id": "alice"},
            {"client_id": "alice", "clean_session": False},
            {"client_id": "alice", "username": "alice", "password": "guess"},
            {"client_id": "alice", "username": "alice"},
            {"client_id": "alice", "username": "mallory", "password": "x"},
        ]
        for attack in attacks:
            with RawClient(broker.host, broker.port) as raw:
                assert raw.connect(**attack) == 5, attack  # type: ignore[arg-type]
                assert raw.closed_by_peer()
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"still subscribed", qos=1)
        alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"still subscribed")
        assert not alice.disconnected.is_set()


# -- 2. PUBLISH to $... or a wildcard topic ended the connection's message loop ----------


def test_bad_topic_publish_is_dropped_and_the_connection_keeps_working(
    broker: BrokerProcess,
) -> None:
    with connected(broker, "root", pw("root")) as root, raw_login(broker, "web1") as raw:
        root.subscribe("#", 1)
        raw.send(publish_packet("$SYS/broker/hack", b"dollar", qos=0))
        raw.send(publish_packet("$x", b"dollar-1", qos=1, packet_id=1))
        raw.send(publish_packet(f"{P}/a/web1/+/x", b"plus", qos=1, packet_id=2))
        raw.send(publish_packet(f"{P}/a/web1/#", b"hash", qos=0))
        raw.send(publish_packet("", b"empty", qos=0))
        raw.send(publish_packet(f"{P}/a/web1/presence", b"alive", qos=1, packet_id=3))
        acked = set()
        while 3 not in acked:
            packet = raw.read_until(PUBACK)
            assert packet is not None, "connection closed"
            acked.add(int.from_bytes(packet.body[:2], "big"))
        root.wait_for(f"{P}/a/web1/presence", b"alive")
        assert [m.payload for m in root.received()] == [b"alive"]
        raw.send(publish_packet(f"{P}/a/web1/presence", b"", qos=1, packet_id=4, retain=True))


# -- 3. a QoS 0 publish was delivered at the subscriber's QoS ---------------------------


def test_qos0_publish_reaches_a_qos1_subscriber_at_qos0(broker: BrokerProcess) -> None:
    with raw_login(broker, "alice") as sub, connected(broker, "web1", pw("web1")) as web1:
        web1.publish(f"{P}/a/web1/presence", b"retained-q0", qos=0, retain=True)
        sub.send(subscribe_packet(1, [(f"{P}/a/+/s/alice/#", 1), (f"{P}/a/web1/presence", 1)]))
        seen: dict[bytes, int] = {}
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"q0", qos=0)
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"q1", qos=1)
        while len(seen) < 3:
            packet = sub.read_packet()
            assert packet is not None, "connection closed"
            if packet.type != PUBLISH:
                continue
            _topic, packet_id, payload = packet.publish_fields()
            seen[payload] = packet.qos
            if packet_id is not None:
                sub.send(puback_packet(packet_id))
        assert seen == {b"retained-q0": 0, b"q0": 0, b"q1": 1}
        web1.publish(f"{P}/a/web1/presence", b"", qos=1, retain=True)


# -- 4. a QoS 1 delivery gave up after 5 s, with no redelivery --------------------------


def _persistent_alice(broker: BrokerProcess) -> RawClient:
    return raw_login(broker, "alice", clean_session=False)


def _next_publish(raw: RawClient) -> tuple[bytes, int, bool]:
    packet = raw.read_until(PUBLISH)
    assert packet is not None, "connection closed"
    _topic, packet_id, payload = packet.publish_fields()
    assert packet_id is not None
    return payload, packet_id, packet.dup


def test_unacked_qos1_delivery_is_redelivered_after_reconnect(broker: BrokerProcess) -> None:
    topic = f"{P}/a/web1/s/alice/s1/a2c"
    try:
        with _persistent_alice(broker) as sub:
            sub.send(subscribe_packet(1, [(topic, 1)]))
            assert sub.read_until(SUBACK) is not None
            with connected(broker, "web1", pw("web1")) as web1:
                web1.publish(topic, b"control", qos=1)
            payload, _, dup = _next_publish(sub)
            assert (payload, dup) == (b"control", False)
            # Gone without a PUBACK: stock amqtt forgets the message right here.
        with _persistent_alice(broker) as sub:
            payload, packet_id, dup = _next_publish(sub)
            assert (payload, dup) == (b"control", True)
            sub.send(puback_packet(packet_id))
    finally:
        with RawClient(broker.host, broker.port) as raw:  # end the persistent session
            assert raw.connect("alice", "alice", pw("alice"), clean_session=True) == 0


def test_qos1_delivery_does_not_give_up_after_5s(broker: BrokerProcess) -> None:
    topic = f"{P}/a/web1/s/alice/s2/a2c"
    try:
        with _persistent_alice(broker) as sub:
            sub.send(subscribe_packet(1, [(topic, 1)]))
            assert sub.read_until(SUBACK) is not None
            with connected(broker, "web1", pw("web1")) as web1:
                web1.publish(topic, b"slow", qos=1)
            assert _next_publish(sub)[0] == b"slow"
            # A slow consumer: no PUBACK for longer than stock amqtt's 5 s give-up. The
            # wait itself is the test; nothing else can show a timer that did not fire.
            time.sleep(5.5)
        with _persistent_alice(broker) as sub:
            payload, packet_id, dup = _next_publish(sub)
            assert (payload, dup) == (b"slow", True)
            sub.send(puback_packet(packet_id))
    finally:
        with RawClient(broker.host, broker.port) as raw:
            assert raw.connect("alice", "alice", pw("alice"), clean_session=True) == 0


# -- 5. websocket connections closed on messages over ~1 MiB; over-cap packets -----------


def test_over_cap_length_header_closes_at_once(broker: BrokerProcess) -> None:
    with raw_login(broker, "web1") as raw:
        # A PUBLISH that announces 256 MiB and sends none of it: the broker must not wait
        # for (or buffer) the body, just hang up.
        raw.send(b"\x30\xff\xff\xff\x7f")
        start = time.monotonic()
        assert raw.closed_by_peer()
        assert time.monotonic() - start < 5
    with RawClient(broker.host, broker.port) as raw:
        raw.send(b"\x10\xff\xff\xff\x7f")  # a CONNECT of 256 MiB
        assert raw.closed_by_peer()
    with connected(broker, "web1", pw("web1")):
        pass  # and the broker is fine


def test_websocket_listener(broker: BrokerProcess, ws_port: int) -> None:
    ws = (broker.host, ws_port)
    with (
        connected(broker, "alice", pw("alice")) as alice,
        ProbeClient(ws, "web1", pw("web1"), transport="websockets") as web1,
    ):
        assert web1.connect()
        alice.subscribe(f"{P}/a/web1/s/alice/#", 1)
        frame = bytes(range(256)) * 256  # one 64 KiB tether frame
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", frame, qos=1)
        assert alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c").payload == frame
        # Over the cap: that connection is closed cleanly, like on TCP and in Mosquitto.
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"z" * 300_000, qos=0)
        web1.wait_disconnected()
    with ProbeClient(ws, "web1", pw("web1"), transport="websockets") as again:
        assert again.connect()
        again.publish(f"{P}/a/web1/s/alice/s1/a2c", b"after", qos=1)
    with ProbeClient(ws, "web1", "wrong", transport="websockets") as refused:
        assert not refused.connect()


# -- found on the way -------------------------------------------------------------------


def test_silent_client_is_dropped_and_its_will_published(broker: BrokerProcess) -> None:
    """Stock amqtt never enforces keepalive: a half-open agent stayed 'online' forever.
    (Mosquitto 2.0.11 does this too, but only checks about every 5 s.)"""
    with connected(broker, "root", pw("root")) as root:
        root.subscribe(f"{P}/a/web2/presence", 1)
        with RawClient(broker.host, broker.port) as raw:
            will = (f"{P}/a/web2/presence", b"offline", 1, False)
            assert raw.connect("web2", "web2", pw("web2"), keepalive=1, will=will) == 0
            start = time.monotonic()
            root.wait_for(f"{P}/a/web2/presence", b"offline")
            assert time.monotonic() - start < 4  # 1.5 x keepalive, rounded up
            assert raw.closed_by_peer()


@pytest.mark.parametrize("clean_session", [True, False])
def test_takeover_closes_the_old_connection_and_keeps_the_new(
    broker: BrokerProcess, clean_session: bool
) -> None:
    topic = f"{P}/a/web1/s/alice/s3/a2c"
    with connected(broker, "web1", pw("web1")) as web1:
        first = ProbeClient(broker, "alice", pw("alice"), clean_session=clean_session)
        second = ProbeClient(broker, "alice", pw("alice"), clean_session=clean_session)
        try:
            assert first.connect()
            first.subscribe(topic, 1)
            assert second.connect()
            first.wait_disconnected()  # no zombie left behind
            second.subscribe(topic, 1)
            web1.publish(topic, b"to the new one", qos=1)
            second.wait_for(topic, b"to the new one")
            assert not second.disconnected.is_set()
        finally:
            first.close()
            second.close()
    with RawClient(broker.host, broker.port) as raw:
        assert raw.connect("alice", "alice", pw("alice"), clean_session=True) == 0


def test_reconnecting_client_gets_no_foreign_retained_messages(broker: BrokerProcess) -> None:
    """Stock amqtt replayed every retained message to a reconnecting client. Here only its
    own filters, each message checked; and a message on a topic tether does not retain
    (bob's session topic) is not kept at all, so even web1, which may read it, gets none."""
    secret = f"{P}/a/web1/s/bob/s1/c2a"
    with connected(broker, "root", pw("root")) as root, connected(broker, "bob", pw("bob")) as bob:
        root.subscribe("#", 1)  # somebody holds a catch-all subscription
        bob.publish(secret, b"bob's retained secret", qos=1, retain=True)
        root.wait_for(secret)
        with (
            connected(broker, "alice", pw("alice")) as alice,
            connected(broker, "web1", pw("web1")) as web1,
        ):
            alice.subscribe(f"{P}/a/+/s/alice/#", 1)
            web1.subscribe(f"{P}/a/web1/s/+/+/c2a", 1)
            bob.publish(f"{P}/a/web1/s/bob/s1/c2a", b"marker", qos=1)
            web1.wait_for(secret, b"marker")
            assert [m.payload for m in web1.received()] == [b"marker"]
            web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"marker", qos=1)
            alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"marker")
            assert [m.payload for m in alice.received()] == [b"marker"]
        bob.publish(secret, b"", qos=1, retain=True)


# -- TLS with client certificates ------------------------------------------------------


def test_tls_listener_requires_a_client_certificate_from_the_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    files = tmp_path / "files"
    write_broker_files(files, [BrokerUser.with_password("web1", "agent", pw("web1"))])
    tls_port = free_port()
    broker = start_embedded(
        files,
        workdir=tmp_path / "work",
        extra_args=[
            "--tls-listen",
            f"127.0.0.1:{tls_port}",
            "--certfile",
            str(pki["server.crt"]),
            "--keyfile",
            str(pki["server.key"]),
            "--cafile",
            str(pki["ca.crt"]),
        ],
    )
    try:

        def attempt(cert: str | None, password: str = pw("web1")) -> int | None:
            ctx = ssl.create_default_context(cafile=str(pki["ca.crt"]))
            if cert is not None:
                ctx.load_cert_chain(str(pki[f"{cert}.crt"]), str(pki[f"{cert}.key"]))
            raw = RawClient(broker.host, tls_port)
            try:
                raw.sock = ctx.wrap_socket(raw.sock, server_hostname="127.0.0.1")
                return raw.connect("web1", "web1", password)
            except (ssl.SSLError, OSError):
                return None
            finally:
                raw.close()

        assert attempt("client") == 0
        assert attempt("client", "wrong") == 5
        assert attempt(None) in (None, 5)  # no certificate: the handshake fails
        assert attempt("rogue") in (None, 5)  # a certificate from another CA
        # The plain loopback listener is unaffected.
        with connected(broker, "web1", pw("web1")):
            pass
    finally:
        broker.stop()


def test_auth_plugin_refuses_missing_client_certificate() -> None:
    """Defence in depth: even if a TLS context were lax, the plugin checks the session."""
    from amqtt.session import Session

    from tether.acl import parse_acl
    from tether.broker.embedded import _LISTENER, _State
    from tether.broker.passwd import hash_password

    state = _State(Path("/nonexistent"))
    state.passwd = {"web1": hash_password(pw("web1"))}
    state.acl = parse_acl("")
    state.require_cert = frozenset({"tls"})
    session = Session()
    session.username, session.password, session.client_id = "web1", pw("web1"), "web1"
    session.attributes[_LISTENER] = "default"
    assert state.credentials_ok(session)
    session.attributes[_LISTENER] = "tls"
    assert not state.credentials_ok(session)  # no ssl_object at all


# -- a slow subscriber cannot make the broker queue without bound -------------------------


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_slow_subscriber_queue_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bound: str
) -> None:
    """Stock amqtt keeps one task (holding the payload) per message for a subscriber that
    does not read. Here at most max_queued deliveries, or max_queued_bytes of payload,
    wait; the rest are dropped, as in Mosquitto."""
    import socket

    from support.inprocess import embedded_broker

    from tether.broker.embedded import BrokerLimits

    files = tmp_path / "files"
    write_broker_files(
        files, [BrokerUser.with_password(n, r, pw(n)) for n, r in PRINCIPALS.items()]
    )
    frame = b"f" * 65536
    limits = (BrokerLimits(max_queued=64) if bound == "count" else
              BrokerLimits(max_queued_bytes=20 * len(frame)))
    topic = f"{P}/a/web1/s/alice/s1/a2c"
    with embedded_broker(files, limits) as broker, caplog.at_level("WARNING", logger="tether.broker"):
        address = ("127.0.0.1", broker.port)
        slow = RawClient(*address)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert slow.connect("alice", "alice", pw("alice")) == 0
        slow.send(subscribe_packet(1, [(topic, 0)]))
        assert slow.read_until(SUBACK) is not None
        # ...and from now on alice reads nothing.
        with (
            ProbeClient(address, "web1", pw("web1")) as web1,
            ProbeClient(address, "root", pw("root")) as root,
        ):
            assert web1.connect() and root.connect()
            root.subscribe(f"{P}/a/web1/presence", 1)
            for _ in range(300):
                web1.publish(topic, frame, qos=0)
            web1.publish(f"{P}/a/web1/presence", b"still serving", qos=1)
            root.wait_for(f"{P}/a/web1/presence", b"still serving")
            poll(lambda: "dropping messages for alice" in caplog.text)
            session = broker._broker._sessions["alice"][0]  # type: ignore[union-attr]
            if bound == "count":
                assert session.attributes["tether.pending"] <= 64
            else:  # the last one in may overshoot, as in Mosquitto
                assert session.attributes["tether.pending_bytes"] <= 21 * len(frame)
        slow.close()
