"""Durable storage of recordings: append-only logs plus a row per session in SQLite.

Nothing is acknowledged to an agent before it is on disk: `sync()` fsyncs every log that
grew, then commits the session rows in one transaction. The log is the truth; the row is
a summary of it that `recover()` can always rebuild.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from tether.edge.keys import fsync_dir, write_private_file
from tether.encoding import loads
from tether.recevents import Event, EventKind, TruncatedRecord, genesis, iter_log, log_record
from tether.recorder.db import connect, grant_columns, log_path, open_message_path
from tether.recording import OpenedRecording


@dataclass
class SessionFile:
    """One session's log, open for appending, and what its row should say."""

    sid: str
    fd: int
    events: int
    log_bytes: int
    chain: bytes
    bytes_out: int = 0
    bytes_in: int = 0
    duration: float = 0.0
    exit_code: int | None = None
    exit_signal: int | None = None
    ended: bool = False
    chain_error: str | None = None
    _pending: list[bytes] = field(default_factory=list)
    dirty: bool = False

    def add(self, event: Event, chain: bytes) -> None:
        self._pending.append(log_record(event, chain))
        self.events = event.index + 1
        self.chain = chain
        self.duration = max(self.duration, event.t)
        self.dirty = True
        if event.kind in (EventKind.OUTPUT, EventKind.STDERR):
            self.bytes_out += len(event.data)
        elif event.kind == EventKind.INPUT:
            self.bytes_in += len(event.data)
        elif event.kind == EventKind.EXIT:
            with contextlib.suppress(ValueError, AttributeError):
                doc = loads(event.data)
                self.exit_code, self.exit_signal = _status(doc.get("code")), _status(doc.get("signal"))
        elif event.kind == EventKind.END:
            self.ended = True


def _status(value: object) -> int | None:
    """An exit code or signal number as the agent writes it, else None: the EXIT event
    is the agent's text, and a value SQLite cannot bind (an object, 2**64) would fail the
    group commit that carries every other recording's rows too."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    return None


@dataclass
class Batch:
    """What one group commit makes durable. Prepared on the event loop, committed on the
    store's own thread, so fsync never stalls the loop (which may also run an agent)."""

    opens: list[tuple[OpenedRecording, bytes, str]] = field(default_factory=list)
    writes: list[tuple[SessionFile, bytes]] = field(default_factory=list)
    rows: list[tuple[object, ...]] = field(default_factory=list)
    aborted_agents: list[str] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)  # sid -> durable events once committed
    aborted: list[str] = field(default_factory=list)  # filled in by commit
    closes: list[SessionFile] = field(default_factory=list)  # ended and durable: close the log

    def __bool__(self) -> bool:
        return bool(self.opens or self.writes or self.rows or self.aborted_agents or self.closes)


class Store:
    """Loop side: `begin`, `recover`, `prepare`. Thread side: `commit` (one at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = connect(root)
        # The rows need no fsync of their own: the fsync'd OPEN and log are the record, and
        # `repair` rebuilds any row a crash lost from them.
        self.files: dict[str, SessionFile] = {}
        # One recording per grant: an agent key alone cannot replay a grant into more.
        self.grant_ids = {str(r[0]) for r in self.db.execute("SELECT grant_id FROM sessions")}
        self._opens: list[tuple[OpenedRecording, bytes, str]] = []
        self._aborted_agents: list[str] = []
        self._closes: list[SessionFile] = []

    def known(self, sid: str) -> bool:
        return sid in self.files or open_message_path(self.root, sid).exists()

    def stored_open(self, sid: str) -> bytes | None:
        pending = next((blob for o, blob, _ in self._opens if o.sid.hex() == sid), None)
        if pending is not None:
            return pending
        try:
            return open_message_path(self.root, sid).read_bytes()
        except FileNotFoundError:
            return None

    def begin(self, opened: OpenedRecording, open_blob: bytes, client: str) -> SessionFile:
        """A new session; its OPEN and row become durable with the next commit."""
        sid = opened.sid.hex()
        session = SessionFile(sid, -1, 0, 0, genesis(opened.sid))
        session.dirty = True
        self.files[sid] = session
        self.grant_ids.add(opened.grant.jti)
        self._opens.append((opened, open_blob, client))
        return session

    def recover(self, sid: str) -> SessionFile:
        """Reopen a session after a restart, from what its log durably holds."""
        if sid in self.files:
            return self.files[sid]
        path = log_path(self.root, sid)
        data = path.read_bytes() if path.exists() else b""
        session = SessionFile(sid, -1, 0, 0, genesis(bytes.fromhex(sid)))
        good = 0
        try:
            for stored in iter_log(data):
                session.add(stored.event, stored.chain)
                good = stored.offset + len(stored.event.encode()) + len(stored.chain)
        except TruncatedRecord:
            pass  # a write cut short by a crash; it was never acked
        session._pending.clear()
        session.log_bytes = good
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if good != len(data):
            os.ftruncate(fd, good)
        session.fd = fd
        session.dirty = True
        self.files[sid] = session
        return session

    def abort_agent(self, agent: str) -> None:
        self._aborted_agents.append(agent)

    def prepare(self) -> Batch:
        batch = Batch(self._opens, aborted_agents=self._aborted_agents, closes=self._closes)
        self._opens, self._aborted_agents, self._closes = [], [], []
        for s in self.files.values():
            if not s.dirty:
                continue
            data = b"".join(s._pending)
            s._pending.clear()
            s.log_bytes += len(data)
            s.dirty = False
            batch.writes.append((s, data))
            batch.events[s.sid] = s.events
            batch.rows.append((s.events, s.log_bytes, s.bytes_out, s.bytes_in, s.duration,
                               s.exit_code, s.exit_signal, s.chain_error or "ok", s.ended,
                               s.ended, s.duration, s.sid))
        return batch

    def commit(self, batch: Batch) -> None:
        """Write, fsync, then commit the rows. Runs on the store's thread."""
        for opened, blob, client in batch.opens:
            self._create(opened, blob, client)
        for s, data in batch.writes:
            if s.fd < 0:
                s.fd = os.open(log_path(self.root, s.sid), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                fsync_dir(log_path(self.root, s.sid).parent)  # the new log's name is durable too
            view = memoryview(data)
            while view:
                view = view[os.write(s.fd, view):]
            os.fsync(s.fd)
        self.db.execute("BEGIN")
        try:
            self.db.executemany(
                "UPDATE sessions SET events=?, log_bytes=?, bytes_out=?, bytes_in=?, duration=?,"
                " exit_code=?, exit_signal=?, chain=?,"
                " status=CASE WHEN ? THEN 'closed' ELSE 'live' END,"
                " ended=CASE WHEN ? THEN started + ? ELSE ended END WHERE sid=?", batch.rows)
            for agent in batch.aborted_agents:
                rows = self.db.execute("SELECT sid FROM sessions WHERE agent=? AND status='live'",
                                       (agent,)).fetchall()
                batch.aborted += [r[0] for r in rows]
                self.db.execute("UPDATE sessions SET status='aborted', ended=started+duration"
                                " WHERE agent=? AND status='live'", (agent,))
            self.db.execute("COMMIT")
        except sqlite3.Error:
            self.db.execute("ROLLBACK")
            raise
        for s in batch.closes:
            if s.fd >= 0:
                os.close(s.fd)
                s.fd = -1

    def orphans(self) -> list[str]:
        """Sessions whose OPEN is stored but whose row is not (a crash before the commit)."""
        have = {str(r[0]) for r in self.db.execute("SELECT sid FROM sessions")}
        return sorted(p.stem for p in (self.root / "logs").glob("*.open") if p.stem not in have)

    def repair(self, opened: OpenedRecording, open_blob: bytes) -> None:
        """Recreate a lost row from the OPEN and the log (on the store's thread, at start)."""
        sid = opened.sid.hex()
        self._create(opened, open_blob, opened.grant.mqtt_name)
        s = SessionFile(sid, -1, 0, 0, genesis(opened.sid))
        path = log_path(self.root, sid)
        good = 0
        try:
            for stored in iter_log(path.read_bytes() if path.exists() else b""):
                s.add(stored.event, stored.chain)
                good = stored.offset + len(stored.event.encode()) + len(stored.chain)
        except TruncatedRecord:
            pass
        self.db.execute(
            "UPDATE sessions SET events=?, log_bytes=?, bytes_out=?, bytes_in=?, duration=?,"
            " exit_code=?, exit_signal=?, status=CASE WHEN ? THEN 'closed' ELSE 'live' END,"
            " ended=CASE WHEN ? THEN started + ? ELSE ended END WHERE sid=?",
            (s.events, good, s.bytes_out, s.bytes_in, s.duration, s.exit_code, s.exit_signal,
             s.ended, s.ended, s.duration, sid))
        self.grant_ids.add(opened.grant.jti)

    def _create(self, opened: OpenedRecording, open_blob: bytes, client: str) -> None:
        sid = opened.sid.hex()
        write_private_file(open_message_path(self.root, sid), open_blob)
        body = opened.body
        row = {**grant_columns(opened.grant), "sid": sid, "grant_token": str(body.get("grant", "")),
               "client": client, "started": float(body.get("started") or 0.0),
               "cols": body["cols"], "rows": body["rows"]}  # open_recording checked the size
        self.db.execute(f"INSERT OR IGNORE INTO sessions ({', '.join(row)}) VALUES"
                        f" ({', '.join('?' * len(row))})", tuple(row.values()))

    def retire(self, sid: str) -> None:
        """The session ended and all of it is durable: the next commit closes its log."""
        s = self.files.pop(sid, None)
        if s is not None:
            self._closes.append(s)

    def close(self) -> None:
        """After the last commit: close every log and the database."""
        for s in [*self.files.values(), *self._closes]:
            if s.fd >= 0:
                os.close(s.fd)
                s.fd = -1
        self.files.clear()
        self.db.close()
