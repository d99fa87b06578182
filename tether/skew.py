"""The clock-skew rule every signed, timestamped message follows (sans-IO).

A grant request, an audit query, an enrolment request, a HELLO and a console login token
each carry the sender's time; the receiver takes it only within MAX_SKEW seconds of its
own, so a captured message goes stale and the receiver need remember its nonce only that
long.
"""

from __future__ import annotations

import math

MAX_SKEW = 120.0


def within_skew(ts: float, now: float) -> bool:
    """Whether a message stamped `ts` may be taken at `now`. A NaN or infinite stamp
    (which compares false with everything) never is."""
    return math.isfinite(ts) and abs(now - ts) <= MAX_SKEW
