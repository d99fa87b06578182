"""The embedded broker hangs up on a connection that has not sent a complete CONNECT within
`CONNECT_TIMEOUT` of the TCP accept: silent, half a CONNECT, or one byte at a time
(slowloris), on the MQTT and the websocket listener. Each such connection holds a slot
and an amqtt task until then, so without the timeout they pile up for ever."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support.brokers import BrokerProcess, connect_packet, connected, free_port, start_embedded

from tether.broker.embedded import CONNECT_TIMEOUT
from tether.broker.files import BrokerUser, write_broker_files

# A loaded 2-core machine may run the broker's timer late; it must never run early.
MARGIN = 3.0
PASSWORD = "pw-alice"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("connect-timeout")
    write_broker_files(base / "files", [BrokerUser.with_password("alice", "user", PASSWORD)])
    b = start_embedded(base / "files", workdir=base / "work", ws_port=free_port())
    try:
        yield b
    finally:
        b.stop()


def _hung_up_after(sock: socket.socket, start: float, trickle: bytes = b"") -> float:
    """Seconds from `start` until the broker closes `sock` (reads EOF or a reset). With
    `trickle`, one byte of it goes out each time half a second passes without a close."""
    limit = start + CONNECT_TIMEOUT + MARGIN + 5
    while time.monotonic() < limit:
        ready, _, _ = select.select([sock], [], [], 0.5)
        if ready:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                return time.monotonic() - start
            if not data:
                return time.monotonic() - start
            raise AssertionError(f"the broker answered a connection without CONNECT: {data!r}")
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
            trickle = trickle[1:]
    raise AssertionError(f"still connected {CONNECT_TIMEOUT + MARGIN + 5:.0f} s after the TCP accept")


def _tcp(broker: BrokerProcess, first: bytes = b"", trickle: bytes = b"") -> float:
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        start = time.monotonic()
        if first:
            sock.sendall(first)
        return _hung_up_after(sock, start, trickle)


def _websocket(broker: BrokerProcess) -> float:
    """A websocket upgraded for MQTT that then carries no MQTT at all."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    start = time.monotonic()
    with connect(f"ws://{broker.host}:{broker.ws_port}", subprotocols=["mqtt"],  # type: ignore[list-item]
                 open_timeout=10) as ws:
        try:
            data = ws.recv(timeout=CONNECT_TIMEOUT + MARGIN + 5)
        except ConnectionClosed:
            return time.monotonic() - start
        except TimeoutError:
            raise AssertionError(f"still connected {CONNECT_TIMEOUT + MARGIN + 5:.0f} s after the upgrade") from None
        raise AssertionError(f"the broker answered a websocket without CONNECT: {data!r}")


def test_connections_without_a_complete_connect_are_closed_at_the_timeout(
        broker: BrokerProcess) -> None:
    connect = connect_packet("alice", "alice", PASSWORD)
    cases: dict[str, Callable[[], float]] = {
        "silent": lambda: _tcp(broker),
        # The fixed header announces the whole packet; only its first bytes come.
        "half": lambda: _tcp(broker, first=connect[: len(connect) // 2]),
        # Each byte is progress, yet the CONNECT never completes in time.
        "slowloris": lambda: _tcp(broker, trickle=connect),
        "websocket": lambda: _websocket(broker),
    }
    results: dict[str, float | BaseException] = {}

    def run(name: str, case: Callable[[], float]) -> None:
        try:
            results[name] = case()
        except BaseException as exc:  # reported below, with the case's name
            results[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = {name: str(r) for name, r in results.items() if isinstance(r, BaseException)}
    assert not failed, failed
    print({name: round(float(r), 2) for name, r in results.items()})  # type: ignore[arg-type]
    for name, elapsed in results.items():
        assert isinstance(elapsed, float)
        # Never before the timeout (a complete CONNECT may take that long), soon after it.
        assert CONNECT_TIMEOUT - 0.5 <= elapsed <= CONNECT_TIMEOUT + MARGIN, (name, elapsed)
    assert len(connect) > 2 * (CONNECT_TIMEOUT + MARGIN)  # the trickle outlasts the timeout
    with connected(broker, "alice", PASSWORD):
        pass  # the broker serves complete CONNECTs as before


def test_a_complete_connect_sent_late_but_in_time_is_accepted(broker: BrokerProcess) -> None:
    """The timeout bounds the CONNECT, not the connection: one that completes its CONNECT
    in time lives on past it (here with its keepalive off)."""
    connect = connect_packet("alice", "alice", PASSWORD)
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(connect[:5])
        ready, _, _ = select.select([sock], [], [], CONNECT_TIMEOUT / 2)
        assert not ready  # still open, nothing said
        sock.sendall(connect[5:])
        connack = sock.recv(4)
        assert connack == b"\x20\x02\x00\x00", connack
        # Past the CONNECT timeout, the connection is still open.
        ready, _, _ = select.select([sock], [], [], CONNECT_TIMEOUT + MARGIN - (time.monotonic() - start))
        assert not ready, sock.recv(4096)
        sock.sendall(b"\xc0\x00")  # PINGREQ
        assert sock.recv(2) == b"\xd0\x00"  # PINGRESP

