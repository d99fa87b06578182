"""The broker connection (tether/edge/mqtt.py) after reconnect attempts that failed in
different ways: "connected" must mean messages flow again, on both brokers.

The failure this guards against was seen in CI as a session that said "reconnected" and
then received and sent nothing, for good: paho closes the previous attempt's socket inside
`reconnect()`, on the executor thread, and the event that unwatches it once ran after the
next socket was watched, unhooking that one instead."""

from __future__ import annotations

import asyncio
import time

import pytest
from stack import Stack
from support.relay import Relay

from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.topics import Topics

CONNACK_WAIT = 10.0  # edge/mqtt.py waits this long for a CONNACK on each attempt


async def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


async def _connect_via(stack: Stack, relay: Relay, keepalive: int | None = None) -> tuple[MqttConnection, list[float]]:
    """A user's connection through the relay, subscribed to the retained bulletin (it
    comes again after every resubscribe); the list gets the time of each arrival."""
    ident = Identity.load(stack.home.user_identity)
    bulletin = Topics().bulletin()
    received: list[float] = []

    def on_message(topic: str, _payload: bytes) -> None:
        if topic == bulletin:
            received.append(time.monotonic())

    settings = BrokerSettings.from_identity(ident.name, ident.broker)
    settings.port = relay.port
    settings.client_id = settings.username
    if keepalive is not None:
        settings.keepalive = keepalive
    conn = MqttConnection(settings, on_message)
    conn.subscribe(bulletin, 1)
    await conn.connect()
    return conn, received


@pytest.mark.timeout(120)
def test_a_connection_works_after_an_attempt_timed_out_waiting_for_its_connack(stack: Stack) -> None:
    """30 s keepalive (an agent's), so the first attempt in a silent partition ends by the
    10 s CONNACK wait with its socket still open in paho; the next attempt closes it."""
    async def scenario(relay: Relay) -> tuple[float, float]:
        conn, received = await _connect_via(stack, relay, keepalive=30)
        try:
            await wait_until(lambda: bool(received), 15, "the retained bulletin")
            cut = time.monotonic()
            relay.cut()  # reset: the reconnect attempts begin
            relay.cut(silent=True)  # and each one now waits for a CONNACK that never comes
            await wait_until(lambda: not conn.connected, 10, "the disconnect noticed")
            # The partition lasts past the first attempt's CONNACK wait, into the second.
            while time.monotonic() < cut + CONNACK_WAIT + 2:
                await asyncio.sleep(0.1)
            restored = time.monotonic()
            relay.restore()
            await wait_until(lambda: conn.connected, 30, "connected again")
            back = time.monotonic()
            await wait_until(lambda: bool(received) and received[-1] > restored, 15,
                             "a message after the reconnect (the bulletin, resubscribed)")
            return back - restored, received[-1] - back
        finally:
            await conn.close()

    with Relay(stack.port) as relay:
        to_connect, to_message = asyncio.run(scenario(relay))
    print(f"[{stack.kind}] reconnected {to_connect:.2f} s after the restore, a message "
          f"{to_message:.2f} s later; {relay!r}")
    assert to_message < 15


@pytest.mark.timeout(120)
def test_a_publish_into_a_connection_the_peer_has_just_reset(stack: Stack) -> None:
    """The reset has arrived but the event loop has not read it yet: paho's write fails and
    closes the socket inside publish(). Seen in an agent's log as "Bad file descriptor"
    from a recorder ack's handler, whose DATA never went out (the recording then waited
    for a resend)."""
    async def scenario(relay: Relay) -> float:
        conn, received = await _connect_via(stack, relay)
        try:
            await wait_until(lambda: bool(received), 15, "the retained bulletin")
            relay.cut()  # blocks until the resets are sent; the loop has not run since
            for _ in range(3):
                conn.publish("tether/v1/test/after-reset", b"x" * 100, qos=0)
            await wait_until(lambda: not conn.connected, 10, "the disconnect noticed")
            restored = time.monotonic()
            relay.restore()
            await wait_until(lambda: conn.connected, 30, "connected again")
            await wait_until(lambda: bool(received) and received[-1] > restored, 15,
                             "a message after the reconnect (the bulletin, resubscribed)")
            return received[-1] - restored
        finally:
            await conn.close()

    with Relay(stack.port) as relay:
        took = asyncio.run(scenario(relay))
    print(f"[{stack.kind}] messages again {took:.2f} s after the restore")
