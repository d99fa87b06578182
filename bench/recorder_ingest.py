"""Recorder ingest throughput: how fast recorded output becomes durable at the recorder.

Two measurements, one run:

1. In process: the recorder's ingest path alone on pre-made messages (decrypt, put in
   order, recompute the hash chain and check signed checkpoints, append to the log,
   fsync, commit the row), group-committing every 1 MiB as the service does under load.
2. Through Mosquitto: a stand-in agent (its own principal, a real grant) streams a
   session's recording to a real `tether recorder` process with the agent's 1 MiB
   window, waiting for the recorder's signed acks, until the end manifest is acked.

    python3 bench/recorder_ingest.py [--mb 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CHUNK = 64 * 1024


def _grant_and_keys(home: object, agent: object, recorder: object, authority: object) -> str:
    from tether import grants
    from tether.encoding import b64e
    from tether.keys import Identity

    assert isinstance(agent, Identity) and isinstance(recorder, Identity)
    assert isinstance(authority, Identity)
    now = time.time()
    g = grants.Grant(
        user="bench", agent=agent.name, agent_key=b64e(agent.public_key), client_key=b64e(os.urandom(32)),
        mqtt_name="bench-client", mode="exec", run_as="nobody", command=["cat"], max_duration=3600,
        idle_timeout=0, recording="required", recorder=recorder.name, reason="bench",
        jti=grants.new_jti(), expires=now + 300, recorder_x25519=b64e(recorder.x25519_public),
        recorder_ed25519=b64e(recorder.public_key))
    return grants.issue(authority.signing_seed, dataclasses.replace(g), now)


def _sender(agent: object, recorder: object, token: str) -> object:
    from tether.keys import Identity
    from tether.recording import RecordingSender, session_body

    assert isinstance(agent, Identity) and isinstance(recorder, Identity)
    sid = os.urandom(16)
    return RecordingSender(
        sid=sid, signing_key=agent.signing_key, recorder_x25519=recorder.x25519_public,
        recorder_ed25519=recorder.public_key,
        body=session_body(sid=sid, grant_token=token, agent=agent.name, client="bench-client",
                          cols=80, rows=24, term=None),
        now=time.monotonic(), required=True)


def in_process(mb: int) -> float:
    from tether.keys import Identity
    from tether.recevents import EventKind
    from tether.recorder.store import Store
    from tether.recording import RecordingReceiver, RecordingSender, open_recording

    authority = Identity.generate("authority", "authority")
    authority.authority = {"ed25519": __import__("tether.encoding").encoding.b64e(authority.public_key)}
    agent = Identity.generate("agent1", "agent", with_x25519=True)
    recorder = Identity.generate("recorder", "recorder", with_x25519=True)
    sender = _sender(agent, recorder, _grant_and_keys(None, agent, recorder, authority))
    assert isinstance(sender, RecordingSender)
    payload = os.urandom(CHUNK)
    now = time.monotonic()
    [open_msg] = sender.take_outgoing(now)
    opened = open_recording(open_msg, recorder_name="recorder", x25519_secret=recorder.x25519_secret or b"",
                            authority_key=authority.public_key, agent="agent1")
    receiver = RecordingReceiver(opened)
    sender.on_message(receiver.ack(recorder.signing_key), now)
    messages: list[bytes] = []
    for _ in range(mb * 1_000_000 // CHUNK):
        sender.record(EventKind.OUTPUT, payload, time.monotonic())
        messages += sender.take_outgoing(time.monotonic())
        receiver.stored = sender.next_index  # pretend acked, so the sender's queue stays small
        sender.on_message(receiver.ack(recorder.signing_key), time.monotonic())
    total = len(messages) * CHUNK
    with tempfile.TemporaryDirectory(prefix="tether-ingest-") as tmp:
        store = Store(Path(tmp))
        receiver = RecordingReceiver(opened)
        store.begin(opened, open_msg, "bench-client")
        f = store.files[opened.sid.hex()]
        start = time.perf_counter()
        for i, msg in enumerate(messages):
            for event, chain in receiver.on_data(msg).events:
                f.add(event, chain)
            if i % 16 == 15:
                store.commit(store.prepare())
        store.commit(store.prepare())
        elapsed = time.perf_counter() - start
        assert receiver.chain_ok
        store.close()
    return total / elapsed / 1e6


async def _stream(stack: object, agent: object, recorder: object, token: str, mb: int) -> float:
    from stack import Stack

    from tether.mqtt import BrokerSettings, MqttConnection
    from tether.recevents import EventKind
    from tether.recording import REC_WINDOW, RecordingSender
    from tether.topics import REC, Topics

    assert isinstance(stack, Stack)
    sender = _sender(agent, recorder, token)
    assert isinstance(sender, RecordingSender)
    topics = Topics()
    sid = sender.sid.hex()
    progress = asyncio.Event()

    def on_message(_topic: str, payload: bytes) -> None:
        if sender.on_message(payload, time.monotonic()):
            progress.set()

    ident = agent
    conn = MqttConnection(BrokerSettings.from_identity(ident.name, ident.broker), on_message)  # type: ignore[attr-defined]
    await conn.connect()
    await conn.subscribe_confirmed(topics.agent_recorder_acks(ident.name))  # type: ignore[attr-defined]
    out_topic = topics.session(ident.name, "bench-client", sid, REC)  # type: ignore[attr-defined]

    def flush() -> None:
        for blob in sender.take_outgoing(time.monotonic()):
            conn.publish(out_topic, blob, qos=1 if blob is sender.open_message else 0)

    flush()
    while not sender.opened:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 1.0)
        except TimeoutError:
            flush()
    payload = os.urandom(CHUNK)
    total = mb * 1_000_000 // CHUNK * CHUNK
    start = time.perf_counter()
    sent = 0
    while sent < total:
        while sender.unacked_bytes + CHUNK > REC_WINDOW * int(os.environ.get("WMUL", "1")):
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), 0.5)
            except TimeoutError:
                flush()
        sender.record(EventKind.OUTPUT, payload, time.monotonic())
        sent += CHUNK
        flush()
        if conn.backlogged:
            await conn.drain()
    sender.finish(time.monotonic())
    flush()
    while not sender.done:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            flush()
    elapsed = time.perf_counter() - start
    await conn.close()
    return total / elapsed / 1e6


def through_mosquitto(mb: int) -> float:
    from stack import running_stack

    from tether.authority.provision import authority_identity, commit, new_principal
    from tether.authority.registry import Registry
    from tether.keys import Identity

    with tempfile.TemporaryDirectory(prefix="tether-ingest-") as tmp, \
            running_stack("mosquitto", Path(tmp)) as stack:
        stack.stop_up()
        registry = Registry.load(stack.home.registry)
        authority = authority_identity(stack.home)
        agent = new_principal(stack.home, registry, authority, "benchagent", "agent",
                              host="127.0.0.1", port=stack.port)
        commit(stack.home, registry)
        assert stack.broker is not None
        stack.broker.reload()
        stack.start_up("--no-recorder")
        recorder_proc = stack.start_recorder()
        try:
            recorder = Identity.load(stack.home.recorder_identity())
            token = _grant_and_keys(stack.home, agent, recorder, authority)
            return asyncio.run(_stream(stack, agent, recorder, token, mb))
        finally:
            recorder_proc.terminate()
            recorder_proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="MB of output to ingest (default 200)")
    args = parser.parse_args()
    print(f"in-process ingest (decrypt, chain, append, fsync, commit): {in_process(args.mb):7.1f} MB/s")
    print(f"through Mosquitto to `tether recorder` (1 MiB window):     "
          f"{through_mosquitto(args.mb):7.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
