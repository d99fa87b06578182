"""search.db: the text index in a file of its own (issue 11).

The index worker runs at SCHED_IDLE and is preempted while it holds its write lock. When
it wrote index.db, the recorder's commits (the rows that lead to acks) waited seconds for
that lock. Now the worker writes only search.db and the recorder only index.db; readers
attach search.db. A store from before the split is moved on the recorder's start.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from stack import Stack, policy, statement, wait_for
from test_indexer import STARTED, log_bytes

from tether.commands.search import open_index
from tether.recevents import EventKind
from tether.recorder import db as rdb
from tether.recorder import keyframes
from tether.recorder.indexer import PROGRESS_SCHEMA, IndexWorker
from tether.recorder.search import search
from tether.recorder.store import Batch, Store
from tether.recorder.textindex import SCHEMA as TEXT_SCHEMA
from tether.recorder.textindex import SessionIndexer

SID = "5e" * 16
MARKS = b"\x1b]133;A\x07$ \x1b]133;B\x07"
EVENTS = [
    (0.0, EventKind.OUTPUT, b"restoring backup: old-needle-7731 done\r\n" + MARKS),
    (1.0, EventKind.OUTPUT, b"uptime\r\n\x1b]133;C;cmdline_url=uptime\x07"),
    (1.5, EventKind.OUTPUT, b" 10:00 up 3 days\r\n\x1b]133;D;0\x07" + MARKS),
]


def old_layout_store(store: Path, *, spans: bool = True) -> None:
    """A store as the recorder left it before the split: the text index, its progress and
    keyframes in index.db, written by the same indexing code the worker used then."""
    (store / "logs").mkdir(parents=True, mode=0o700)
    blob, _ = log_bytes(SID, EVENTS)
    rdb.log_path(store, SID).write_bytes(blob)
    db = sqlite3.connect(store / "index.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    text_schema = TEXT_SCHEMA
    if not spans:  # and its FTS table defined in other words: the move rebuilds the index
        text_schema = text_schema.replace("tokenize='trigram'", "tokenize = 'trigram'")
        assert text_schema != TEXT_SCHEMA
    db.executescript(rdb.SESSIONS_SCHEMA + text_schema + PROGRESS_SCHEMA + keyframes.SCHEMA)
    db.execute(
        "INSERT INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key, client,"
        " recording, started, log_bytes, status) VALUES (?, 'web-1', 'alice', 'root', 'shell',"
        " 'g', 'k', 'c', 'required', ?, ?, 'closed')", (SID, STARTED, len(blob)))
    ix = SessionIndexer(db, SID, 80, 24, STARTED)
    out = 0
    for t, _kind, data in EVENTS:
        ix.output(t, out, data)
        out += len(data)
    ix.finish(1.5)
    ix.flush(lambda c: c.execute(
        "INSERT INTO index_progress (sid, log_offset, output_offset, t, finished)"
        " VALUES (?, ?, ?, 1.5, 1)", (SID, len(blob), out)))
    keyframes.store(db, SID, 1.0, 1, 100, keyframes.render(ix.terminal))
    if not spans:  # stores indexed before text_spans existed
        db.execute("DROP TABLE text_spans")
    db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def seen(store: Path, *, filtered: bool = True
         ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], bytes | None]:
    """What a user can see of the index through the CLI's connection: search hits (also
    filtered by user, which reads text_spans), commands, the keyframe replay seeks to."""
    db = open_index(store)
    try:
        hits = search(db, "old-needle-77")
        if filtered:
            assert [(h.sid, h.t, h.offset) for h in search(db, "old-needle", user="alice")] == \
                [(h.sid, h.t, h.offset) for h in hits]
        commands = db.execute("SELECT seq, command, exit_code, source FROM commands"
                              " WHERE sid = ? ORDER BY seq", (SID,)).fetchall()
        kf = keyframes.nearest(db, SID, 5.0)
        return [(h.sid, h.t, h.offset, h.kind, h.text) for h in hits], commands, \
            kf.repaint if kf else None
    finally:
        db.close()


# "spans": the FTS index is moved as it is (its shadow tables copied); "before-spans": an
# older store, whose FTS table is also rebuilt.
@pytest.mark.parametrize("spans", [True, False], ids=["spans", "before-spans"])
def test_an_old_store_is_moved_to_search_db_and_keeps_its_text(tmp_path: Path, spans: bool) -> None:
    store = tmp_path / "store"
    old_layout_store(store, spans=spans)
    # Readers of an unmoved store find the text in index.db (filtered searches too, if
    # it has text_spans; without, they found nothing before the move, and do after it).
    before = seen(store, filtered=spans)
    assert before[0] and before[1] and before[2]
    assert [c[1] for c in before[1]] == ["uptime"]
    assert not rdb.search_db_path(store).exists()  # and a reader creates no file

    Store(store).close()  # the recorder's start

    assert tables(store / "index.db") == {"sessions"}  # the FTS shadow tables went too
    assert set(rdb.search_tables()) <= tables(rdb.search_db_path(store))
    assert stat.S_IMODE(rdb.search_db_path(store).stat().st_mode) == 0o600
    assert seen(store) == before
    db = rdb.connect_search(store)
    try:
        db.execute("INSERT INTO text_fts (text_fts) VALUES ('integrity-check')")  # raises if not
        rows = db.execute("SELECT count(*) FROM text_rows").fetchone()[0]
    finally:
        db.close()
    # The progress moved too: the worker does not index the session again.
    w = IndexWorker(store)
    w.drain()
    assert w.db.execute("SELECT count(*) FROM text_rows").fetchone()[0] == rows
    w.stop()
    assert seen(store) == before


def test_a_move_cut_short_is_done_again_without_duplicates(tmp_path: Path) -> None:
    """A crash after the copy into search.db committed and before index.db's tables were
    dropped: the next start copies again, over the first copy."""
    old_layout_store(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = seen(tmp_path / "a")
    Store(tmp_path / "a").close()
    for f in (tmp_path / "a").glob("search.db*"):
        shutil.copy(f, tmp_path / "b")  # b: the copy done, index.db untouched
    assert seen(tmp_path / "b") == before  # meanwhile readers see index.db's tables
    w = IndexWorker(tmp_path / "b")
    assert not w.step()  # the worker waits for the move
    assert w.db.execute("SELECT count(*) FROM index_progress").fetchone() == (1,)
    w.stop()
    Store(tmp_path / "b").close()
    assert seen(tmp_path / "b") == before
    counts = []
    for s in ("a", "b"):
        db = sqlite3.connect(tmp_path / s / "search.db")
        counts.append([db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in rdb.search_tables()])
        db.close()
    assert counts[0] == counts[1] and counts[0][0] > 0


def _update_row(sid: str, events: int) -> Batch:
    batch = Batch()
    batch.rows.append((events, 0, 0, 0, 0.0, None, None, "ok", False, False, 0.0, sid))
    return batch


def test_a_recorder_commit_does_not_wait_for_the_index_workers_lock(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.db.execute(
        "INSERT INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key, client,"
        " recording, started) VALUES (?, 'a', 'u', 'r', 'shell', 'g', 'k', 'c', 'required', 0)",
        (SID,))
    worker = rdb.connect_search(tmp_path)  # what the index worker opens
    try:
        # A flush in progress, its process preempted: the write lock is held.
        worker.execute("BEGIN IMMEDIATE")
        worker.execute("INSERT INTO text_rows (sid, t, wall, offset, kind, text)"
                       " VALUES (?, 0, 0, 0, 'scroll', 'pending')", (SID,))
        start = time.monotonic()
        store.commit(_update_row(SID, 7))
        took = time.monotonic() - start
        assert took < 1.0, took  # before the split: the busy timeout (30 s), then an error
        assert store.db.execute("SELECT events FROM sessions WHERE sid=?", (SID,)).fetchone() == (7,)
        # The worker's lock was real: another writer of search.db cannot get it.
        probe = sqlite3.connect(rdb.search_db_path(tmp_path), timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")
        probe.close()
        # And the worker cannot write index.db at all, even inside its transaction.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            worker.execute("UPDATE sessions SET events = 0")
        worker.execute("COMMIT")
    finally:
        worker.close()
    # The control: the commit does wait for a lock on index.db, the file the worker wrote.
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    store.db.execute("PRAGMA busy_timeout=200")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.commit(_update_row(SID, 8))
    other.execute("ROLLBACK")
    other.close()
    store.close()


def test_a_recorded_run_is_acked_while_the_index_is_locked(stack: Stack) -> None:
    """The real path: agent, broker, recorder. With search.db's write lock held all along
    (a preempted worker), a 7.7 MB run (more than the agent's 4 MiB unacked window, so
    it needs the recorder's acks) completes and is recorded whole; released, the index
    worker catches up and finds it."""
    recordings = stack.home.recordings
    wait_for(lambda: rdb.search_db_path(recordings).exists(), what="search.db")
    lock = rdb.connect_search(recordings)
    try:
        lock.execute("BEGIN IMMEDIATE")
        start = time.time()
        began = time.monotonic()
        with policy(stack, statement(recording='"required"')):  # no output without acks
            r = stack.tether("run", "local", "--", "sh", "-c",
                             "echo lock-free-marker-$((6*7)); seq 1 1100000", timeout=120)
        took = time.monotonic() - began
        assert r.returncode == 0, r.stderr
        want = b"lock-free-marker-42\n" + b"".join(b"%d\n" % i for i in range(1, 1_100_001))
        assert r.stdout == want and len(want) > 7_000_000
        row = stack.wait_recorded("closed", after=start, timeout=60)
        assert row["recording"] == "required" and row["bytes_out"] == len(r.stdout)
        assert row["chain"] == "ok"
        # Under the recorder's 30 s busy timeout: one commit stalled by the lock would fail this.
        assert took < 25, took
        print(f"recorded run with search.db locked: {took:.2f} s")
        # The lock held throughout: the worker wrote nothing for this session.
        assert lock.execute("SELECT count(*) FROM index_progress WHERE sid=?",
                            (row["sid"],)).fetchone() == (0,)
        lock.execute("ROLLBACK")
    finally:
        lock.close()

    def found() -> bool:
        db = rdb.connect(recordings, create=False)
        try:
            return bool(search(db, "lock-free-marker-42", sid=row["sid"]))
        finally:
            db.close()

    # (First in the output: the worker flushes what it read every 4 MB, at SCHED_IDLE.)
    wait_for(found, timeout=90, what="the run's text indexed after the lock was released")


def test_a_lost_search_db_is_rebuilt_from_the_logs(tmp_path: Path) -> None:
    """docs/operations.md says a backup may leave search.db out: the logs rebuild it."""
    old_layout_store(tmp_path)
    Store(tmp_path).close()
    before = seen(tmp_path)
    for f in tmp_path.glob("search.db*"):
        f.unlink()
    assert seen(tmp_path)[0] == []  # nothing to find, and no error
    Store(tmp_path).close()
    w = IndexWorker(tmp_path)
    w.drain()
    w.stop()
    after = seen(tmp_path)
    # The same text and commands (the worker's quiet points may date a row differently
    # from the hand-fed old index; a 1.5 s session is too short for a keyframe).
    assert [h[4] for h in after[0]] == [h[4] for h in before[0]]
    assert after[1] == before[1]
