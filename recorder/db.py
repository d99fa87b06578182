"""The recorder's SQLite databases, in two files so neither writer waits for the other:

- `index.db`: session metadata (`sessions`), written only by the recorder's ingest path,
  whose commits lead to the acks agents wait for;
- `search.db`: the text index, its progress and keyframes (schemas in textindex.py,
  indexer.py, keyframes.py), written only by the index worker. The worker runs at
  SCHED_IDLE, so it is preempted while it holds its write lock: with one file, the
  recorder's commits waited seconds for that lock (docs/benchmarks.md, "Recording's cost").

Both are in WAL mode, so the CLI can search while the recorder and the worker write.
Readers (`connect(create=False)`) see search.db's tables under their own names: it is
attached read-only as `search`, and SQLite looks a table up in the main database first,
then in attached ones. A store from before the split has the text tables in index.db;
the recorder moves them on its first start (`connect`), and until then readers find them
in index.db.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tether.encoding import dumps
from tether.grants import Grant

SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,       -- 32 hex digits
    agent TEXT NOT NULL,
    user TEXT NOT NULL,
    run_as TEXT NOT NULL,
    mode TEXT NOT NULL,         -- shell | exec
    command TEXT,               -- JSON argv for exec sessions
    reason TEXT,
    grant_id TEXT NOT NULL,
    grant_token TEXT,           -- the authority-signed grant: `verify` takes the agent key from it
    client_key TEXT NOT NULL,
    client TEXT NOT NULL,       -- the client's MQTT name
    recording TEXT NOT NULL,    -- required | optional
    started REAL NOT NULL,      -- wall clock, seconds since the epoch
    ended REAL,
    exit_code INTEGER,
    exit_signal INTEGER,
    events INTEGER NOT NULL DEFAULT 0,      -- durably stored events
    log_bytes INTEGER NOT NULL DEFAULT 0,   -- durable length of the log
    bytes_out INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    duration REAL NOT NULL DEFAULT 0,       -- seconds, from the last event's time
    status TEXT NOT NULL DEFAULT 'live',    -- live | closed | aborted
    chain TEXT NOT NULL DEFAULT 'ok',       -- ok, or where verification broke on ingest
    cols INTEGER NOT NULL DEFAULT 80,
    rows INTEGER NOT NULL DEFAULT 24
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started);
"""


def grant_columns(grant: Grant) -> dict[str, Any]:
    """The session row's columns that its grant decides (`verify` compares them)."""
    return {"agent": grant.agent, "user": grant.user, "run_as": grant.run_as,
            "mode": grant.mode, "reason": grant.reason, "grant_id": grant.jti,
            "client_key": grant.client_key, "recording": grant.recording,
            "command": dumps(grant.command).decode() if grant.command is not None else None}


def db_path(store: Path) -> Path:
    return store / "index.db"


def search_db_path(store: Path) -> Path:
    return store / "search.db"


def log_path(store: Path, sid: str) -> Path:
    return store / "logs" / f"{sid}.log"


def open_message_path(store: Path, sid: str) -> Path:
    return store / "logs" / f"{sid}.open"


SEARCH = "search"  # the name readers attach search.db under
RECORDER = "recorder"  # the name the index worker attaches index.db under


def search_schema() -> str:
    """Every table of search.db (each module keeps its own schema)."""
    # Imported here: the CLI's readers should not load the screen emulator to list sessions.
    from tether.recorder import indexer, keyframes, textindex

    return textindex.SCHEMA + indexer.PROGRESS_SCHEMA + keyframes.SCHEMA


def search_tables() -> list[str]:
    return re.findall(r"CREATE (?:VIRTUAL )?TABLE IF NOT EXISTS (\w+)", search_schema())


def _uri(path: Path, *, read_only: bool) -> str:
    return f"file:{quote(str(path))}" + ("?mode=ro" if read_only else "")


def _open(path: Path, *, create: bool, read_only: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(_uri(path, read_only=read_only), uri=True, timeout=30,
                         isolation_level=None, check_same_thread=False)
    if create:
        # Before WAL mode: SQLite gives -wal and -shm the database's mode. (Not os.open and
        # close: closing any descriptor of the file drops this process's SQLite locks.)
        os.chmod(path, 0o600)
    if not read_only:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _make_store(store: Path) -> None:
    # Recordings hold everything typed and shown: private to the recorder's user.
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    (store / "logs").mkdir(exist_ok=True, mode=0o700)


def connect(store: Path, *, create: bool = True, read_only: bool = False) -> sqlite3.Connection:
    """index.db. create=True: the recorder's own connection; the store, its tables and
    search.db are created, and a text index left in index.db is moved to search.db.
    create=False: a reader's, with search.db attached read-only (`attach_search`);
    read_only: index.db too."""
    path = db_path(store)
    if create:
        assert not read_only
        _make_store(store)
    elif not path.exists():
        raise FileNotFoundError(path)
    db = _open(path, create=create, read_only=read_only)
    if create:
        db.executescript(SESSIONS_SCHEMA)
        _create_search(store).close()
        _move_legacy_index(store, db)
    else:
        attach_search(db, store)
    return db


def connect_search(store: Path) -> sqlite3.Connection:
    """search.db, for the index worker: its tables are created, and index.db is attached
    read-only as `recorder`, so the worker reads `sessions` and can write nothing there
    (a read-only attachment takes no write lock, even in BEGIN IMMEDIATE).
    FileNotFoundError if the recorder has not created index.db yet."""
    index = db_path(store)
    if not index.exists():
        raise FileNotFoundError(index)
    db = _create_search(store)
    db.execute(f"ATTACH DATABASE ? AS {RECORDER}", (_uri(index, read_only=True),))
    return db


def search_ready(db: sqlite3.Connection) -> bool:
    """On the index worker's connection: index.db has its sessions table and no text
    index from before the split (the recorder moves that on start; writing to search.db
    before then would be overwritten)."""
    names = {r[0] for r in db.execute(f"SELECT name FROM {RECORDER}.sqlite_master"
                                       " WHERE type = 'table'")}
    return "sessions" in names and not names.intersection(search_tables())


def attach_search(db: sqlite3.Connection, store: Path) -> None:
    """Attach search.db read-only as `search`: queries name its tables unqualified."""
    path = search_db_path(store)
    if path.exists():
        db.execute(f"ATTACH DATABASE ? AS {SEARCH}", (_uri(path, read_only=True),))
        return
    # Nothing was indexed yet (or the store predates the split and its text is in
    # index.db): empty tables, so a search finds nothing instead of failing, and a
    # reader creates no file in the recorder's store.
    db.execute(f"ATTACH DATABASE ':memory:' AS {SEARCH}")
    db.executescript(re.sub(r"(CREATE (?:VIRTUAL )?(?:TABLE|INDEX) IF NOT EXISTS )(\w+)",
                            rf"\1{SEARCH}.\2", search_schema()))


def _create_search(store: Path) -> sqlite3.Connection:
    path = search_db_path(store)
    _make_store(store)
    db = _open(path, create=True)
    db.executescript(search_schema())
    return db


# FTS5's own tables behind text_fts: with the same definition, copying them copies the
# index as it is (1.8 s for a million rows where 'rebuild' took 18 s).
_FTS_SHADOWS = ("text_fts_data", "text_fts_idx", "text_fts_docsize", "text_fts_config")


def _move_legacy_index(store: Path, db: sqlite3.Connection) -> None:
    """Move a text index that a recorder from before the split kept in index.db (`db`)
    into search.db, then drop it from index.db.

    Two transactions, copy then drop, so a crash between them leaves the text in both
    files: readers still see index.db's (the main database is searched first), the index
    worker waits (`search_ready`), and the next start copies again over what it copied."""
    old = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    legacy = [t for t in search_tables() if t in old]
    if not legacy:
        return
    search = _open(search_db_path(store), create=False)
    try:
        search.execute("ATTACH DATABASE ? AS old", (_uri(db_path(store), read_only=True),))
        search.execute("BEGIN IMMEDIATE")
        try:
            fts_sql = "SELECT sql FROM {}.sqlite_master WHERE name = 'text_fts'"
            same_fts = (search.execute(fts_sql.format("main")).fetchone()
                        == search.execute(fts_sql.format("old")).fetchone())
            for table in [*search_tables(), *(_FTS_SHADOWS if same_fts else ())]:
                if table == "text_fts":
                    continue  # its shadow tables are copied, or it is rebuilt below
                search.execute(f"DELETE FROM main.{table}")
                if table not in legacy and table not in _FTS_SHADOWS:
                    continue
                new_cols = [r[1] for r in search.execute(f"PRAGMA main.table_info({table})")]
                old_cols = {r[1] for r in search.execute(f"PRAGMA old.table_info({table})")}
                cols = ", ".join(c for c in new_cols if c in old_cols)
                search.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM old.{table}")
            if "text_spans" not in legacy:
                # A store from before text_spans: one span per session over all its rows
                # (a span may include other sessions' rows; search filters them anyway).
                search.execute(
                    "INSERT INTO main.text_spans (sid, lo, hi, min_wall, max_wall, rows)"
                    " SELECT sid, min(id), max(id), min(wall), max(wall), count(*)"
                    " FROM main.text_rows GROUP BY sid")
            if not same_fts:  # defined otherwise: index text_rows afresh (10 times slower)
                search.execute("INSERT INTO main.text_fts (text_fts) VALUES ('rebuild')")
            search.execute("COMMIT")
        except BaseException:
            search.execute("ROLLBACK")
            raise
    finally:
        search.close()
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in legacy:  # (dropping text_fts drops its shadow tables too)
            db.execute(f"DROP TABLE IF EXISTS main.{table}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    # The freed pages would stay in index.db (the whole old index, on disk twice); what is
    # left is the session rows, so this rewrite is short.
    db.execute("VACUUM")
