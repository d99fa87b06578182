"""Audit queries over MQTT: the recorder answers sealed, grant-checked questions about its
recordings (docs/protocol.md §13), for the web console's sessions page.

Authentication and authorisation run on the event loop (a sealed-box open and two
signature checks). The answer is computed on a thread of this module's own, with a
read-only SQLite connection of its own: the store's connection and thread are never
touched, and a slow search cannot delay an ack. Replies go out with the connection's
backpressure (`drain`), so fetching a long recording never queues it all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from tether import auditq
from tether.edge.keys import Identity
from tether.edge.mqtt import MqttConnection
from tether.encoding import b64d
from tether.errors import TetherError
from tether.recorder import db as recdb
from tether.recorder.export import asciicast
from tether.recorder.replay import Recording, ReplayError
from tether.recorder.search import QueryTooShort, search
from tether.recorder.verify import verify_log
from tether.revocation import BulletinTracker
from tether.skew import MAX_SKEW
from tether.topics import Topics

log = logging.getLogger("tether.recorder.queries")

LIST_DEFAULT: Final = 100
LIST_MAX: Final = 1000
SEARCH_DEFAULT: Final = 20
SEARCH_MAX: Final = 200
FETCH_MAX_LOG: Final = 64 * 1024 * 1024  # larger recordings: `tether export` on the host
MAX_PENDING: Final = 16  # queries waiting for the worker; more are dropped
SESSION_COLUMNS: Final = ("sid", "user", "agent", "run_as", "mode", "command", "reason",
                          "client", "recording", "started", "ended", "duration", "exit_code",
                          "exit_signal", "status", "chain", "events", "bytes_out", "bytes_in",
                          "cols", "rows")
_SID = re.compile(r"[0-9a-f]{32}")


class _Refused(TetherError):
    pass


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Refused(f"{key} must be a string")
    return value


def _opt_time(args: dict[str, Any], key: str) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"{key} must be Unix seconds")
    return float(value)


def _limit(args: dict[str, Any], default: int, most: int) -> int:
    value = args.get("limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Refused("limit must be a positive integer")
    return min(value, most)


def _sid(args: dict[str, Any]) -> str:
    sid = args.get("sid")
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        raise _Refused("sid must be a session id (32 lowercase hex digits)")
    return sid


def _session(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in SESSION_COLUMNS}
    if isinstance(out["command"], str):
        with contextlib.suppress(ValueError):
            out["command"] = json.loads(out["command"])
    return out


class QueryWorker:
    """The blocking half: runs on one thread with its own read-only connection."""

    def __init__(self, store: Path, authority_key: bytes) -> None:
        self.store = store
        self.authority_key = authority_key
        self._db: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        if self._db is None:
            db = recdb.connect(self.store, create=False, read_only=True)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def answer(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The response document for one authorised query."""
        try:
            result = getattr(self, f"op_{op}")(args)
        except _Refused as exc:
            return {"ok": False, "op": op, "error": str(exc)}
        except (sqlite3.Error, OSError) as exc:
            log.warning("audit query %s failed: %s", op, exc)
            return {"ok": False, "op": op, "error": f"the recorder could not read its store: {exc}"}
        return {"ok": True, "op": op, "result": result}

    def _row(self, sid: str) -> sqlite3.Row:
        row = self.db().execute("SELECT * FROM sessions WHERE sid = ?", (sid,)).fetchone()
        if row is None:
            raise _Refused(f"no recorded session {sid}")
        assert isinstance(row, sqlite3.Row)
        return row

    def op_list(self, args: dict[str, Any]) -> dict[str, Any]:
        clauses: list[str] = []
        params: list[str | float] = []
        for key in ("user", "agent", "status"):
            value = _opt_str(args, key)
            if value is not None:
                clauses.append(f"{key} = ?")
                params.append(value)
        since, until = _opt_time(args, "since"), _opt_time(args, "until")
        if since is not None:  # sessions still running at `since` count too
            clauses.append("(ended IS NULL OR ended >= ?)")
            params.append(since)
        if until is not None:
            clauses.append("started < ?")
            params.append(until)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = _limit(args, LIST_DEFAULT, LIST_MAX)
        rows = self.db().execute(f"SELECT * FROM sessions{where} ORDER BY started DESC LIMIT ?",
                                 [*params, limit + 1]).fetchall()
        return {"sessions": [_session(r) for r in rows[:limit]], "more": len(rows) > limit}

    def op_search(self, args: dict[str, Any]) -> dict[str, Any]:
        text = args.get("text")
        if not isinstance(text, str):
            raise _Refused("text must be a string")
        sid = _opt_str(args, "sid")
        try:
            hits = search(self.db(), text, agent=_opt_str(args, "agent"), user=_opt_str(args, "user"),
                          sid=sid, since=_opt_time(args, "since"), until=_opt_time(args, "until"),
                          limit=_limit(args, SEARCH_DEFAULT, SEARCH_MAX))
        except QueryTooShort as exc:
            raise _Refused(str(exc)) from None
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {"hits": []}  # nothing indexed yet
            raise
        return {"hits": [h.to_json() for h in hits]}

    def op_commands(self, args: dict[str, Any]) -> dict[str, Any]:
        sid = _sid(args)
        self._row(sid)
        try:
            rows = self.db().execute(
                "SELECT seq, t, wall, offset, duration, exit_code, command, output, source "
                "FROM commands WHERE sid = ? ORDER BY seq", (sid,)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []
        return {"sid": sid, "commands": [dict(r) for r in rows]}

    def op_fetch(self, args: dict[str, Any]) -> dict[str, Any]:
        sid = _sid(args)
        row = self._row(sid)
        if int(row["log_bytes"]) > FETCH_MAX_LOG:
            raise _Refused(f"session {sid} is too large to replay in the console "
                           f"({row['log_bytes']} bytes); use `tether export` on the recorder")
        try:
            rec = Recording.load(self.store, self.db(), sid)
        except ReplayError as exc:
            raise _Refused(str(exc)) from None
        return {"sid": sid, "session": _session(row), "asciicast": "".join(asciicast(rec))}

    def op_verify(self, args: dict[str, Any]) -> dict[str, Any]:
        sid = _sid(args)
        row = self._row(sid)
        try:
            with open(recdb.log_path(self.store, sid), "rb") as f:
                data = f.read(int(row["log_bytes"]))
        except FileNotFoundError:
            raise _Refused(f"the log of session {sid} is missing") from None
        try:
            opened = recdb.open_message_path(self.store, sid).read_bytes()
        except FileNotFoundError:
            opened = b""
        report = verify_log(sid, data, grant_token=row["grant_token"],
                            authority_key=self.authority_key, status=str(row["status"]),
                            stored_events=int(row["events"]), open_message=opened,
                            row=dict(row))
        return {"sid": sid, "ok": report.ok, "events": report.events,
                "checkpoints": report.checkpoints, "ended": report.ended,
                "signed_through": report.signed_through, "unsigned": report.unsigned,
                "problems": report.problems, "notes": report.notes}


class AuditQueries:
    """The recorder's audit-query endpoint; `RecorderService` attaches and dispatches."""

    def __init__(self, identity: Identity, store: Path, topics: Topics) -> None:
        self.identity = identity
        self.name = identity.name
        self.topics = topics
        self.authority_key = b64d(identity.authority["ed25519"])
        self.worker = QueryWorker(store, self.authority_key)
        self.bulletin = BulletinTracker(self.authority_key)
        self.stats: Counter[str] = Counter()
        self.conn: MqttConnection | None = None
        self._nonces: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tether-audit")

    def attach(self, conn: MqttConnection) -> None:
        self.conn = conn
        conn.subscribe(self.topics.audit_queries(self.name), 1)
        conn.subscribe(self.topics.bulletin(), 1)

    def handles(self, topic: str) -> bool:
        if topic == self.topics.bulletin():
            return True
        parsed = self.topics.parse_audit_query(topic)
        return parsed is not None and parsed[0] == self.name

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.bulletin():
            self.bulletin.offer(payload)
            return
        parsed = self.topics.parse_audit_query(topic)
        if parsed is None:
            return
        client = parsed[1]
        now = time.time()
        try:
            query = auditq.open_query(self.identity.x25519_secret or b"", self.authority_key,
                                      payload, now)
        except auditq.QueryDropped as exc:
            self.stats["dropped"] += 1
            log.warning("dropped audit query on %s: %s", topic, exc)
            return
        self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        if query.nonce in self._nonces:
            self.stats["dropped"] += 1
            log.warning("dropped a replayed audit query from %s", client)
            return
        self._nonces[query.nonce] = now + 2 * MAX_SKEW
        reply_topic = self.topics.audit_reply(self.name, client)
        try:
            auditq.authorise(query, recorder=self.name, recorder_key=self.identity.public_key,
                             client=client, now=now)
            g = query.grant
            revoked = self.bulletin.current.grant_refusal(g.user, g.jti, g.client_key)
            if revoked:
                raise auditq.QueryRefused(f"denied: {revoked}")
        except auditq.QueryRefused as exc:
            self.stats["refused"] += 1
            log.warning("refused audit query %s from %s: %s", query.op, client, exc)
            self._publish(reply_topic, auditq.build_replies(
                self.identity.signing_key, query, {"ok": False, "op": query.op, "error": str(exc)}, os.urandom))
            return
        if len(self._tasks) >= MAX_PENDING:
            self.stats["dropped_busy"] += 1
            log.warning("dropped audit query from %s: %d queries are waiting", client, MAX_PENDING)
            return
        log.info("audit query %s by %s (%s): %s", query.op, query.grant.user, client,
                 {k: v for k, v in query.args.items() if k != "text"} or "")
        task = asyncio.get_running_loop().create_task(self._answer(query, reply_topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _compute(self, query: auditq.Query) -> list[bytes]:
        response = self.worker.answer(query.op, query.args)
        return auditq.build_replies(self.identity.signing_key, query, response, os.urandom)

    async def _answer(self, query: auditq.Query, topic: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            replies = await loop.run_in_executor(self._executor, self._compute, query)
        except Exception as exc:
            log.exception("audit query %s failed", query.op)
            # An answer, so the console says what happened instead of waiting for a timeout.
            self._publish(topic, auditq.build_replies(self.identity.signing_key, query, {
                "ok": False, "op": query.op,
                "error": f"the recorder failed on this query ({type(exc).__name__}); its log has the details"}, os.urandom))
            return
        self.stats[f"answered_{query.op}"] += 1
        conn = self.conn
        for message in replies:
            if conn is None:
                return
            if conn.backlogged:
                await conn.drain()
            conn.publish(topic, message, qos=1)

    def _publish(self, topic: str, messages: list[bytes]) -> None:
        if self.conn is not None:
            for m in messages:
                self.conn.publish(topic, m, qos=1)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.worker.close)
        self._executor.shutdown(wait=True)
