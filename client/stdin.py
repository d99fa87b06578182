"""Local stdin, pushed into the session as it arrives, with backpressure.

Terminals, pipes and sockets are read from the event loop itself, and each chunk is
handed straight to `on_chunk`: a keystroke goes out without a thread hand-off or a task
switch. Regular files cannot be polled, so a thread reads those. When `on_chunk` returns
an awaitable (it could not send everything for lack of credit), reading pauses until it
completes, so at most one chunk waits in memory.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

CHUNK = 65536

ChunkHandler = Callable[[bytes], Awaitable[None] | None]


class StdinReader:
    def __init__(self, on_chunk: ChunkHandler, fd: int = 0) -> None:
        self.fd = fd
        self.on_chunk = on_chunk
        self.loop = asyncio.get_running_loop()
        self.eof = asyncio.Event()
        self._polling = False
        self._closed = False
        self._ready = threading.Event()
        try:
            self.loop.add_reader(fd, self._on_readable)
            self._polling = True
            self._threaded = False
        except (PermissionError, OSError, ValueError):
            self._threaded = True
            self._ready.set()
            threading.Thread(target=self._run, name="stdin", daemon=True).start()

    def _read(self) -> bytes:
        try:
            return os.read(self.fd, CHUNK)
        except BlockingIOError:
            raise
        except OSError:
            return b""

    def _on_readable(self) -> None:
        try:
            data = self._read()
        except BlockingIOError:
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._closed:
            return
        if not data:
            self._stop_polling()
        pending = self.on_chunk(data)
        if not data:
            self.eof.set()
            return
        if pending is None:
            self._ready.set()
            return
        self._stop_polling()
        asyncio.ensure_future(pending).add_done_callback(self._resume)

    def _resume(self, _done: object) -> None:
        if self._closed or self.eof.is_set():
            return
        if self._threaded:
            self._ready.set()
        elif not self._polling:
            self.loop.add_reader(self.fd, self._on_readable)
            self._polling = True

    def _stop_polling(self) -> None:
        if self._polling:
            self.loop.remove_reader(self.fd)
            self._polling = False

    def _run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            data = self._read()
            try:
                self.loop.call_soon_threadsafe(self._deliver, data)
            except RuntimeError:
                return  # the loop is gone
            if not data:
                return

    def close(self) -> None:
        self._closed = True
        self._stop_polling()
