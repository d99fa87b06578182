"""Playing a stored session: loading it, and the sans-IO player.

The player knows nothing of terminals or clocks. Given the session's events and a position
(session time), it says what to write and how long to wait first (`Step`); the terminal
edge (replay_cli) waits, writes, and tells it about keys. Seeking writes the nearest
keyframe's repaint and then, without delay, the output between it and the target, so it
costs the same anywhere in a long session; without keyframes it feeds from the start.
"""

from __future__ import annotations

import bisect
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import TetherError
from tether.limits import clamp_geometry
from tether.recevents import EventKind, TruncatedRecord, iter_log, resize_of
from tether.recorder import db as recdb
from tether.recorder.keyframes import RESET, Keyframe

PLAYED = (EventKind.OUTPUT, EventKind.STDERR)
COALESCE = 0.004  # events this close (wall seconds) go out in one write
MAX_WRITE = 64 * 1024


class ReplayError(TetherError):
    """A session that cannot be found or read; the message is for the user."""


@dataclass(frozen=True)
class SessionInfo:
    sid: str
    user: str
    agent: str
    started: float  # wall clock, seconds since the epoch
    duration: float
    cols: int
    rows: int
    status: str
    log_bytes: int


def resolve_sid(db: sqlite3.Connection, prefix: str) -> str:
    """The one session whose id starts with `prefix`."""
    prefix = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", prefix):
        raise ReplayError(f"{prefix!r} is not a session id (hex digits)")
    rows = db.execute("SELECT sid FROM sessions WHERE substr(sid, 1, ?) = ? ORDER BY started",
                      (len(prefix), prefix)).fetchall()
    if not rows:
        raise ReplayError(f"no recorded session {prefix}")
    if len(rows) > 1:
        shown = ", ".join(r[0][: len(prefix) + 4] for r in rows[:5])
        raise ReplayError(f"{prefix} matches {len(rows)} sessions ({shown}...): give more digits")
    return str(rows[0][0])


def load_info(db: sqlite3.Connection, sid: str) -> SessionInfo:
    row = db.execute("SELECT sid, user, agent, started, duration, cols, rows, status, log_bytes"
                     " FROM sessions WHERE sid = ?", (sid,)).fetchone()
    if row is None:
        raise ReplayError(f"no recorded session {sid}")
    # The row's size came from an agent: a reader clamps it rather than allocate a screen
    # of any size a row says (the recorder refuses such OPENs; old or edited rows remain).
    cols, rows = clamp_geometry(int(row[5]), int(row[6]))
    return SessionInfo(str(row[0]), str(row[1]), str(row[2]), float(row[3]), float(row[4]),
                       cols, rows, str(row[7]), int(row[8]))


@dataclass
class Recording:
    """A session's durable events, as parallel lists (bisect by time or log offset)."""

    info: SessionInfo
    times: list[float] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    kinds: list[EventKind] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    _out_starts: list[int] | None = None

    @classmethod
    def from_log(cls, info: SessionInfo, log: bytes) -> Recording:
        rec = cls(info)
        try:
            for stored in iter_log(memoryview(log)[: info.log_bytes]):
                e = stored.event
                rec.times.append(e.t)
                rec.offsets.append(stored.offset)
                rec.kinds.append(e.kind)
                rec.data.append(e.data)
        except TruncatedRecord:
            pass  # log_bytes is durable; a torn tail past it is not ours to read
        return rec

    @classmethod
    def load(cls, store: Path, db: sqlite3.Connection, sid: str) -> Recording:
        info = load_info(db, sid)
        try:
            with open(recdb.log_path(store, sid), "rb") as f:
                log = f.read(info.log_bytes)
        except FileNotFoundError as exc:
            raise ReplayError(f"the log of session {sid} is missing ({exc.filename})") from exc
        return cls.from_log(info, log)

    @property
    def duration(self) -> float:
        return max(self.info.duration, self.times[-1] if self.times else 0.0)

    def time_of_output_offset(self, offset: int) -> float | None:
        """Session time of the event that holds byte `offset` of the session's output."""
        if self._out_starts is None:
            starts, total = [], 0
            for kind, data in zip(self.kinds, self.data, strict=True):
                starts.append(total)
                if kind in PLAYED:
                    total += len(data)
            self._out_starts = starts
        i = bisect.bisect_right(self._out_starts, offset) - 1
        while 0 <= i < len(self.kinds) and self.kinds[i] not in PLAYED:
            i += 1
        return self.times[i] if 0 <= i < len(self.times) else None


def event_bytes(kind: EventKind, data: bytes) -> bytes:
    """What playback writes for one event: output, a gap marker, or nothing."""
    if kind in PLAYED:
        return data
    if kind == EventKind.GAP:
        try:
            lost = int(json.loads(data).get("lost_bytes", 0))
        except (ValueError, AttributeError, TypeError):
            lost = 0
        return b"\r\n\x1b[0;2m[recording gap: %d bytes lost]\x1b[0m\r\n" % lost
    return b""  # INPUT is never played; NOTICE, REDACTION, EXIT... are not screen output


def seek_bytes(rec: Recording, target: float, keyframe: Keyframe | None) -> tuple[bytes, int]:
    """The bytes that bring a terminal to the screen at session time `target`, and the
    index of the first event after it. `keyframe` is the nearest one at or before target."""
    end = bisect.bisect_right(rec.times, target)
    start, head = 0, RESET
    if keyframe is not None and keyframe.t <= target:
        i = bisect.bisect_left(rec.offsets, keyframe.log_offset)
        if i == len(rec.offsets) or rec.offsets[i] == keyframe.log_offset:
            start, end, head = i, max(i, end), keyframe.repaint
    kinds, data = rec.kinds, rec.data
    body = [data[i] for i in range(start, end) if kinds[i] in PLAYED]
    return head + b"".join(body), end


@dataclass(frozen=True)
class Step:
    delay: float  # wall seconds to wait before writing
    data: bytes
    first_t: float  # session time of the first event written
    t: float  # session time after this step
    index: int  # the next event after this step
    size: tuple[int, int] | None = None  # the recording's size changed to this


class Player:
    """Position, speed and pause state of one playback; no I/O."""

    def __init__(self, rec: Recording, keyframe_at: Callable[[float], Keyframe | None], *,
                 speed: float = 1.0, idle_limit: float | None = None, timed: bool = True) -> None:
        self.rec = rec
        self.keyframe_at = keyframe_at
        self.speed = speed
        self.idle_limit = idle_limit
        self.timed = timed
        self.paused = False
        self.pos = 0.0
        self.index = 0

    def start(self, at: float) -> bytes:
        """Where playback begins: from the very start nothing needs repainting."""
        if at <= 0:
            self.pos, self.index = 0.0, 0
            return b""
        return self.seek(at)

    def seek(self, target: float) -> bytes:
        target = min(max(0.0, target), self.rec.duration)
        data, self.index = seek_bytes(self.rec, target, self.keyframe_at(target))
        self.pos = target
        return data

    def next_step(self) -> Step | None:
        rec, i, n = self.rec, self.index, len(self.rec.times)
        while i < n and not event_bytes(rec.kinds[i], rec.data[i]) and rec.kinds[i] != EventKind.RESIZE:
            i += 1
        if i >= n:
            return None
        first_t = rec.times[i]
        delay = self._wall(first_t - self.pos)
        out: list[bytes] = []
        size: tuple[int, int] | None = None
        total, last_t = 0, first_t
        while i < n and total < MAX_WRITE:
            t = rec.times[i]
            if out and self._wall(t - last_t) > COALESCE:
                break
            kind = rec.kinds[i]
            if kind == EventKind.RESIZE:
                size = resize_of(rec.data[i]) or size
            else:
                chunk = event_bytes(kind, rec.data[i])
                out.append(chunk)
                total += len(chunk)
            last_t = t
            i += 1
        return Step(delay, b"".join(out), first_t, last_t, i, size)

    def commit(self, step: Step) -> None:
        self.index, self.pos = step.index, max(self.pos, step.t)

    def waited(self, wall: float, step: Step) -> None:
        """Part of a step's delay passed (a key came in): move the position on by it."""
        self.pos = min(step.first_t, self.pos + wall * self.speed)

    def _wall(self, gap: float) -> float:
        if not self.timed:
            return 0.0
        gap = max(0.0, gap)
        if self.idle_limit is not None:
            gap = min(gap, self.idle_limit)
        return gap / self.speed


def steps(player: Player, at: float = 0.0) -> Iterator[tuple[float, bytes]]:
    """Non-interactive playback as (delay, bytes) pairs."""
    yield 0.0, player.start(at)
    while (step := player.next_step()) is not None:
        player.commit(step)
        yield step.delay, step.data


# ----- presentation -----


def format_position(t: float) -> str:
    """0:42.0, 12:03.5, 1:02:03.0"""
    t = max(0.0, t)
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{int(m)}:{s:04.1f}"


def format_duration(t: float) -> str:
    """3m12s, 1h02m, 8s"""
    secs = round(t)
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


def parse_position(text: str) -> float:
    """Seconds, or mm:ss, or h:mm:ss (fractions allowed in the last part)."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise ValueError(f"{text!r} is not a time (seconds, mm:ss or h:mm:ss)")
    total = 0.0
    for p in parts:
        value = float(p)  # ValueError on junk
        if value < 0 or value != value:
            raise ValueError(f"{text!r} is not a time")
        total = total * 60 + value
    return total


@dataclass(frozen=True)
class Hit:
    n: int
    sid: str
    t: float
    offset: int | None


def load_hit(path: Path, n: int) -> Hit:
    try:
        hits = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ReplayError("no saved search: run `tether search` first") from exc
    except ValueError as exc:
        raise ReplayError(f"{path} is not a saved search: {exc}") from exc
    for h in hits if isinstance(hits, list) else []:
        if isinstance(h, dict) and h.get("n") == n:
            offset = h.get("offset")
            return Hit(n, str(h["sid"]), float(h["t"]),
                       int(offset) if isinstance(offset, int) else None)
    raise ReplayError(f"the last search has no hit {n}")
