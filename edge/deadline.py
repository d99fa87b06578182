"""One loop timer for a sans-IO state machine's next deadline.

The state machines say when they next need time (`next_deadline()`); the I/O edge keeps a
single timer armed for it, moved only when something is due earlier than it fires. When
it fires, the edge ticks the machine and arms again for whatever is due then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class DeadlineTimer:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._on_due = on_due
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def arm(self, deadline: float | None) -> None:
        """Fire at `deadline` (monotonic), or never if None; keep an earlier timer."""
        if deadline is None:
            self.cancel()
            return
        if self._handle is not None and self._at <= deadline:
            return  # it fires first; the tick then re-arms for whatever is due
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._handle = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._on_due()
