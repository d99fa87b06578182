"""The full-text index of what sessions showed, and the commands they ran.

Rows of text are keyed by (sid, t, output offset, kind):
- `scroll`: a line as it scrolled off the top of the main screen (t and offset are those
  of the output event that pushed it off);
- `screen`: a visible row at a snapshot: a quiet point (no output for a few hundred ms),
  just before leaving the alternate screen (vim, less), before a resize, every few
  seconds during continuous redraw (top), and at the end (t and offset: the screen as
  it was after that much output);
- `command`: a command line (see the `commands` table).
A text already indexed for the session within DEDUP_SECONDS is not indexed again, so a
redrawing `top` or a row seen at a snapshot and later scrolled off costs one row.

FTS5 with the trigram tokenizer (substring match, queries of 3+ characters) over an
external-content table, so metadata stays in ordinary columns (docs/sources.md#fts5-trigram).

Commands come from OSC 133 marks when the shell emits them (source `osc133`), else from
the cursor line when Enter is typed (source `enter`). Both are advisory: the marks are
output the program controls, and the Enter heuristic guesses.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.recorder.osc133 import Mark, MarkParser
from tether.recorder.screen import Terminal

SCHEMA = """
CREATE TABLE IF NOT EXISTS text_rows (
    id INTEGER PRIMARY KEY,
    sid TEXT NOT NULL,
    t REAL NOT NULL,            -- seconds since the session started
    wall REAL NOT NULL,         -- sessions.started + t
    offset INTEGER NOT NULL,    -- output offset (OUTPUT+STDERR bytes before this point)
    kind TEXT NOT NULL,         -- scroll | screen | command
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS text_rows_sid ON text_rows(sid, t);
-- Where each session's rows are in rowid order (ranges may include other sessions'
-- rows): a filtered search reads only these ranges of the FTS index.
CREATE TABLE IF NOT EXISTS text_spans (
    sid TEXT NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    min_wall REAL NOT NULL,
    max_wall REAL NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (sid, lo)
);
CREATE VIRTUAL TABLE IF NOT EXISTS text_fts USING fts5(
    text, content='text_rows', content_rowid='id', tokenize='trigram');
CREATE TABLE IF NOT EXISTS commands (
    sid TEXT NOT NULL,
    seq INTEGER NOT NULL,       -- 0, 1, ... within the session
    t REAL NOT NULL,            -- when it started (C mark, or Enter)
    wall REAL NOT NULL,
    offset INTEGER NOT NULL,
    duration REAL,              -- NULL: unknown (no D mark, or the Enter heuristic)
    exit_code INTEGER,
    command TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT '',   -- first and last lines of its output, about 2 KB
    source TEXT NOT NULL,       -- osc133 | enter: advisory, marks can be forged
    PRIMARY KEY (sid, seq)
);
"""

QUIET_SECONDS = 0.4
SNAPSHOT_EVERY = 1.0  # seconds of continuous output between snapshots (searchable lag < 2 s)
DEDUP_SECONDS = 300.0
DEDUP_ENTRIES = 20000
EXCERPT_LINES = 12
EXCERPT_BYTES = 2048
SPAN_ROWS = 20_000  # a session's span is closed after this many of its rows
_LEAVE_ALTERNATE = (b"\x1b[?1049l", b"\x1b[?1047l", b"\x1b[?47l")


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


@dataclass
class _Command:
    t: float
    offset: int
    command: str | None
    source: str
    scrolls_at_start: int = 0
    row_at_start: int = 0
    first: list[str] = field(default_factory=list)
    last: deque[str] = field(default_factory=lambda: deque(maxlen=EXCERPT_LINES))
    skipped: int = 0

    def add_line(self, text: str) -> None:
        if len(self.first) < EXCERPT_LINES:
            self.first.append(text)
        else:
            if len(self.last) == EXCERPT_LINES:
                self.skipped += 1
            self.last.append(text)

    def excerpt(self) -> str:
        lines = list(self.first)
        if self.skipped:
            lines.append(f"… {self.skipped} lines …")
        lines.extend(self.last)
        while lines and not lines[-1].strip():
            lines.pop()
        text = "\n".join(lines)
        if len(text.encode()) > EXCERPT_BYTES:
            half = EXCERPT_BYTES // 2
            text = text[:half // 2] + "\n…\n" + text[-half // 2:]
        return text


class SessionIndexer:
    """Feeds one session's events to a screen and buffers the rows to index.

    The caller passes output offsets (bytes of OUTPUT+STDERR before each chunk) and calls
    `quiet(t)` when output paused, `flush()` to write, `finish(t)` at the end."""

    def __init__(self, db: sqlite3.Connection, sid: str, cols: int, rows: int,
                 started: float = 0.0) -> None:
        self.db = db
        self.sid = sid
        self.started = started
        self.terminal = Terminal(cols, rows, on_scroll=self._scrolled)
        self.terminal.screen.on_alternate_scroll = self._alternate_scrolled
        self.marks = MarkParser()
        self.offset = 0  # output offset after everything fed so far
        self.t = 0.0
        self._event_t = 0.0
        self._event_offset = 0
        self._rows: list[tuple[str, float, float, int, str, str]] = []
        self._commands: list[tuple[object, ...]] = []
        self._recent: OrderedDict[str, float] = OrderedDict()
        self._changed = False
        self._last_snapshot = 0.0
        self._scrolls = 0
        self._marks_seen = False
        self._input_pos: tuple[int, int, int] | None = None
        self._running: _Command | None = None
        self._enter_pending: float | None = None
        self._seq = 0

    # ----- events -----

    def output(self, t: float, offset: int, data: bytes) -> None:
        self.t = self._event_t = t
        self._event_offset = offset
        cuts: list[tuple[int, int, Mark | str]] = []
        for mark in self.marks.feed(data):
            cuts.append((mark.end, 1, mark))
        if self.terminal.screen.alternate or any(s in data for s in _LEAVE_ALTERNATE):
            for seq in _LEAVE_ALTERNATE:
                start = data.find(seq)
                while start >= 0:
                    cuts.append((start, 0, "leave"))
                    start = data.find(seq, start + 1)
        if self._enter_pending is not None:
            nl = data.find(b"\n")
            if nl >= 0:
                cuts.append((nl, 0, "enter"))
        pos = 0
        for at, _, action in sorted(cuts, key=lambda c: (c[0], c[1])):
            if at > pos:
                self.terminal.feed(data[pos:at])
                pos = at
            self.offset = offset + pos
            if isinstance(action, Mark):
                self._mark(action, t)
            elif action == "leave":
                if self.terminal.screen.alternate:
                    self._snapshot(t)
            elif action == "enter":
                self._enter(t)
        if pos < len(data):
            self.terminal.feed(data[pos:])
        self.offset = offset + len(data)
        self._changed = True
        if t - self._last_snapshot >= SNAPSHOT_EVERY:
            self._snapshot(t)

    def input(self, t: float, data: bytes) -> None:
        self.t = t
        if self._marks_seen or self.terminal.screen.alternate:
            return
        if b"\r" in data or b"\n" in data:
            self._enter_pending = t

    def resize(self, t: float, cols: int, rows: int) -> None:
        self.t = t
        self._snapshot(t)  # shrinking drops rows off the top without scrolling them
        self.terminal.resize(cols, rows)

    def quiet(self, t: float) -> None:
        """Output has paused: index what is on screen, if it changed."""
        if self._changed:
            self._snapshot(t)

    def finish(self, t: float) -> None:
        self.quiet(t)
        if self._running is not None:
            self._end_command(t, None, complete=False)
        if self._enter_pending is not None:
            self._enter(t)
        self.flush()

    # ----- writing -----

    @property
    def pending(self) -> int:
        return len(self._rows) + len(self._commands)

    def discard(self) -> None:
        """Drop buffered rows (the index worker re-feeding what is already indexed)."""
        self._rows.clear()
        self._commands.clear()

    def flush(self, extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Write the buffered rows in one transaction, with `extra` (progress) in it."""
        if not self._rows and not self._commands and extra is None:
            return
        db = self.db
        # The index worker's connection (recorder/db.py connect_search): this write lock is
        # search.db's alone, so holding it while preempted never delays the recorder's commits.
        db.execute("BEGIN IMMEDIATE")
        try:
            write_rows(db, self._rows)
            db.executemany(
                "INSERT OR REPLACE INTO commands (sid, seq, t, wall, offset, duration, exit_code,"
                " command, output, source) VALUES (?,?,?,?,?,?,?,?,?,?)", self._commands)
            if extra is not None:
                extra(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.discard()

    # ----- rows -----

    def _add(self, t: float, offset: int, kind: str, text: str) -> None:
        if not text.strip():
            return
        recent = self._recent
        seen = recent.get(text)
        if seen is not None and t - seen < DEDUP_SECONDS:
            return
        if seen is not None:
            del recent[text]
        recent[text] = t
        if len(recent) > DEDUP_ENTRIES:
            recent.popitem(last=False)
        self._rows.append((self.sid, t, self.started + t, offset, kind, text))

    def _scrolled(self, text: str) -> None:
        self._scrolls += 1
        cmd = self._running
        if cmd is not None and self._scrolls - cmd.scrolls_at_start > cmd.row_at_start:
            cmd.add_line(text)  # the row was at or below where the command started
        self._add(self._event_t, self._event_offset, "scroll", text)

    def _alternate_scrolled(self, text: str) -> None:
        """A full-screen program scrolled a line away (vim writing its last message)."""
        self._add(self._event_t, self._event_offset, "screen", text)

    def _snapshot(self, t: float) -> None:
        screen = self.terminal.screen
        for y in range(screen.lines):
            self._add(t, self.offset, "screen", screen.row_text(y).rstrip())
        self._changed = False
        self._last_snapshot = t

    # ----- commands -----

    def _cursor(self) -> tuple[int, int, int]:
        c = self.terminal.screen.cursor
        return self._scrolls, c.y, c.x

    def _text_since(self, start: tuple[int, int, int]) -> str:
        """The screen text from a cursor position (adjusted for scrolling) to the cursor."""
        screen = self.terminal.screen
        scrolls, y0, x0 = start
        y0 -= self._scrolls - scrolls
        cy = screen.cursor.y
        if y0 < 0:
            y0, x0 = 0, 0
        parts = []
        for y in range(y0, cy + 1):
            text = screen.row_text(y)
            if y == y0:
                text = text[x0:]
            parts.append(text.rstrip())
        return "".join(p for p in parts if p).strip()

    def _mark(self, mark: Mark, t: float) -> None:
        self._marks_seen = True
        self._enter_pending = None
        if mark.kind == "A":
            if self._running is not None:  # a prompt without D: the command ended unseen
                self._end_command(t, None, complete=False)
        elif mark.kind == "B":
            self._input_pos = self._cursor()
        elif mark.kind == "C":
            if self._running is not None:
                self._end_command(t, None, complete=False)
            command = mark.cmdline
            if command is None and self._input_pos is not None:
                command = self._text_since(self._input_pos)
            self._input_pos = None
            cmd = _Command(t, self.offset, command, "osc133")
            cmd.scrolls_at_start, cmd.row_at_start, _ = self._cursor()
            self._running = cmd
        elif mark.kind == "D" and self._running is not None:
            self._end_command(t, mark.exit_code, complete=True)

    def _end_command(self, t: float, exit_code: int | None, complete: bool) -> None:
        cmd = self._running
        assert cmd is not None
        self._running = None
        screen = self.terminal.screen
        # Rows still on screen between where the command started and the cursor now.
        y0 = cmd.row_at_start - (self._scrolls - cmd.scrolls_at_start)
        for y in range(max(y0, 0), screen.cursor.y + (0 if screen.cursor.x == 0 else 1)):
            cmd.add_line(screen.row_text(y).rstrip())
        self._store_command(cmd, t - cmd.t if complete else None, exit_code, cmd.excerpt())

    def _enter(self, t: float) -> None:
        started = self._enter_pending
        self._enter_pending = None
        if started is None or self._marks_seen or self.terminal.screen.alternate:
            return
        screen = self.terminal.screen
        text = screen.row_text(screen.cursor.y).strip()
        if text:
            self._store_command(_Command(started, self.offset, text, "enter"), None, None, "")

    def _store_command(self, cmd: _Command, duration: float | None, exit_code: int | None,
                       output: str) -> None:
        command = cmd.command or ""
        self._commands.append((self.sid, self._seq, cmd.t, self.started + cmd.t, cmd.offset,
                               duration, exit_code, command, output, cmd.source))
        self._seq += 1
        if command.strip():
            self._rows.append((self.sid, cmd.t, self.started + cmd.t, cmd.offset, "command",
                               command))


def write_rows(db: sqlite3.Connection, rows: list[tuple[str, float, float, int, str, str]]) -> None:
    """Insert text rows and their FTS entries (inside the caller's transaction)."""
    if not rows:
        return
    (before,) = db.execute("SELECT coalesce(max(id), 0) FROM text_rows").fetchone()
    db.executemany("INSERT INTO text_rows (sid, t, wall, offset, kind, text) VALUES (?,?,?,?,?,?)",
                   rows)
    db.execute("INSERT INTO text_fts (rowid, text) SELECT id, text FROM text_rows WHERE id > ?",
               (before,))
    spans: dict[str, list[float]] = {}  # sid -> [lo, hi, min_wall, max_wall, rows]
    for (sid, lo, hi, lo_wall, hi_wall, n) in db.execute(
            "SELECT sid, min(id), max(id), min(wall), max(wall), count(*) FROM text_rows"
            " WHERE id > ? GROUP BY sid", (before,)):
        spans[sid] = [lo, hi, lo_wall, hi_wall, n]
    for sid, (lo, hi, lo_wall, hi_wall, n) in spans.items():
        last = db.execute("SELECT lo, min_wall, max_wall, rows FROM text_spans WHERE sid = ?"
                          " ORDER BY lo DESC LIMIT 1", (sid,)).fetchone()
        if last is not None and last[3] < SPAN_ROWS:
            db.execute("UPDATE text_spans SET hi = ?, min_wall = ?, max_wall = ?, rows = ?"
                       " WHERE sid = ? AND lo = ?",
                       (hi, min(last[1], lo_wall), max(last[2], hi_wall), last[3] + n, sid, last[0]))
        else:
            db.execute("INSERT INTO text_spans (sid, lo, hi, min_wall, max_wall, rows)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (sid, lo, hi, lo_wall, hi_wall, n))
