"""A restart must not reopen the agent to replays: a HELLO captured on the wire, or its
grant in a new HELLO, is refused by the restarted agent as by the one that accepted it."""

from __future__ import annotations

import asyncio
import stat

from stack import Spy, Stack, wait_for
from support.agent_peer import TOPICS, Answer, Peer

from tether.agent.replay_state import replay_state_file


def test_captured_hello_and_used_grant_are_refused_after_a_restart(fresh_stack: Stack) -> None:
    spy = Spy(fresh_stack)
    try:
        async def first() -> tuple[Answer, str, str]:
            async with Peer(fresh_stack) as peer:
                grant = peer.grant()
                return await peer.hello(peer.request(grant=grant)), grant, peer.slot
        answer, grant, slot = asyncio.run(first())
        assert answer.accepted, answer.refused
        topic = TOPICS.handshake("local", slot)
        captured = wait_for(lambda: [p for t, p in spy.snapshot() if t == topic],
                            what="the HELLO seen on the broker")
        assert captured == [answer.hello]
    finally:
        spy.close()

    fresh_stack.stop_up()
    fresh_stack.start_up()

    async def replay() -> tuple[Answer, Answer]:
        async with Peer(fresh_stack) as peer:
            replayed = await peer.hello(handshake=answer.handshake, raw=captured[0])
            reused = await peer.hello(peer.request(grant=grant))
            return replayed, reused
    replayed, reused = asyncio.run(replay())
    assert replayed.refused == "replayed handshake message"
    assert reused.refused == "grant was already used; grants are single-use"
    state = replay_state_file(fresh_stack.home.agent_identity("local"))
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
