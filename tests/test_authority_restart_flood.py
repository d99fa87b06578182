"""The authority under a request flood and across a restart, on both brokers."""

from __future__ import annotations

import os
import threading
import time

from stack import Spy, Stack, wait_for
from support.requester import Requester

from tether.authority.service import REQUEST_BURST, REQUEST_RATE
from tether.edge.keys import Identity
from tether.topics import Topics

FLOOD = 10_000


def timed_run(stack: Stack) -> float:
    start = time.monotonic()
    r = stack.tether("run", "local", "--", "true")
    elapsed = time.monotonic() - start
    assert r.returncode == 0, (r.stderr, stack.log_tail())
    return elapsed


def test_a_flood_from_one_principal_does_not_delay_another(fresh_stack: Stack) -> None:
    stack = fresh_stack
    before = min(timed_run(stack) for _ in range(2))
    bob = Requester(stack.port, stack.bob_identity)
    try:
        # Well-formed (each one costs an unsealing and a signature check) and garbage.
        genuine = [bob.request({"type": "grant", "agent": "local", "mode": "exec",
                                "command": ["true"]}).payload for _ in range(200)]
        payloads = genuine + [os.urandom(len(genuine[0])) for _ in range(50)]
        flood_start = time.monotonic()
        flood = threading.Thread(target=bob.flood, args=(payloads, FLOOD, stack.port))
        flood.start()
        during = timed_run(stack)
        flood.join(60)
        assert not flood.is_alive()
        wait_for(lambda: bob.ask({"type": "access", "agents": ["local"]}, timeout=1),
                 timeout=30, what="bob to be heard again")
        flood_time = time.monotonic() - flood_start
    finally:
        bob.close()
    wait_for(lambda: "dropping requests from 'bob'" in stack.log_tail(200_000),
             what="the authority to log the rate limit")
    print(f"tether run: {before:.2f} s alone, {during:.2f} s during a flood of {FLOOD} requests")
    assert during - before < 2.0, (before, during)
    # Logged once for the flood, not once per dropped request.
    assert stack.log_tail(1_000_000).count("dropping requests from 'bob'") == 1
    # Only bob's burst and his steady rate got through to be decided (and audited).
    decided = stack.tether("audit", "--json", "--user", "bob").stdout.count(b"grant-denied")
    assert 0 < decided <= REQUEST_BURST + REQUEST_RATE * flood_time, (decided, flood_time)


def test_a_request_captured_before_a_restart_is_refused_after_it(fresh_stack: Stack) -> None:
    stack = fresh_stack
    topics = Topics()
    spy = Spy(stack)
    try:
        assert stack.tether("run", "local", "--", "true").returncode == 0
        user = Identity.load(stack.home.user_identity).name
        requests = [(t, p) for t, p in spy.snapshot() if t.startswith(topics.authz_request(user))]
        assert requests
        topic, captured = requests[-1]
        reply_topic = topics.authz_reply(topic.rsplit("/", 1)[-1])
        stack.stop_up()
        stack.start_up()
        replies_before = sum(1 for t, _ in spy.snapshot() if t == reply_topic)
        spy.publish(topic, captured, qos=1)
        wait_for(lambda: "dropped replayed request" in stack.log_tail(),
                 what="the authority to log the replay")
        # The authority answers in the same step it would have logged; nothing came.
        assert sum(1 for t, _ in spy.snapshot() if t == reply_topic) == replies_before
        assert stack.tether("run", "local", "--", "true").returncode == 0
    finally:
        spy.close()
