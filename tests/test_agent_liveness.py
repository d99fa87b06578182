"""An abandoned session must end after --client-timeout even when a hostile broker keeps
replaying the client's old frames: only a frame never seen before (a new sequence number
or a new ack number) shows the client is there."""

from __future__ import annotations

import os
import re
import signal
import time

from stack import Spy, Stack, policy, statement, wait_for

from tether.channel import Channel
from tether.frames import HEADER, Direction, FrameCipher, FrameType
from tether.topics import C2A

CLIENT_TIMEOUT = 2.0


def _pair() -> tuple[Channel, Channel]:
    c2a, a2c = os.urandom(32), os.urandom(32)
    client = Channel(FrameCipher(c2a, Direction.C2A), FrameCipher(a2c, Direction.A2C))
    agent = Channel(FrameCipher(a2c, Direction.A2C), FrameCipher(c2a, Direction.C2A))
    return client, agent


def _only(blobs: list[tuple[bytes, int]], ftype: FrameType) -> bytes:
    found = [b for b, _ in blobs if HEADER.unpack_from(b)[1] == ftype]
    assert len(found) == 1, found
    return found[0]


def test_replayed_frames_do_not_count_as_hearing_from_the_peer() -> None:
    client, agent = _pair()
    client.send(FrameType.DATA, b"ls\r", 0.0)
    data = _only(client.take_outgoing(), FrameType.DATA)
    assert [f.payload for f in agent.receive(data, 1.0)] == [b"ls\r"]
    assert agent.last_heard == 1.0
    assert agent.receive(data, 50.0) == []  # the broker replays it
    assert agent.last_heard == 1.0 and agent.stats.duplicates == 1

    client.keepalive(2.0)
    client.tick(2.0)
    ack = _only(client.take_outgoing(), FrameType.ACK)
    agent.receive(ack, 60.0)
    assert agent.last_heard == 60.0
    for later in (70.0, 400.0):
        agent.receive(ack, later)  # an old keepalive, replayed
        assert agent.last_heard == 60.0

    tampered = bytearray(ack)
    tampered[-1] ^= 1
    agent.receive(bytes(tampered), 500.0)
    assert agent.last_heard == 60.0 and agent.stats.bad_frames == 1

    client.send(FrameType.DATA, b"pwd\r", 600.0)
    agent.receive(_only(client.take_outgoing(), FrameType.DATA), 601.0)
    assert agent.last_heard == 601.0


def test_replayed_client_frames_do_not_keep_an_abandoned_session_alive(fresh_stack: Stack) -> None:
    fresh_stack.stop_up()
    fresh_stack.start_up("--client-timeout", str(CLIENT_TIMEOUT))
    # Without detaching, silence ends the session (with it, silence detaches it first:
    # test_e2e_session.py's vanished client).
    with policy(fresh_stack, statement(detach_timeout="0")):
        _abandoned(fresh_stack)


def _abandoned(fresh_stack: Stack) -> None:
    spy = Spy(fresh_stack)
    try:
        client = fresh_stack.popen("run", "local", "--", "sh", "-c", "echo $$; exec sleep 600",
                                   stdout=-1, stderr=-1, stdin=-1)
        assert client.stdout is not None
        line = client.stdout.readline()
        m = re.fullmatch(rb"(\d+)\n", line)
        assert m, line
        pid = int(m.group(1))

        def client_frames() -> list[tuple[str, bytes]]:
            # The client acks the output it got: an authentic frame the broker can replay.
            return [(t, p) for t, p in spy.snapshot()
                    if t.endswith("/" + C2A) and p[:1] != b"\x81"]

        seen = len(wait_for(client_frames, what="a frame from the client"))
        # Input just before the kill: the agent has just heard from the client, so the
        # session is alive when the client goes, and the DATA frame is one to replay too.
        assert client.stdin is not None
        client.stdin.write(b"x\n")
        client.stdin.flush()
        frames = wait_for(lambda: len(client_frames()) > seen and client_frames(),
                          what="the client's input frame")
        assert os.path.exists(f"/proc/{pid}"), "the session ended while its client was there"
        client.send_signal(signal.SIGKILL)  # gone without a word: no CLOSE
        client.wait(10)
        killed = time.monotonic()
        # The client was last heard before the kill; the agent checks every quarter of the
        # timeout; 2 s of margin for a loaded machine.
        gone_by = killed + CLIENT_TIMEOUT + CLIENT_TIMEOUT / 4 + 2.0
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < gone_by:
            for topic, payload in frames:
                spy.publish(topic, payload, 1)
            time.sleep(0.1)  # the replay's pace, not a synchronisation
        assert not os.path.exists(f"/proc/{pid}"), (
            "the replayed frames kept the session alive past --client-timeout\n"
            + fresh_stack.log_tail())
        print(f"replayed frames: the session ended {time.monotonic() - killed:.2f} s after the kill")
        assert "client silent" in fresh_stack.log_tail(20000)
    finally:
        spy.close()
