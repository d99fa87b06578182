"""The recorder acks a recording only once it is durable, end to end on both brokers: a
real recorder process on a slowed disk (every fsync takes longer, tests/support/
slow_fsync.py), a real recorded session, and every ACK seen on the broker compared with
the fsyncs that had completed when it arrived. An ack that went out before its fsync
returned, or for more events than the synced log holds, fails the test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from stack import Spy, Stack, policy, statement, wait_for

from tether.recevents import iter_log
from tether.recording import INDEX, PREFIX, RecType, message_type

FSYNC_DELAY = 0.25  # seconds each fsync takes on the slowed disk


class TimedSpy(Spy):
    """A spy that notes when (CLOCK_MONOTONIC) each message reached it."""

    def __init__(self, stack: Stack) -> None:
        self.received: list[tuple[float, str, bytes]] = []
        super().__init__(stack)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        at = time.monotonic()
        with self._lock:
            self.received.append((at, msg.topic, bytes(msg.payload)))

    def acks(self) -> list[tuple[float, str, int]]:
        """(arrival, sid, stored) of every recorder ACK seen."""
        out = []
        with self._lock:
            received = list(self.received)
        for at, topic, payload in received:
            if not topic.endswith("/rack"):
                continue
            kind, sid = message_type(payload)
            if kind == RecType.ACK:
                out.append((at, sid.hex(), INDEX.unpack_from(payload, PREFIX.size)[0]))
        return out


def start_slow_recorder(stack: Stack, fsync_log: Path) -> subprocess.Popen[bytes]:
    env = dict(stack.env, TETHER_TEST_FSYNC_LOG=str(fsync_log),
               TETHER_TEST_FSYNC_DELAY=str(FSYNC_DELAY))
    return stack.start_role("recorder", ready=b"recorder is up", env=env, slow_disk=True)


def fsyncs(path: Path) -> list[tuple[float, int, str]]:
    out = []
    for line in path.read_text().splitlines():
        done, size, name = line.split(" ", 2)
        out.append((float(done), int(size), name))
    return out


def event_ends(log: bytes) -> list[int]:
    """ends[n] = the log's length once events 0..n-1 are in it."""
    ends = [0]
    for stored in iter_log(log):
        ends.append(stored.offset + len(stored.event.encode()) + len(stored.chain))
    assert ends[-1] == len(log)
    return ends


def test_no_ack_before_the_fsync_that_makes_it_true(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    fsync_log = stack.root / "fsyncs.txt"
    recorder = start_slow_recorder(stack, fsync_log)
    spy = TimedSpy(stack)
    try:
        with policy(stack, statement(recording='"required"')):
            start = time.time()
            # Output in bursts, so the recording is acked many times along the way.
            r = stack.tether("run", "local", "--", "sh", "-c",
                             "for i in 1 2 3 4 5 6; do seq 1 20000; sleep 0.3; done; echo done-$((6*7))",
                             timeout=120)
            assert r.returncode == 0, r.stderr
            assert r.stdout.endswith(b"done-42\n") and len(r.stdout) > 6 * 100_000
            row = stack.wait_recorded("closed", after=start, timeout=60)
        sid = row["sid"]
        ends = event_ends(stack.log_bytes(sid))
        # The end manifest's ack: the recording is complete and acked.
        wait_for(lambda: any(s == sid and n == len(ends) - 1 for _, s, n in spy.acks()),
                 timeout=30, what="the ack of the whole recording")
    finally:
        spy.close()
        recorder.terminate()
        recorder.wait(30)
    synced = fsyncs(fsync_log)
    acks = [(at, n) for at, s, n in spy.acks() if s == sid]
    log_name = str(stack.home.recordings / "logs" / f"{sid}.log")
    log_syncs = [(done, size) for done, size, name in synced if name == log_name]
    open_syncs = [done for done, _, name in synced if f".{sid}.open." in name]
    assert len(log_syncs) >= 4, log_syncs  # several group commits, each with its fsync
    assert open_syncs, synced
    assert len({n for _, n in acks}) >= 4, acks  # acks for growing prefixes of the recording
    early: list[tuple[float, int, str]] = []
    for at, stored in acks:
        if stored == 0:
            # The OPEN's ack: the OPEN file was synced before it.
            if not any(done <= at for done in open_syncs):
                early.append((at, stored, "the OPEN"))
            continue
        need = ends[stored]
        if not any(done <= at and size >= need for done, size in log_syncs):
            early.append((at, stored, f"log bytes 0..{need}"))
    assert not early, (early, log_syncs)
    margins = [at - min(done for done, size in log_syncs if size >= ends[n]) for at, n in acks if n]
    print(f"{len(acks)} acks, {len(log_syncs)} log fsyncs; ack after its fsync by "
          f"{min(margins) * 1000:.1f}..{max(margins) * 1000:.1f} ms")
