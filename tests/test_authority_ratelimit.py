"""The sans-IO token bucket in tether/ratelimit.py (no broker)."""

from __future__ import annotations

import pytest

from tether.ratelimit import RateLimiter


def test_burst_then_refused_then_refills_at_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_keys=10)
    assert [limiter.allow("bob", 100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.dropped == 1
    assert not limiter.allow("bob", 100.4)  # 0.8 token: not yet
    assert limiter.allow("bob", 100.5)  # 1 token after 0.5 s at 2/s
    assert not limiter.allow("bob", 100.5)


def test_refill_is_capped_at_burst() -> None:
    limiter = RateLimiter(rate=10.0, burst=2, max_keys=10)
    assert limiter.allow("bob", 0.0)
    results = [limiter.allow("bob", 1000.0) for _ in range(3)]
    assert results == [True, True, False]


def test_keys_are_independent() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=10)
    assert limiter.allow("bob", 0.0)
    assert not limiter.allow("bob", 0.0)
    assert limiter.allow("alice", 0.0)


def test_clock_stepping_back_adds_no_tokens() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=10)
    assert limiter.allow("bob", 50.0)
    assert not limiter.allow("bob", 10.0)
    assert not limiter.allow("bob", 50.5)  # measured from 50.0, not from 10.0
    assert limiter.allow("bob", 51.0)


def test_memory_is_bounded_and_the_least_recently_seen_key_goes() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.allow(key, 0.0)
    assert not limiter.allow("a", 0.0)  # a is now the most recently seen
    assert limiter.allow("d", 0.0)  # b is forgotten to make room
    assert len(limiter) == 3
    assert not limiter.allow("a", 0.0)  # a's empty bucket was kept
    assert limiter.allow("b", 0.0)  # b starts again with a full bucket
    for i in range(1000):
        limiter.allow(f"k{i}", 0.0)
    assert len(limiter) == 3


@pytest.mark.parametrize(("rate", "burst", "max_keys"), [(0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_rejects_nonsense_parameters(rate: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst, max_keys)
