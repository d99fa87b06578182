"""How long the recorder's commits take while its index worker is busy (issue 11).

The recorder's ingest path (recorder/store.py `Store.commit`: append, fsync, commit the
session rows) runs in this process on a real store, committing a 16 KB text event every
`--every` seconds, while the real index worker (`IndexProcess`, a child at SCHED_IDLE)
indexes a backlog and then the growing log. `--load N` busy-loops N processes at normal
priority, so the worker is preempted (as on a loaded recorder host). Prints the commit
times: the longest is what an ack to the agent waited.

    python3 bench/index_lock_stall.py [--seconds 30] [--backlog-mb 20] [--load 2] [--no-index]

Against another checkout of the code (for a before/after): run it with PYTHONPATH
pointing at a tree whose `tether` package holds that version's modules.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorder_rig import new_sender

EVENT = 16 * 1024


def text(n: int, seed: int) -> bytes:
    line = b"%09d the quick brown fox jumps over the lazy dog, record %d of the bench\r\n"
    out = bytearray()
    i = 0
    while len(out) < n:
        out += line % (seed + i, i)
        i += 1
    return bytes(out[:n])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between commits")
    parser.add_argument("--backlog-mb", type=float, default=20.0,
                        help="text stored before measuring, for the worker to index")
    parser.add_argument("--load", type=int, default=2, help="busy-looping processes")
    parser.add_argument("--no-index", action="store_true", help="no index worker (baseline)")
    args = parser.parse_args()

    import tether.recorder.db as rdb
    from tether.edge.keys import Identity
    from tether.recevents import EventKind
    from tether.recorder.index_process import IndexProcess
    from tether.recorder.store import Store
    from tether.recording import RecordingReceiver, open_recording

    print(f"code: {Path(rdb.__file__).parent}", flush=True)
    authority = Identity.generate("authority", "authority")
    agent = Identity.generate("agent1", "agent", with_x25519=True)
    recorder = Identity.generate("recorder", "recorder", with_x25519=True)
    sender = new_sender(agent, recorder, authority)
    [open_msg] = sender.take_outgoing(time.monotonic())
    opened = open_recording(open_msg, recorder_name="recorder",
                            x25519_secret=recorder.x25519_secret or b"",
                            authority_key=authority.public_key, agent="agent1")
    receiver = RecordingReceiver(opened)
    sender.on_message(receiver.ack(recorder.signing_key), time.monotonic())
    seq = 0

    def record(data: bytes) -> list[bytes]:
        sender.record(EventKind.OUTPUT, data, time.monotonic())
        msgs = sender.take_outgoing(time.monotonic())
        receiver.stored = sender.next_index  # acked: the sender's queue stays small
        sender.on_message(receiver.ack(recorder.signing_key), time.monotonic())
        return msgs

    hogs: list[subprocess.Popen[bytes]] = []
    indexer: IndexProcess | None = None
    with tempfile.TemporaryDirectory(prefix="tether-lockstall-") as tmp:
        root = Path(tmp)
        store = Store(root)
        try:
            store.begin(opened, open_msg, "bench-client")
            f = store.files[opened.sid.hex()]
            stored = 0
            while stored < args.backlog_mb * 1e6:
                for msg in record(text(EVENT, seq)):
                    for event, chain in receiver.on_data(msg).events:
                        f.add(event, chain)
                seq += 1000
                stored += EVENT
                if seq % 64_000 == 0:
                    store.commit(store.prepare())
            store.commit(store.prepare())
            if not args.no_index:
                indexer = IndexProcess(root)
                indexer.start()
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.load)]
            times: list[float] = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for msg in record(text(EVENT, seq)):
                    for event, chain in receiver.on_data(msg).events:
                        f.add(event, chain)
                seq += 1000
                start = time.perf_counter()
                store.commit(store.prepare())
                times.append(time.perf_counter() - start)
                if indexer is not None:
                    indexer.notify()
                time.sleep(args.every)  # pacing of the simulated ingest, not synchronisation
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            if indexer is not None:
                indexer.stop()
            store.close()
        files = sorted(p.name for p in root.glob("*.db"))
    times.sort()
    ms = [t * 1000 for t in times]
    print(f"store files: {', '.join(files)}")
    print(f"commits: {len(ms)} in {args.seconds:.0f} s, index worker "
          f"{'off' if args.no_index else 'on'}, load {args.load}, backlog {args.backlog_mb} MB")
    print(f"commit ms: p50 {statistics.median(ms):.1f}  p99 {ms[int(len(ms) * 0.99) - 1]:.1f}"
          f"  max {ms[-1]:.1f}  over 1 s: {sum(m > 1000 for m in ms)}  over 100 ms: "
          f"{sum(m > 100 for m in ms)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
