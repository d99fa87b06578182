"""A user flooding an agent with HELLOs from one broker connection must not stall other
users' sessions: HELLOs are rate limited per client slot before any crypto runs."""

from __future__ import annotations

import os
import statistics
import threading
import time

import paho.mqtt.client as paho
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion
from stack import Stack, wait_for

from tether.agent.service import DROP_LOG_INTERVAL
from tether.edge.keys import Identity
from tether.handshake import ClientHandshake
from tether.topics import Topics

FLOOD_RATE = 2000  # HELLOs per second: more than the agent can open, far less than it can drop
DISTINCT = 2000  # authentic HELLOs, each with its own key: each costs the agent a full open
SLACK = 2.0


def _hellos(stack: Stack, sender: Identity, n: int) -> list[bytes]:
    """Authentic HELLOs to `local` (sealed to its key) carrying a forged grant."""
    agent = Identity.load(stack.home.agent_identity("local"))
    forged = "v4.public." + os.urandom(120).hex()
    now = time.time()
    return [ClientHandshake(client_key=SigningKey(sender.signing_seed),
                            agent_signing_key=agent.public_key, agent_x25519=agent.x25519_public,
                            sid=os.urandom(16),
                            request={"grant": forged, "mode": "exec", "command": ["true"]}, rand=os.urandom,
                            ).hello(now) for _ in range(n)]


class Flood(threading.Thread):
    """Publishes HELLOs on one slot of `sender` at FLOOD_RATE until stopped."""

    def __init__(self, stack: Stack, sender: Identity, slot: str, hellos: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.topic = Topics().handshake("local", slot)
        self.hellos = hellos
        self.sent = 0
        self.stopping = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=slot,
                                  protocol=paho.MQTTv311)
        self.client.username_pw_set(slot, sender.broker["password"])
        self.client.connect("127.0.0.1", stack.port)
        self.client.loop_start()

    def run(self) -> None:
        tick = 0.01
        per_tick = int(FLOOD_RATE * tick)
        next_at = time.monotonic()
        while not self.stopping.is_set():
            last = None
            for _ in range(per_tick):
                last = self.client.publish(self.topic, self.hellos[self.sent % len(self.hellos)], 0)
                self.sent += 1
            if last is not None:
                last.wait_for_publish(10)  # bounded: never more than a tick queued in paho
            next_at += tick
            self.stopping.wait(max(0.0, next_at - time.monotonic()))  # the flood's pace

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def _timed_run(stack: Stack) -> float:
    start = time.monotonic()
    done = stack.tether("run", "local", "--", "true", timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    return elapsed


def test_a_hello_flood_from_one_slot_does_not_stall_another_users_session(stack: Stack) -> None:
    baseline = statistics.median(_timed_run(stack) for _ in range(3))
    bob = Identity.load(stack.bob_identity)
    flood = Flood(stack, bob, f"{bob.name}.7", _hellos(stack, bob, DISTINCT))
    flood.start()
    began = time.monotonic()
    try:
        wait_for(lambda: "dropping HELLOs from bob.7" in stack.log_tail(20000),
                 what="the agent dropping the flood")
        wait_for(lambda: flood.sent >= FLOOD_RATE, what="a second of flood")
        flooded = [_timed_run(stack) for _ in range(3)]
    finally:
        flood.stop()
    lasted = time.monotonic() - began
    # Medians: one run slowed by something else on a loaded machine is not the flood.
    assert statistics.median(flooded) < baseline + SLACK, (baseline, flooded, flood.sent)
    # Logged once per interval, not once per HELLO.
    logged = stack.log_tail(200000).count("dropping HELLOs from")
    assert 1 <= logged <= 1 + lasted // DROP_LOG_INTERVAL, (logged, lasted)
