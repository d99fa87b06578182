"""Per-key token buckets, sans-IO: the caller passes the time in.

Used to bound how much work one principal can make a role do (grant requests at the
authority, HELLOs at an agent) before any costly check runs. Memory is bounded: at most
`max_keys` buckets are kept; past that the least recently seen key is forgotten (it starts
again with a full bucket), which only an attacker holding `max_keys` other identities
could exploit, and a key that keeps sending stays the most recently seen.

`RateLimiter(1 / interval, 1, n)` also answers "log this at most once per key per interval".
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`rate` tokens per second per key, up to `burst` saved; one token per allowed event."""

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        if not rate > 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.dropped = 0  # events refused so far, all keys

    def allow(self, key: str, now: float) -> bool:
        """Take a token from `key`'s bucket at time `now` (seconds, monotonic)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self._max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            self._refill(bucket, now)
            self._buckets.move_to_end(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.dropped += 1
        return False

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.at)  # a clock that steps back adds nothing
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.at = max(bucket.at, now)


__all__ = ["RateLimiter"]
