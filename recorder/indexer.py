"""The index worker: follows the stored logs and keeps the text index and keyframes.

It runs in its own thread with its own SQLite connection, reading only the durable part
of each log (the first sessions.log_bytes bytes). It writes only search.db, never the
recorder's index.db (recorder/db.py says why). Progress per session is saved in
`index_progress` in the same transaction as the rows it covers, so a restart resumes
without duplicate rows: the screen is rebuilt by re-feeding the log up to the saved point
with nothing written, then indexing goes on from there.

Quiet points (when the visible screen is indexed) come from gaps between event times
and, at the live tail, from the wall clock, so text is searchable within about a second
of being stored. One bad session is logged and marked (`index_progress.error`); the
worker goes on with the others.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.limits import clamp_geometry
from tether.recevents import (
    CHAIN_LEN,
    EVENT_HEADER,
    EventKind,
    TruncatedRecord,
    iter_log,
    resize_of,
)
from tether.recorder import db as rdb
from tether.recorder.textindex import QUIET_SECONDS, SessionIndexer

log = logging.getLogger(__name__)

PROGRESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS index_progress (
    sid TEXT PRIMARY KEY,
    log_offset INTEGER NOT NULL,     -- log bytes whose rows are all written
    output_offset INTEGER NOT NULL,
    t REAL NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0,
    error TEXT                       -- set when indexing this session failed
);
"""

POLL_SECONDS = 0.2
READ_BYTES = 4 << 20  # per session per round, so one busy session does not starve others
KEYFRAME_SECONDS = 5.0
KEYFRAME_BYTES = 256 << 10


def _keyframes() -> Any:
    """recorder.keyframes (another module of the recorder), if present."""
    try:
        return importlib.import_module("tether.recorder.keyframes")
    except ImportError:
        return None


@dataclass
class _Live:
    indexer: SessionIndexer
    log_offset: int = 0  # next record to read
    output_offset: int = 0
    t: float = 0.0  # time of the last event
    last_data: float = 0.0  # monotonic clock when data last arrived
    keyframe_t: float = 0.0
    keyframe_output: int = 0


class IndexWorker:
    def __init__(self, store: Path, *, poll: float = POLL_SECONDS) -> None:
        self.store = store
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._rounds = 0
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._ready = False
        self._live: dict[str, _Live] = {}
        self._kf: Any = _keyframes()

    # ----- thread -----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="index-worker", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def wait_caught_up(self, timeout: float = 10.0) -> bool:
        """Wait until a full round found nothing to read (for tests and tools)."""
        with self._idle:
            start = self._rounds
            return self._idle.wait_for(lambda: self._rounds >= start + 2, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # the database itself failed: keep the thread, retry
                log.exception("index worker round failed")
                busy = False
            if not busy:
                with self._idle:
                    self._rounds += 1
                    self._idle.notify_all()
                self._wake.wait(self.poll)
                self._wake.clear()

    # ----- work -----

    @property
    def db(self) -> sqlite3.Connection:
        """search.db (which this worker alone writes), with index.db attached read-only."""
        if self._db is None:
            self._db = rdb.connect_search(self.store)
        return self._db

    def drain(self) -> None:
        """Index everything there is now, in this thread."""
        while self.step():
            pass
        self.step()

    def step(self) -> bool:
        """One round over the sessions with work; True if anything was read."""
        if self._db is None and not rdb.db_path(self.store).exists():
            return False  # the recorder has not created its store yet
        if not self._ready:
            if not rdb.search_ready(self.db):
                return False  # the recorder is still creating the store, or moving an old index
            self._ready = True
        rows = self.db.execute(
            "SELECT s.sid, s.log_bytes, s.status, s.cols, s.rows, s.started,"
            " coalesce(p.log_offset, 0), coalesce(p.output_offset, 0), coalesce(p.t, 0)"
            " FROM sessions s LEFT JOIN index_progress p ON p.sid = s.sid"
            # A finished index that no longer covers the log: an aborted session resumed.
            " WHERE p.sid IS NULL OR ((p.finished = 0 OR p.log_offset < s.log_bytes)"
            " AND p.error IS NULL)").fetchall()
        busy = False
        for sid, log_bytes, status, cols, nrows, started, saved, out_saved, t_saved in rows:
            try:
                busy |= self._session(sid, log_bytes, status, cols, nrows, started,
                                      saved, out_saved, t_saved)
            except Exception as exc:
                self._live.pop(sid, None)  # the next round resumes from the saved progress
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    # Another connection held search.db past the busy timeout (a backup,
                    # an sqlite3 shell): the session is fine, so it is not marked failed.
                    log.warning("indexing session %s waits: %s", sid, exc)
                    continue
                log.exception("indexing session %s failed", sid)
                self._mark_failed(sid, f"{type(exc).__name__}: {exc}")
        return busy

    def _mark_failed(self, sid: str, error: str) -> None:
        try:
            self.db.execute(
                "INSERT INTO index_progress (sid, log_offset, output_offset, t, error)"
                " VALUES (?, 0, 0, 0, ?) ON CONFLICT(sid) DO UPDATE SET error = excluded.error",
                (sid, error[:500]))
        except sqlite3.Error:
            log.exception("cannot mark session %s", sid)

    def _session(self, sid: str, log_bytes: int, status: str, cols: int, rows: int,
                 started: float, saved: int, out_saved: int, t_saved: float) -> bool:
        live = self._live.get(sid)
        if live is None:
            cols, rows = clamp_geometry(cols, rows)  # the row's size came from an agent
            live = self._live[sid] = _Live(SessionIndexer(self.db, sid, cols, rows, started))
            if saved > 0:  # rebuild the screen up to the saved point, writing nothing
                self._feed(sid, live, saved, replay=True)
                live.indexer.discard()
                if live.log_offset != saved or live.output_offset != out_saved:
                    raise RuntimeError(f"saved progress {saved} is not a record boundary")
        busy = False
        if live.log_offset < log_bytes:
            self._feed(sid, live, log_bytes, replay=False)
            live.last_data = time.monotonic()
            busy = True
        done = status in ("closed", "aborted") and live.log_offset >= log_bytes
        if done:
            live.indexer.finish(live.t)
            self._save(sid, live, finished=True)
            del self._live[sid]
            return busy
        if not busy and time.monotonic() - live.last_data >= QUIET_SECONDS:
            live.indexer.quiet(live.t)  # the live tail went quiet
        if busy or live.indexer.pending:
            self._save(sid, live, finished=False)
        return busy

    def _save(self, sid: str, live: _Live, finished: bool) -> None:
        def progress(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO index_progress (sid, log_offset, output_offset, t, finished)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(sid) DO UPDATE SET"
                " log_offset = excluded.log_offset, output_offset = excluded.output_offset,"
                " t = excluded.t, finished = excluded.finished",
                (sid, live.log_offset, live.output_offset, live.t, int(finished)))

        live.indexer.flush(progress)

    def _feed(self, sid: str, live: _Live, end: int, replay: bool) -> None:
        """Feed the records in [live.log_offset, end), at most READ_BYTES unless replaying."""
        path = rdb.log_path(self.store, sid)
        ix = live.indexer
        with path.open("rb") as f:
            while live.log_offset < end:
                f.seek(live.log_offset)
                want = end - live.log_offset
                data = f.read(want if replay else min(want, READ_BYTES))
                base = live.log_offset
                consumed = 0
                complete = True
                try:
                    for rec in iter_log(data):
                        ev = rec.event
                        t = ev.t
                        if t - live.t >= QUIET_SECONDS:
                            ix.quiet(live.t)
                        kind = ev.kind
                        if kind in (EventKind.OUTPUT, EventKind.STDERR):
                            ix.output(t, live.output_offset, ev.data)
                            live.output_offset += len(ev.data)
                        elif kind == EventKind.INPUT:
                            ix.input(t, ev.data)
                        elif kind == EventKind.RESIZE and (size := resize_of(ev.data)) is not None:
                            ix.resize(t, *size)
                        live.t = max(live.t, t)
                        consumed = rec.offset + EVENT_HEADER.size + len(ev.data) + CHAIN_LEN
                        live.log_offset = base + consumed
                        self._maybe_keyframe(sid, live, ev.index, replay)
                except TruncatedRecord:
                    complete = False
                if not replay or (not complete and consumed == 0):
                    break  # fairness; or log_bytes points inside a record: wait for more

    def _maybe_keyframe(self, sid: str, live: _Live, index: int, replay: bool) -> None:
        if self._kf is None:
            return
        if (live.t - live.keyframe_t < KEYFRAME_SECONDS
                and live.output_offset - live.keyframe_output < KEYFRAME_BYTES):
            return
        terminal = live.indexer.terminal
        if not terminal.ground:
            return
        live.keyframe_t = live.t
        live.keyframe_output = live.output_offset
        if not replay:
            self._kf.store(self.db, sid, live.t, index, live.log_offset,
                           self._kf.render(terminal))
