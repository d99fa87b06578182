"""Search the recorded text: newest first, over bounded candidate sets.

FTS5 trigram MATCH on the whole query as one phrase (a substring, case-insensitive),
candidates read newest-indexed first in growing pages (rowid order follows indexing,
which runs close behind the sessions), filtered by session metadata and time, and the
accepted ones ordered by wall time. Nothing ranks an unbounded set (FIELD-NOTES, FTS5).
The web console reuses `search()`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

MIN_QUERY = 3  # the trigram tokenizer cannot match fewer characters
MAX_CANDIDATES = 200_000
SNIPPET_CONTEXT = 50


class QueryTooShort(ValueError):
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
           until: float | None = None, limit: int = 20) -> list[Hit]:
    """Up to `limit` rows containing `text`, newest first. Raises QueryTooShort."""
    query = text.strip()
    if len(query) < MIN_QUERY:
        raise QueryTooShort(f"search text must be at least {MIN_QUERY} characters "
                            "(the index matches substrings by trigrams)")
    if limit <= 0:
        return []
    sessions = _sessions(db, agent, user, sid)
    if sessions is not None and not sessions:
        return []
    phrase = fts_phrase(query)
    accepted: list[tuple[Any, ...]] = []
    below: int | None = None
    page = max(limit, 50)
    scanned = 0
    while scanned < MAX_CANDIDATES:
        if below is None:
            ids = db.execute("SELECT rowid FROM text_fts WHERE text_fts MATCH ? "
                             "ORDER BY rowid DESC LIMIT ?", (phrase, page)).fetchall()
        else:
            ids = db.execute("SELECT rowid FROM text_fts WHERE text_fts MATCH ? AND rowid < ? "
                             "ORDER BY rowid DESC LIMIT ?", (phrase, below, page)).fetchall()
        if not ids:
            break
        scanned += len(ids)
        below = ids[-1][0]
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT id, sid, t, wall, offset, kind, text FROM text_rows "
                          f"WHERE id IN ({marks})", [i for (i,) in ids]).fetchall()
        for row in rows:
            if sessions is not None and row[1] not in sessions:
                continue
            if since is not None and row[3] < since:
                continue
            if until is not None and row[3] >= until:
                continue
            accepted.append(row)
        if len(accepted) >= limit or len(ids) < page:
            break
        page = min(page * 8, 20_000)
    accepted.sort(key=lambda r: (r[3], r[0]), reverse=True)
    meta = _metadata(db, {r[1] for r in accepted[:limit]})
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    hits = []
    for n, (_, row_sid, t, wall, offset, kind, row_text) in enumerate(accepted[:limit], 1):
        snippet, spans = make_snippet(row_text, pattern)
        u, a = meta.get(row_sid, ("", ""))
        hits.append(Hit(n, row_sid, t, wall, offset, kind, row_text, snippet, spans, u, a))
    return hits


def _sessions(db: sqlite3.Connection, agent: str | None, user: str | None,
              sid: str | None) -> set[str] | None:
    if agent is None and user is None and sid is None:
        return None
    clauses, params = [], []
    for column, value in (("agent", agent), ("user", user)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if sid is not None:
        clauses.append("sid LIKE ?")
        params.append(sid.lower() + "%")
    return {r[0] for r in db.execute(
        "SELECT sid FROM sessions WHERE " + " AND ".join(clauses), params)}


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
