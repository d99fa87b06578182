"""Search the recorded text: newest first, over bounded candidate sets.

FTS5 trigram MATCH on the whole query as one phrase (a substring, case-insensitive),
matches read newest-indexed first (rowid order follows indexing, which runs close
behind the sessions) and filtered by session metadata and time, stopping at `limit`
accepted or at a time budget; the accepted ones are ordered by wall time. Nothing ranks
an unbounded set (docs/sources.md#fts5-ranking-cost). With filters, only the rowid ranges
where the chosen sessions / times have rows (`text_spans`) are read, so a selective filter
does not walk every match of a common word.
The web console reuses `search()`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tether.errors import TetherError

MIN_QUERY = 3  # the trigram tokenizer cannot match fewer characters
SNIPPET_CONTEXT = 50
MAX_RANGES = 64


class QueryTooShort(TetherError, ValueError):
    pass


@dataclass(frozen=True)
class Hit:
    n: int  # 1-based position in the results
    sid: str
    t: float  # seconds since the session started
    wall: float  # seconds since the epoch
    offset: int  # output offset (bytes of OUTPUT+STDERR before this point)
    kind: str  # scroll | screen | command
    text: str
    snippet: str
    spans: list[tuple[int, int]] = field(default_factory=list)  # matches within snippet
    user: str = ""
    agent: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["spans"] = [list(s) for s in self.spans]
        return out


def fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def search(db: sqlite3.Connection, text: str, *, agent: str | None = None,
           user: str | None = None, sid: str | None = None, since: float | None = None,
           until: float | None = None, limit: int = 20, budget: float = 2.0) -> list[Hit]:
    """Up to `limit` rows containing `text`, newest first. Raises QueryTooShort.

    Matches are read newest-indexed first and the query stops after `limit` accepted
    ones, or after `budget` seconds (then the newest found so far are returned)."""
    query = text.strip()
    if len(query) < MIN_QUERY:
        raise QueryTooShort(f"search text must be at least {MIN_QUERY} characters "
                            "(the index matches substrings by trigrams)")
    if limit <= 0:
        return []
    clauses = ["text_fts MATCH ?"]
    params: list[Any] = [fts_phrase(query)]
    span_clauses: list[str] = []
    span_params: list[Any] = []
    if agent is not None or user is not None or sid is not None:
        sub, sub_params = _session_filter(agent, user, sid)
        clauses.append(f"r.sid IN (SELECT sid FROM sessions WHERE {sub})")
        params.extend(sub_params)
        span_clauses.append(f"sid IN (SELECT sid FROM sessions WHERE {sub})")
        span_params.extend(sub_params)
    if since is not None:
        clauses.append("r.wall >= ?")
        params.append(since)
        span_clauses.append("max_wall >= ?")
        span_params.append(since)
    if until is not None:
        clauses.append("r.wall < ?")
        params.append(until)
        span_clauses.append("min_wall < ?")
        span_params.append(until)
    ranges: list[tuple[int, int]] | None = None
    if span_clauses:
        ranges = _ranges(db, " AND ".join(span_clauses), span_params)
        clauses.append("f.rowid BETWEEN ? AND ?")
    sql = ("SELECT r.id, r.sid, r.t, r.wall, r.offset, r.kind, r.text"
           " FROM text_fts f JOIN text_rows r ON r.id = f.rowid"
           f" WHERE {' AND '.join(clauses)} ORDER BY f.rowid DESC LIMIT ?")
    accepted: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + budget
    # A very common text with a filter that rejects most of it would read every match:
    # stop at the deadline and keep the newest hits found so far.
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        for bounds in ([()] if ranges is None else ranges):
            cursor = db.execute(sql, [*params, *bounds, limit - len(accepted)])
            accepted.extend(cursor.fetchall())
            if len(accepted) >= limit:
                break
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
    finally:
        db.set_progress_handler(None, 0)
    accepted.sort(key=lambda r: (r[3], r[0]), reverse=True)
    meta = _metadata(db, {r[1] for r in accepted[:limit]})
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    hits = []
    for n, (_, row_sid, t, wall, offset, kind, row_text) in enumerate(accepted[:limit], 1):
        snippet, spans = make_snippet(row_text, pattern)
        u, a = meta.get(row_sid, ("", ""))
        hits.append(Hit(n, row_sid, t, wall, offset, kind, row_text, snippet, spans, u, a))
    return hits


def _session_filter(agent: str | None, user: str | None, sid: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    for column, value in (("agent", agent), ("user", user)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if sid is not None:
        clauses.append("sid LIKE ?")
        params.append(sid.lower().replace("%", "").replace("_", "") + "%")
    return " AND ".join(clauses), params


def _ranges(db: sqlite3.Connection, where: str, params: list[Any]) -> list[tuple[int, int]]:
    """The rowid ranges that can hold the filtered rows, newest first, merged; at most
    MAX_RANGES (neighbours are joined: the exact filter is applied to the rows anyway)."""
    # (tuples: a connection with row_factory = sqlite3.Row, as the audit queries use, gives
    # rows that do not compare)
    spans = sorted((lo, hi) for lo, hi in db.execute(f"SELECT lo, hi FROM text_spans WHERE {where}", params))
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > MAX_RANGES:
        k = -(-len(merged) // MAX_RANGES)
        merged = [[merged[i][0], max(m[1] for m in merged[i:i + k])]
                  for i in range(0, len(merged), k)]
    return [(lo, hi) for lo, hi in reversed(merged)]


def _metadata(db: sqlite3.Connection, sids: set[str]) -> dict[str, tuple[str, str]]:
    if not sids:
        return {}
    marks = ",".join("?" * len(sids))
    return {r[0]: (r[1], r[2]) for r in db.execute(
        f"SELECT sid, user, agent FROM sessions WHERE sid IN ({marks})", list(sids))}


def make_snippet(text: str, pattern: re.Pattern[str]) -> tuple[str, list[tuple[int, int]]]:
    """A window of `text` around its first match, and the matches' spans within it."""
    first = pattern.search(text)
    if first is None:  # trigram matching is case-insensitive for more than re.I
        return text[:2 * SNIPPET_CONTEXT], []
    start = max(first.start() - SNIPPET_CONTEXT, 0)
    end = min(first.end() + SNIPPET_CONTEXT, len(text))
    prefix = "…" if start > 0 else ""
    body = text[start:end]
    spans = [(m.start() + len(prefix), m.end() + len(prefix)) for m in pattern.finditer(body)]
    return prefix + body + ("…" if end < len(text) else ""), spans


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str, now: float | None = None) -> float:
    """A time as epoch seconds: ISO date or date-time (local unless it says otherwise),
    epoch seconds, or relative to now: 90s, 30m, 2h, 3d, 1w."""
    value = value.strip()
    now = time.time() if now is None else now
    m = _RELATIVE.match(value.lower())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use e.g. 2026-05-01, "
                         "2026-05-01T14:30, 2h, 3d)") from None
