"""SessionIndexer and the FTS5 schema on a real SQLite database."""

from __future__ import annotations

import sqlite3

import pytest

from tether.recorder.search import search
from tether.recorder.textindex import SessionIndexer, ensure_schema


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript("CREATE TABLE sessions (sid TEXT PRIMARY KEY, agent TEXT, user TEXT)")
    ensure_schema(conn)
    ensure_schema(conn)  # idempotent
    return conn


def rows(db: sqlite3.Connection) -> list[tuple[str, str, float, int]]:
    return db.execute("SELECT kind, text, t, offset FROM text_rows ORDER BY id").fetchall()


def test_quiet_snapshots_only_changed_screens_and_deduplicates(db: sqlite3.Connection) -> None:
    ix = SessionIndexer(db, "s", 20, 4, started=100.0)
    ix.output(0.0, 0, b"hello world\r\n")
    ix.quiet(0.5)
    ix.quiet(1.0)  # nothing changed
    ix.output(2.0, 13, b"\x1b[H\x1b[2Jhello world\r\n")  # redrawn, same text
    ix.quiet(2.5)
    ix.flush()
    assert rows(db) == [("screen", "hello world", 0.5, 13)]
    assert db.execute("SELECT wall FROM text_rows").fetchone() == (100.5,)


def test_scrolled_lines_keep_their_event_and_substring_search_works(db: sqlite3.Connection) -> None:
    ix = SessionIndexer(db, "s", 20, 3)
    ix.output(0.2, 0, b"first line\r\nsecond\r\n")
    ix.output(0.6, 20, b"third\r\nfourth\r\n")  # within SNAPSHOT_EVERY: scrolling only
    ix.flush()
    assert rows(db) == [("scroll", "first line", 0.6, 20), ("scroll", "second", 0.6, 20)]
    assert [h.text for h in search(db, "IRST LI")] == ["first line"]
    assert search(db, "absent text") == []


def test_shrinking_the_screen_indexes_rows_it_drops(db: sqlite3.Connection) -> None:
    ix = SessionIndexer(db, "s", 20, 5)
    ix.output(0.0, 0, b"top row text\r\nb\r\nc\r\nd")
    ix.resize(0.1, 20, 2)
    ix.flush()
    assert ("screen", "top row text", 0.1, 21) in rows(db)


def test_flush_is_one_transaction_with_the_progress(db: sqlite3.Connection) -> None:
    ix = SessionIndexer(db, "s", 20, 2)
    ix.output(0.0, 0, b"a\r\nb\r\nc\r\n")

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO nope VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        ix.flush(failing)
    assert rows(db) == []
    assert db.execute("SELECT count(*) FROM text_fts WHERE text_fts MATCH 'aaa'").fetchone() == (0,)
    ix.flush(lambda conn: conn.execute("CREATE TABLE progress (x)"))
    assert [r[1] for r in rows(db)] == ["a", "b"]


def test_alternate_screen_is_snapshotted_before_it_is_left(db: sqlite3.Connection) -> None:
    ix = SessionIndexer(db, "s", 30, 5)
    ix.output(0.0, 0, b"$ less file\r\n\x1b[?1049h\x1b[Hinside the pager\x1b[?1049l$ ")
    ix.flush()
    assert ("screen", "inside the pager", 0.0, 40) in rows(db)  # just before ?1049l
    assert "inside" not in "".join(ix.terminal.display)


def test_lines_scrolled_off_the_alternate_screen_are_indexed(db: sqlite3.Connection) -> None:
    """vim's `:wq` message scrolls its own screen up; what it showed there was still shown."""
    ix = SessionIndexer(db, "s", 20, 3)
    ix.output(0.1, 0, b"\x1b[?1049h\x1b[H\x1b[2Jshown-in-vim\x1b[3;1Hmsg\r\n\x1b[?1049lafter")
    ix.flush()
    assert ("screen", "shown-in-vim", 0.1, 0) in rows(db)
    assert [h.text for h in search(db, "shown-in-vim")] == ["shown-in-vim"]
    assert "shown-in-vim" not in "\n".join(ix.terminal.display)
