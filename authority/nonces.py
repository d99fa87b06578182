"""The authority's memory of request nonces, kept across restarts.

A request is answered once: its nonce is remembered until its timestamp can no longer
pass the clock-skew check (ts + MAX_SKEW). Each nonce is appended to a 0600 journal and
fsync'd before the request is answered, so a request captured before a restart is still
refused after it. On start, and when expired lines outnumber live ones, the journal is
rewritten atomically (tether.edge.keys.write_private_file) with the live entries only.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

from tether.edge.keys import read_private_file, write_private_file
from tether.encoding import dumps, loads

# Live nonces at most. The per-principal rate limit keeps one principal far below this
# (burst + rate x 240 s); past it new requests are refused until entries expire.
MAX_NONCES = 100_000


class ReplayCache:
    """Which nonces have been used, until when (sans-IO: the time is passed in)."""

    def __init__(self, max_entries: int = MAX_NONCES) -> None:
        self.max_entries = max_entries
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expires

    @property
    def full(self) -> bool:
        return len(self._expires) >= self.max_entries

    def expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, nonce = heapq.heappop(self._heap)
            if self._expires.get(nonce) == expires:
                del self._expires[nonce]

    def add(self, nonce: str, expires: float) -> None:
        self._expires[nonce] = expires
        heapq.heappush(self._heap, (expires, nonce))

    def items(self) -> list[tuple[str, float]]:
        return list(self._expires.items())


class NonceJournal:
    """A ReplayCache backed by an append-only journal file."""

    def __init__(self, path: Path, now: float, max_entries: int = MAX_NONCES,
                 slack: int = 1024) -> None:
        self.path = path
        self._slack = slack  # dead lines tolerated beyond the live ones before a rewrite
        self.cache = ReplayCache(max_entries)
        self._lines = 0
        self._fd = -1
        for nonce, expires in _read(path):
            if expires > now:
                self.cache.add(nonce, expires)
        self._compact()

    def remember(self, nonce: str, expires: float, now: float) -> str | None:
        """Record `nonce` as used; or say why the request must be refused (a replay, or too
        many live nonces). Durable when it returns None."""
        self.cache.expire(now)
        if nonce in self.cache:
            return "replayed"
        if self.cache.full:
            return "too many requests in the last minutes"
        self.cache.add(nonce, expires)
        os.write(self._fd, dumps([nonce, expires]) + b"\n")
        os.fsync(self._fd)
        self._lines += 1
        if self._lines > 2 * len(self.cache) + self._slack:
            self._compact()
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _compact(self) -> None:
        entries = self.cache.items()
        write_private_file(self.path, b"".join(dumps([n, e]) + b"\n" for n, e in entries))
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(entries)


def _read(path: Path) -> list[tuple[str, float]]:
    """The journal's entries; a line cut short by a crash (or otherwise not an entry) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in read_private_file(path).splitlines():
        try:
            nonce, expires = loads(line)
        except (ValueError, TypeError):
            continue
        if isinstance(nonce, str) and isinstance(expires, int | float):
            out.append((nonce, float(expires)))
    return out


__all__ = ["MAX_NONCES", "NonceJournal", "ReplayCache"]
