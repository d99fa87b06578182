"""Rate-limited fan-out of state updates where only the newest one counts, sans-IO.

Presence is retained state: a reader only ever needs an agent's newest document. So an
update over its publisher's rate is not dropped (the last one of a burst would be lost and
the agent shown stale) but held, one per (publisher, topic), replaced by anything newer
and released when the publisher's token bucket refills. A flood from one principal then
reaches subscribers at `rate` per second whatever it sends, and holds at most
`max_topics` updates.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from tether.ratelimit import RateLimiter

T = TypeVar("T")


class Throttle(Generic[T]):
    """Per-key token buckets (`rate` per second, `burst`) in front of per-topic updates."""

    def __init__(self, rate: float, burst: int, max_keys: int, max_topics: int) -> None:
        if max_topics < 1:
            raise ValueError("max_topics must be >= 1")
        self._limiter = RateLimiter(rate, burst, max_keys)
        self._max_keys = max_keys
        self._max_topics = max_topics
        self.retry = 1.0 / rate  # a held update may go out this long after the last try
        self._held: OrderedDict[str, OrderedDict[str, T]] = OrderedDict()
        self.held_total = 0  # updates held so far (each replaced or released later)
        self.discarded = 0  # held updates replaced by a newer one or pushed out

    def offer(self, key: str, topic: str, update: T, now: float) -> bool:
        """True: send `update` now. False: it is held for `release`."""
        held = self._held.get(key)
        if held is None and self._limiter.allow(key, now):
            return True
        if held is None:
            while len(self._held) >= self._max_keys:
                _, dropped = self._held.popitem(last=False)
                self.discarded += len(dropped)
            held = self._held[key] = OrderedDict()
        if topic in held:
            self.discarded += 1
            del held[topic]  # the newest update goes to the back of its publisher's queue
        elif len(held) >= self._max_topics:
            held.popitem(last=False)
            self.discarded += 1
        held[topic] = update
        self.held_total += 1
        return False

    def release(self, now: float) -> list[T]:
        """The held updates whose publisher has a token again, oldest first."""
        out: list[T] = []
        for key in list(self._held):
            held = self._held[key]
            while held and self._limiter.allow(key, now):
                out.append(held.popitem(last=False)[1])
            if not held:
                del self._held[key]
        return out

    @property
    def pending(self) -> int:
        return sum(len(held) for held in self._held.values())


__all__ = ["Throttle"]
