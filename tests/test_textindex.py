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


def test_filtered_search_reads_spans_and_equals_a_full_scan(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from tether.recorder import search as s
    from tether.recorder import textindex

    monkeypatch.setattr(textindex, "SPAN_ROWS", 7)
    monkeypatch.setattr(s, "MAX_RANGES", 5)  # forces joined ranges too
    rng = random.Random(3)
    sids = [f"{i:02x}" * 16 for i in range(6)]
    for i, sid in enumerate(sids):
        db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (sid, f"agent-{i % 3}", f"user-{i % 2}"))
    wall = 1000.0
    for _ in range(60):  # interleaved flushes of several sessions, as the worker makes them
        batch = []
        for sid in rng.sample(sids, 3):
            for _ in range(rng.randint(1, 5)):
                wall += rng.random()
                word = rng.choice(["alpha", "beta", "gamma"])
                batch.append((sid, wall - 1000, wall, 0, "scroll", f"{word} {rng.randint(0, 99)}"))
        db.execute("BEGIN")
        textindex.write_rows(db, batch)
        db.execute("COMMIT")
    assert db.execute("SELECT count(*) FROM text_spans").fetchone()[0] > 20
    for kwargs in [dict(agent="agent-1"), dict(user="user-0", agent="agent-2"),
                   dict(since=1100.0), dict(until=1200.0), dict(since=1050.0, until=1300.0, user="user-1")]:
        got = [(h.sid, h.wall) for h in search(db, "alpha", limit=500, **kwargs)]  # type: ignore[arg-type]
        where, params = ["text LIKE '%alpha%'"], []
        for col, key in (("agent", "agent"), ("user", "user")):
            if key in kwargs:
                where.append(f"sid IN (SELECT sid FROM sessions WHERE {col} = ?)")
                params.append(kwargs[key])
        if "since" in kwargs:
            where.append("wall >= ?")
            params.append(kwargs["since"])
        if "until" in kwargs:
            where.append("wall < ?")
            params.append(kwargs["until"])
        want = db.execute(f"SELECT sid, wall FROM text_rows WHERE {' AND '.join(where)}"
                          " ORDER BY wall DESC", params).fetchall()
        assert got == want and want, kwargs
