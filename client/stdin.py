"""Reading local stdin without blocking the event loop, with backpressure.

A thread does the blocking reads, so pipes, terminals and regular files all work; it
hands over at most a few chunks before waiting, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import os
import threading

CHUNK = 65536


class StdinReader:
    def __init__(self, fd: int = 0, depth: int = 4) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(self.queue.put(data), self.loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop is gone
            if not data:
                return

    async def read(self) -> bytes:
        """The next chunk; b"" at end of input."""
        return await self.queue.get()
