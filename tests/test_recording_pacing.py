"""The recording window, end to end on both brokers with real processes: a session that
prints a lot while its recorder is stopped (SIGSTOP) gets at most about one recording
window (4 MiB of unacked recording, tether.recording.REC_WINDOW) further, then its output
to the client stops; after SIGCONT it resumes, and the client and the recording both get
every byte."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO

from stack import Stack, policy, statement, wait_for

from tether.recevents import EventKind, iter_log

LINES = 3_000_000  # `seq 1 LINES`: 22.9 MB, several windows past any point it is stopped at
WINDOW = 4 << 20  # as documented; a literal, so a larger REC_WINDOW fails the bound
QUIET = 1.5  # seconds without a byte that count as "output stopped"


class Reader:
    """Reads a pipe to its end on a thread; how much came, and when the last byte did."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        self.fd = pipe.fileno()
        self.data = bytearray()
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            with self.lock:
                self.data += chunk
                self.last = time.monotonic()

    def size(self) -> int:
        with self.lock:
            return len(self.data)

    def quiet_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last


def expected_output() -> bytes:
    return "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()


def test_output_stops_within_a_window_while_the_recorder_is_stopped(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    stack.start_up("--no-recorder")
    recorder = stack.start_recorder()
    stopped = False
    try:
        with policy(stack, statement(recording='"required"')):
            start = time.time()
            client = stack.popen("run", "local", "--", "seq", "1", str(LINES),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = Reader(client.stdout), Reader(client.stderr)
            wait_for(lambda: out.size() >= WINDOW // 4, timeout=60, what="output flowing")
            os.kill(recorder.pid, signal.SIGSTOP)
            stopped = True
            at_stop = out.size()
            stop_time = time.monotonic()
            assert at_stop < len(expected_output()) - 3 * WINDOW, at_stop  # far from done
            # A required recording freezes the session after 10 s of recorder silence;
            # the window must hold the output well before that.
            wait_for(lambda: out.quiet_for() >= QUIET, timeout=8, what="output to stop")
            held = out.size() - at_stop
            stalled_after = time.monotonic() - stop_time - out.quiet_for()
            assert held <= 2 * WINDOW, f"{held} bytes reached the client after the stop"
            assert client.poll() is None
            os.kill(recorder.pid, signal.SIGCONT)
            stopped = False
            cont_time = time.monotonic()
            wait_for(lambda: out.size() > at_stop + held, timeout=30, what="output to resume")
            resumed_after = time.monotonic() - cont_time
            assert client.wait(120) == 0, bytes(err.data)
            out.thread.join(10)
            assert bytes(out.data) == expected_output()  # nothing lost, nothing repeated
            assert b"recording stalled" not in err.data, bytes(err.data)
            row = stack.wait_recorded("closed", after=start, timeout=60)
        print(f"{held} bytes ({held / WINDOW:.2f} windows) after SIGSTOP, stopped "
              f"{stalled_after:.2f} s after it; resumed {resumed_after * 1000:.0f} ms after SIGCONT")
        recorded = b"".join(stored.event.data for stored in iter_log(stack.log_bytes(row["sid"]))
                            if stored.event.kind == EventKind.OUTPUT)
        assert recorded == expected_output()
        assert stack.tether("verify", row["sid"]).returncode == 0
    finally:
        if stopped:
            os.kill(recorder.pid, signal.SIGCONT)
