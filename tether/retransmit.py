"""Retransmission timing shared by the session channel (tether/channel.py) and the
recorder stream (tether/recording.py): both resend what is unacknowledged after an RTO
that starts at RTO_MIN, doubles (BACKOFF) on every timeout up to RTO_MAX, and falls back
to RTO_MIN on progress."""

from __future__ import annotations

RTO_MIN = 0.5
RTO_MAX = 4.0
BACKOFF = 2.0


def backoff(rto: float) -> float:
    """The RTO after a timeout."""
    return min(rto * BACKOFF, RTO_MAX)
