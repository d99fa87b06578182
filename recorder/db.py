"""The recorder's SQLite database: session metadata. Other tables belong to their modules.

`connect` opens it in WAL mode, so the CLI can search while the recorder writes.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

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


def log_path(store: Path, sid: str) -> Path:
    return store / "logs" / f"{sid}.log"


def open_message_path(store: Path, sid: str) -> Path:
    return store / "logs" / f"{sid}.open"


def connect(store: Path, *, create: bool = True) -> sqlite3.Connection:
    path = db_path(store)
    if create:
        # Recordings hold everything typed and shown: private to the recorder's user.
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
        (store / "logs").mkdir(exist_ok=True, mode=0o700)
    elif not path.exists():
        raise FileNotFoundError(path)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    if create:
        # Before WAL mode: SQLite gives -wal and -shm the database's mode. (Not os.open and
        # close: closing any descriptor of the file drops this process's SQLite locks.)
        os.chmod(path, 0o600)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    if create:
        db.executescript(SESSIONS_SCHEMA)
    return db
