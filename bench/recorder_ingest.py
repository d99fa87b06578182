"""Recorder ingest throughput: how fast recorded output becomes durable at the recorder.

Two measurements, one run:

1. In process: the recorder's ingest path alone on pre-made messages (decrypt, put in
   order, recompute the hash chain and check signed checkpoints, append to the log,
   fsync, commit the row), group-committing every 1 MiB as the service does under load.
2. Through Mosquitto: a stand-in agent (its own principal, a real grant) streams a
   session's recording to a real `tether recorder` process with the agent's 4 MiB
   window (4 MiB), waiting for the recorder's signed acks, until the end manifest is acked.

    python3 bench/recorder_ingest.py [--mb 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder_rig import Rig, new_sender, recorder_rig

CHUNK = 64 * 1024


def in_process(mb: int) -> float:
    from tether.edge.keys import Identity
    from tether.recevents import EventKind
    from tether.recorder.store import Store
    from tether.recording import RecordingReceiver, open_recording

    authority = Identity.generate("authority", "authority")
    agent = Identity.generate("agent1", "agent", with_x25519=True)
    recorder = Identity.generate("recorder", "recorder", with_x25519=True)
    sender = new_sender(agent, recorder, authority)
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


async def _stream(rig: Rig, mb: int, window: int = 0) -> float:
    from tether.edge.mqtt import BrokerSettings, MqttConnection
    from tether.recevents import EventKind
    from tether.recording import REC_WINDOW
    from tether.topics import REC, Topics

    sender = new_sender(rig.agent, rig.recorder, rig.authority)
    topics = Topics()
    sid = sender.sid.hex()
    progress = asyncio.Event()

    def on_message(_topic: str, payload: bytes) -> None:
        if sender.on_message(payload, time.monotonic()):
            progress.set()

    ident = rig.agent
    conn = MqttConnection(BrokerSettings.from_identity(ident.name, ident.broker), on_message)
    await conn.connect()
    await conn.subscribe_confirmed(topics.agent_recorder_acks(ident.name))
    out_topic = topics.session(ident.name, "bench-client", sid, REC)

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
        while sender.unacked_bytes + CHUNK > (window or REC_WINDOW):
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


def through_mosquitto(mb: int, window: int = 0) -> float:
    with recorder_rig() as rig:
        return asyncio.run(_stream(rig, mb, window))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="MB of output to ingest (default 200)")
    parser.add_argument("--window-mb", type=float, default=0,
                        help="the stand-in agent's unacked window (default: the agent's, 4 MiB)")
    args = parser.parse_args()
    print(f"in-process ingest (decrypt, chain, append, fsync, commit): {in_process(args.mb):7.1f} MB/s")
    from tether.recording import REC_WINDOW

    window = int(args.window_mb * (1 << 20)) or REC_WINDOW
    label = f"{window / (1 << 20):g} MiB"
    print(f"through Mosquitto to `tether recorder` ({label} window):     "
          f"{through_mosquitto(args.mb, window):7.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
