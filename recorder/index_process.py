"""The index worker in a child process of the recorder.

Screen reconstruction and FTS5 inserts are CPU work in Python. In a thread they would
take the GIL from the ingest loop, and in `tether up` from the agent sharing that loop
(measured: a 27 MB `cat` fell from about 13 to 3.4 MB/s). In a child process they get
their own interpreter and core, and the ack path never waits for them.

The parent wakes the child by writing a byte to its stdin; closing stdin stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger("tether.recorder.index")
STOP_TIMEOUT = 10.0
NICENESS = 10


class IndexProcess:
    """Same interface as IndexWorker (start, notify, stop), in a child process."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.recorder.index_process", str(self.store)],
            stdin=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdin is not None
        os.set_blocking(self.proc.stdin.fileno(), False)

    def notify(self) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, ValueError):
            os.write(self.proc.stdin.fileno(), b"\n")  # a full pipe already means "wake up"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("index worker %d did not stop; killing it", proc.pid)
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    from tether.recorder.indexer import IndexWorker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The recorder stops us by closing stdin; a Ctrl-C meant for `tether up` is not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Indexing can wait; live sessions cannot. SCHED_IDLE runs us only on a CPU that
    # would otherwise idle: a plain nice still took a core from a bulk PTY session's
    # pipeline (cat, PTY, agent, broker, client) on a 2-core machine.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
    worker = IndexWorker(Path(argv[0]))
    worker.start()
    done = threading.Event()

    def on_term(_sig: int, _frame: object) -> None:
        done.set()
        os.close(0)  # ends the read below

    signal.signal(signal.SIGTERM, on_term)
    try:
        while not done.is_set():
            try:
                chunk = os.read(0, 4096)
            except OSError:
                break
            if not chunk:
                break
            worker.notify()
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
