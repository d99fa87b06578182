"""What each principal can and cannot do, on BOTH brokers, checked by DELIVERY.

Mosquitto 2.0 grants any SUBSCRIBE and filters on delivery; the embedded broker refuses
foreign subscriptions outright. So these tests never assert on SUBACKs: they subscribe
wide, publish the forbidden message, then publish a marker that the subscriber may see,
and once the marker has arrived check that nothing forbidden arrived before it. Both
brokers deliver one publisher's messages to a subscriber in order, and fan each message
out before the next, so the marker is a barrier without any sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import (
    BROKER_KINDS,
    BrokerProcess,
    ProbeClient,
    RawClient,
    connected,
    publish_packet,
    start_broker,
)

from tether.broker.files import BrokerUser, write_broker_files

P = "tether/v1"
PRINCIPALS = {
    "web1": "agent",
    "web2": "agent",
    "alice": "user",
    "bob": "user",
    "auth": "authority",
    "rec": "recorder",
    "root": "admin",
}


def pw(name: str) -> str:
    return f"pw-{name}"


def broker_users(names: dict[str, str] = PRINCIPALS) -> list[BrokerUser]:
    return [BrokerUser.with_password(n, role, pw(n)) for n, role in names.items()]


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp(request.param)
    write_broker_files(base / "files", broker_users())
    b = start_broker(request.param, base / "files", base / "work")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=BROKER_KINDS)
def own_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of each kind for one test (which may rewrite its files or restart it)."""
    write_broker_files(tmp_path / "files", broker_users())
    b = start_broker(request.param, tmp_path / "files", tmp_path / "work")
    try:
        yield b
    finally:
        b.stop()


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("alice", "pw-bob"), ("alice", ""), ("alice", None), ("mallory", "pw-mallory")],
)
def test_bad_credentials_refused(
    broker: BrokerProcess, username: str | None, password: str | None
) -> None:
    client = ProbeClient(broker, username, password, client_id="someone")
    try:
        assert not client.connect()
    finally:
        client.close()


def test_good_credentials_accepted(broker: BrokerProcess) -> None:
    for name in PRINCIPALS:
        with connected(broker, name, pw(name)):
            pass


# -- confinement, checked by delivery ---------------------------------------------------


def test_user_cannot_receive_other_users_sessions_or_other_agents(broker: BrokerProcess) -> None:
    with (
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "root", pw("root")) as root,
        connected(broker, "web1", pw("web1")) as web1,
        connected(broker, "web2", pw("web2")) as web2,
        connected(broker, "bob", pw("bob")) as bob,
        connected(broker, "auth", pw("auth")) as auth,
    ):
        root.subscribe("#", 1)
        for flt in (
            f"{P}/a/+/s/alice/#",  # her own sessions
            f"{P}/a/web1/s/bob/#",
            f"{P}/a/+/s/+/+/+",
            f"{P}/a/web2/#",
            f"{P}/authz/#",
            f"{P}/#",
            "#",
        ):
            alice.subscribe(flt, 1)
        secrets = [
            (web1, f"{P}/a/web1/s/bob/s1/a2c", b"bob's output"),
            (web2, f"{P}/a/web2/s/bob/s2/a2c", b"web2 to bob"),
            (web2, f"{P}/a/web2/hs/bob", b"web2 internal"),
            (bob, f"{P}/a/web1/s/bob/s1/c2a", b"bob's keystrokes"),
            (bob, f"{P}/authz/req/bob", b"bob's grant request"),
            (auth, f"{P}/authz/rep/bob", b"bob's grant"),
        ]
        for client, topic, payload in secrets:
            client.publish(topic, payload, qos=1)
        # The broker has fanned every secret out once the admin has them all...
        for _, topic, payload in secrets:
            root.wait_for(topic, payload)
        # ...so markers published now reach alice after anything sent to her before.
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"marker-1", qos=1)
        web2.publish(f"{P}/a/web2/s/alice/s9/a2c", b"marker-2", qos=1)
        alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"marker-1")
        alice.wait_for(f"{P}/a/web2/s/alice/s9/a2c", b"marker-2")
        leaked = [m for m in alice.received() if b"marker" not in m.payload]
        assert leaked == []


def test_user_cannot_publish_foreign_presence_or_into_foreign_sessions(
    broker: BrokerProcess,
) -> None:
    with (
        connected(broker, "web1", pw("web1")) as web1,
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "root", pw("root")) as root,
    ):
        web1.publish(f"{P}/a/web1/presence", b"online", qos=1, retain=True)
        web1.subscribe(f"{P}/a/web1/#", 1)
        root.subscribe("#", 1)
        alice.publish(f"{P}/a/web1/presence", b"spoofed", qos=1, retain=True)
        alice.publish(f"{P}/a/web1/s/bob/s1/c2a", b"forged input", qos=1)
        alice.publish(f"{P}/a/web1/hs/bob", b"forged handshake", qos=1)
        alice.publish(f"{P}/authz/req/bob", b"forged request", qos=1)
        alice.publish(f"{P}/a/web1/hs/alice", b"marker", qos=1)
        root.wait_for(f"{P}/a/web1/hs/alice", b"marker")
        web1.wait_for(f"{P}/a/web1/hs/alice", b"marker")
        forged = [
            m for m in root.received() + web1.received() if m.payload not in (b"marker", b"online")
        ]
        assert forged == []
        with connected(broker, "bob", pw("bob")) as bob:
            bob.subscribe(f"{P}/a/+/presence", 1)
            assert bob.wait_for(f"{P}/a/web1/presence").payload == b"online"
        web1.publish(f"{P}/a/web1/presence", b"", qos=1, retain=True)  # clear it again


def test_admin_sees_everything(broker: BrokerProcess) -> None:
    with connected(broker, "root", pw("root")) as root:
        root.subscribe("#", 1)
        sent = [
            ("web1", f"{P}/a/web1/presence", b"presence"),
            ("web1", f"{P}/a/web1/s/alice/s1/a2c", b"output"),
            ("web1", f"{P}/a/web1/s/alice/s1/rec", b"recording"),
            ("alice", f"{P}/a/web1/hs/alice", b"handshake"),
            ("alice", f"{P}/a/web1/s/alice/s1/c2a", b"input"),
            ("alice", f"{P}/authz/req/alice", b"request"),
            ("auth", f"{P}/authz/rep/alice", b"grant"),
            ("auth", f"{P}/authz/bulletin", b"revocations"),
            ("rec", f"{P}/a/web1/s/alice/s1/rack", b"ack"),
        ]
        for name, topic, payload in sent:
            with connected(broker, name, pw(name)) as c:
                c.publish(topic, payload, qos=1)
        # (Another "root" connection would take this one over: client id = username.)
        root.publish("anything/else", b"admin", qos=1)
        sent.append(("root", "anything/else", b"admin"))
        for _, topic, payload in sent:
            root.wait_for(topic, payload)


def test_recorder_and_authority_paths(broker: BrokerProcess) -> None:
    with (
        connected(broker, "web1", pw("web1")) as web1,
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "rec", pw("rec")) as rec,
        connected(broker, "auth", pw("auth")) as auth,
    ):
        web1.subscribe(f"{P}/a/web1/#", 1)
        alice.subscribe(f"{P}/a/+/s/alice/#", 1)
        alice.subscribe(f"{P}/authz/rep/+", 1)
        alice.subscribe(f"{P}/authz/rep/alice", 1)
        rec.subscribe(f"{P}/a/+/s/+/+/rec", 1)
        rec.subscribe(f"{P}/a/+/s/+/+/+", 1)  # wider than allowed: gets only rec
        auth.subscribe(f"{P}/authz/req/+", 1)

        web1.publish(f"{P}/a/web1/s/alice/s1/rec", b"chunk-1", qos=1)
        rec.wait_for(f"{P}/a/web1/s/alice/s1/rec", b"chunk-1")
        rec.publish(f"{P}/a/web1/s/alice/s1/rack", b"ack-1", qos=1)
        web1.wait_for(f"{P}/a/web1/s/alice/s1/rack", b"ack-1")
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"output", qos=1)
        alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"output")
        # The user sees neither its own recording stream nor the recorder's acks...
        assert [m.topic for m in alice.received()] == [f"{P}/a/web1/s/alice/s1/a2c"]
        # ...and the recorder sees none of the session traffic.
        web1.publish(f"{P}/a/web1/s/alice/s1/rec", b"chunk-2", qos=1)
        rec.wait_for(f"{P}/a/web1/s/alice/s1/rec", b"chunk-2")
        assert {m.topic for m in rec.received()} == {f"{P}/a/web1/s/alice/s1/rec"}
        # A user cannot inject into its own recording stream.
        alice.publish(f"{P}/a/web1/s/alice/s1/rec", b"forged chunk", qos=1)
        alice.publish(f"{P}/a/web1/s/alice/s1/rack", b"forged ack", qos=1)
        alice.publish(f"{P}/a/web1/s/alice/s1/c2a", b"input", qos=1)
        web1.wait_for(f"{P}/a/web1/s/alice/s1/c2a", b"input")
        assert not [m for m in web1.received() + rec.received() if b"forged" in m.payload]

        # Grant requests and replies.
        alice.publish(f"{P}/authz/req/bob", b"forged request", qos=1)
        alice.publish(f"{P}/authz/req/alice", b"request", qos=1)
        auth.wait_for(f"{P}/authz/req/alice", b"request")
        assert [m.payload for m in auth.received()] == [b"request"]
        auth.publish(f"{P}/authz/rep/bob", b"bob's grant", qos=1)
        auth.publish(f"{P}/authz/rep/alice", b"alice's grant", qos=1)
        alice.wait_for(f"{P}/authz/rep/alice", b"alice's grant")
        assert not alice.received(f"{P}/authz/rep/bob")


def test_client_id_takeover_by_another_user_refused(broker: BrokerProcess) -> None:
    with (
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "web1", pw("web1")) as web1,
    ):
        alice.subscribe(f"{P}/a/+/s/alice/#", 1)
        # Another principal, and an impostor without credentials, both claim her client id.
        with connected(broker, "bob", pw("bob"), client_id="alice"):
            with RawClient(broker.host, broker.port) as raw:
                assert raw.connect("alice") not in (0, None)
            web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"still yours", qos=1)
            alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"still yours")
            assert not alice.disconnected.is_set()


def test_qos0_publish_is_delivered_at_qos0(broker: BrokerProcess) -> None:
    with (
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "web1", pw("web1")) as web1,
    ):
        alice.subscribe(f"{P}/a/web1/s/alice/#", 1)
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"data", qos=0)
        web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"control", qos=1)
        assert alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"data").qos == 0
        assert alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"control").qos == 1


def test_will_on_a_forbidden_topic_is_dropped(broker: BrokerProcess) -> None:
    with connected(broker, "root", pw("root")) as root:
        root.subscribe("#", 1)
        client = ProbeClient(
            broker, "alice", pw("alice"), will=(f"{P}/a/web1/presence", b"spoofed", 1, True)
        )
        assert client.connect()
        client.publish(f"{P}/a/web1/hs/alice", b"hello", qos=1)
        root.wait_for(f"{P}/a/web1/hs/alice", b"hello")
        client.drop()  # no DISCONNECT: the broker would publish the will now
        # Logging in again ends the old connection for good (will included) before the
        # new one is accepted, so the marker comes after any will.
        with connected(broker, "alice", pw("alice")) as again:
            again.publish(f"{P}/a/web1/hs/alice", b"marker", qos=1)
            root.wait_for(f"{P}/a/web1/hs/alice", b"marker")
        assert not [m for m in root.received() if m.payload == b"spoofed"]


def test_oversize_packet_disconnects_only_its_sender(broker: BrokerProcess) -> None:
    with connected(broker, "alice", pw("alice")) as alice:
        alice.subscribe(f"{P}/a/web1/s/alice/#", 1)
        with connected(broker, "web1", pw("web1")) as web1:
            web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"x" * 100_000, qos=1)
            assert len(alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c").payload) == 100_000
            web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"y" * 200_000, qos=0)
            web1.wait_disconnected()
        with connected(broker, "web1", pw("web1")) as web1:
            web1.publish(f"{P}/a/web1/s/alice/s1/a2c", b"after", qos=1)
            alice.wait_for(f"{P}/a/web1/s/alice/s1/a2c", b"after")
        assert not alice.disconnected.is_set()
        assert not [m for m in alice.received() if m.payload.startswith(b"y")]


# -- reload and restart (own broker per test) ------------------------------------------


def test_reload_adds_and_removes_principals(own_broker: BrokerProcess) -> None:
    broker = own_broker
    carol = ProbeClient(broker, "carol", pw("carol"))
    try:
        assert not carol.connect()
    finally:
        carol.close()
    with connected(broker, "bob", pw("bob")) as bob:
        names = {n: r for n, r in PRINCIPALS.items() if n != "bob"} | {"carol": "user"}
        write_broker_files(broker.files_dir, broker_users(names))
        broker.reload()
        bob.wait_disconnected()  # removed principals are thrown out, as Mosquitto does
    with connected(broker, "carol", pw("carol")):
        pass
    bob_again = ProbeClient(broker, "bob", pw("bob"))
    try:
        assert not bob_again.connect()
    finally:
        bob_again.close()


def test_restart(own_broker: BrokerProcess) -> None:
    broker = own_broker
    with connected(broker, "web1", pw("web1")) as web1:
        web1.publish(f"{P}/a/web1/presence", b"online", qos=1, retain=True)
    broker.restart()
    with (
        connected(broker, "alice", pw("alice")) as alice,
        connected(broker, "web2", pw("web2")) as web2,
    ):
        alice.subscribe(f"{P}/a/+/presence", 1)
        web2.publish(f"{P}/a/web2/presence", b"online", qos=1, retain=True)
        alice.wait_for(f"{P}/a/web2/presence", b"online")
        if broker.kind == "mosquitto":
            # persistence true: retained presence survives a broker restart.
            assert alice.wait_for(f"{P}/a/web1/presence").payload == b"online"
        else:
            # amqtt keeps retained messages in memory only
            # (docs/sources.md#amqtt-keeps-state-in-memory); agents re-publish presence when
            # they reconnect.
            assert not alice.received(f"{P}/a/web1/presence")


def test_raw_client_speaks_mqtt(broker: BrokerProcess) -> None:
    """The raw client used by the attack tests is accepted like paho."""
    with RawClient(broker.host, broker.port) as raw:
        assert raw.connect("web1", "web1", pw("web1")) == 0
    with RawClient(broker.host, broker.port) as raw:
        assert raw.connect("web1", "web1", "wrong") == 5


@pytest.mark.parametrize("qos", [0, 1])
def test_what_a_client_published_right_before_its_disconnect_is_delivered(
    broker: BrokerProcess, qos: int
) -> None:
    """An agent's clean stop publishes its offline status and presence, then DISCONNECT.
    The embedded broker delivered at most one of the messages still queued when the
    DISCONNECT came and dropped the rest (seen: the offline presence never arrived)."""
    topic = f"{P}/a/web1/s/alice/s1/a2c"
    with connected(broker, "alice", pw("alice")) as alice:
        alice.subscribe(f"{P}/a/web1/s/alice/#", 1)
        for attempt in range(5):
            with RawClient(broker.host, broker.port) as raw:
                assert raw.connect("web1", "web1", pw("web1")) == 0
                burst = b"".join(publish_packet(topic, f"{attempt}-{i}".encode(), qos, i + 1)
                                 for i in range(6))
                raw.send(burst + b"\xe0\x00")  # six PUBLISH, then DISCONNECT, in one write
                assert raw.closed_by_peer()
            for i in range(6):
                alice.wait_for(topic, f"{attempt}-{i}".encode())
        got = [m.payload for m in alice.messages if m.topic == topic]
        want = [f"{a}-{i}".encode() for a in range(5) for i in range(6)]
        assert got == want  # each one, once, in order
