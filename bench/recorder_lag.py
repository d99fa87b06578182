"""Lag from output to searchable, with many concurrent recorded sessions.

A stand-in agent streams N sessions (default 100) to a real `tether recorder` through a
real Mosquitto. Each session prints about 1 KB/s: once a second (staggered across
sessions) ten 100-byte lines, each with a unique token. A sampler takes one fresh token
every 200 ms and polls `tether.recorder.search.search` on the recorder's database until
it is found; the lag is the time from handing the output to the recording until search
finds it. `--trickle` prints one line every 100 ms instead (no quiet points: the text
becomes searchable when it scrolls off or at the periodic snapshot during continuous
output).

    python3 bench/recorder_lag.py [--sessions 100] [--seconds 30] [--trickle]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder_rig import Rig, new_sender, recorder_rig

from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.recevents import EventKind
from tether.recorder import search as rsearch
from tether.recorder.db import connect
from tether.recording import RecordingSender
from tether.topics import REC, Topics


async def run(rig: Rig, sessions: int, seconds: float, trickle: bool) -> list[float]:
    topics = Topics()
    senders: dict[str, RecordingSender] = {}

    def on_message(topic: str, payload: bytes) -> None:
        parsed = topics.parse_session(topic)
        if parsed is not None and parsed[2] in senders:
            senders[parsed[2]].on_message(payload, time.monotonic())

    conn = MqttConnection(BrokerSettings.from_identity(rig.agent.name, rig.agent.broker), on_message)
    await conn.connect()
    await conn.subscribe_confirmed(topics.agent_recorder_acks(rig.agent.name))
    for _ in range(sessions):
        s = new_sender(rig.agent, rig.recorder, rig.authority)
        senders[s.sid.hex()] = s

    def flush() -> None:
        now = time.monotonic()
        for sid, s in senders.items():
            for blob in s.take_outgoing(now):
                conn.publish(topics.session(rig.agent.name, "bench-client", sid, REC), blob,
                             qos=1 if blob is s.open_message else 0)

    async def pump() -> None:
        while True:
            flush()
            await asyncio.sleep(0.05)

    pumper = asyncio.get_running_loop().create_task(pump())
    deadline = time.monotonic() + 30
    while not all(s.opened for s in senders.values()):
        assert time.monotonic() < deadline, "the recorder did not open every recording"
        await asyncio.sleep(0.1)
    pending: list[tuple[str, float]] = []  # (token, when it was recorded)
    lags: list[float] = []
    db = connect(rig.stack.home.recordings, create=False)
    order = list(senders.values())
    counters = [0] * sessions
    period = 0.1 if trickle else 1.0
    lines_per_tick = 1 if trickle else 10
    start = time.monotonic()
    next_sample = start
    tick = 0
    while time.monotonic() - start < seconds or pending:
        now = time.monotonic()
        producing = now - start < seconds
        if producing:
            # Stagger: each 10 ms slot serves the sessions whose turn it is.
            slot = tick % int(period / 0.01)
            for i in range(slot, sessions, int(period / 0.01)):
                lines = []
                for _ in range(lines_per_tick):
                    counters[i] += 1
                    token = f"lagtok-{i:03d}-{counters[i]:06d}"
                    lines.append(f"{token} {'x' * (96 - len(token))}\r\n")
                order[i].record(EventKind.OUTPUT, "".join(lines).encode(), now)
                if now >= next_sample:
                    pending.append((token, time.time()))
                    next_sample = now + 0.2
            tick += 1
        for token, recorded in list(pending):
            if rsearch.search(db, token, limit=1):
                lags.append(time.time() - recorded)
                pending.remove((token, recorded))
            elif time.time() - recorded > 30:
                lags.append(float("inf"))
                pending.remove((token, recorded))
        await asyncio.sleep(0.01)
    pumper.cancel()
    db.close()
    await conn.close()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--trickle", action="store_true", help="a line every 100 ms, no pauses")
    args = parser.parse_args()
    random.seed(1)
    with recorder_rig() as rig:
        lags = asyncio.run(run(rig, args.sessions, args.seconds, args.trickle))
    lags.sort()
    p95 = lags[int(len(lags) * 0.95) - 1]
    print(f"{args.sessions} sessions x ~1 KB/s ({'trickle' if args.trickle else 'bursts'}), "
          f"{args.seconds:.0f} s, {len(lags)} samples: output -> searchable lag "
          f"p50 {statistics.median(lags):.2f} s, p95 {p95:.2f} s, max {lags[-1]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
