"""`tether search TEXT`: find text that recorded sessions showed, newest first."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tether.commands.options import add_store_argument, open_store, store_dir

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

    from tether.recorder.search import Hit


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Search the text recorded sessions showed (lines as they scrolled, screens at "
        "pauses, command lines). Substring match, case-insensitive, at least 3 characters. "
        "Hits are numbered; `tether replay --hit N` opens hit N of the last search."
    )
    parser.add_argument("text", help="the text to find (3 characters or more)")
    parser.add_argument("--agent", help="only sessions on this agent")
    parser.add_argument("--user", help="only sessions of this user")
    parser.add_argument("--session", metavar="SID", help="only this session (id or prefix)")
    parser.add_argument("--since", metavar="T", help="ISO date/time, or relative: 30m, 2h, 3d")
    parser.add_argument("--until", metavar="T", help="ISO date/time, or relative: 30m, 2h, 3d")
    parser.add_argument("--limit", type=int, default=20, help="at most N hits (default 20)")
    add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the hits as JSON")


def run(args: argparse.Namespace) -> int:
    import sys

    from tether.commands.main import UserError
    from tether.display import safe_json
    from tether.edge.home import Home
    from tether.recorder import search as s

    home = Home.default()
    store = store_dir(args)
    try:
        since = s.parse_when(args.since) if args.since else None
        until = s.parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.limit <= 0:
        raise UserError("--limit must be positive")
    db = open_index(store)
    try:
        hits = s.search(db, args.text, agent=args.agent, user=args.user, sid=args.session,
                        since=since, until=until, limit=args.limit)
    except s.QueryTooShort as exc:
        raise UserError(str(exc)) from None
    finally:
        db.close()
    save_last_search(home.run_dir / "last-search.json", hits)
    if args.json:
        print(safe_json([h.to_json() for h in hits]))
        return 0
    if not hits:
        print("no matches", file=sys.stderr)
        return 1
    tty = sys.stdout.isatty()
    for hit in hits:
        print(format_hit(hit, tty))
    return 0


def open_index(store: Path) -> sqlite3.Connection:
    """The store's database, read side, with its text index; a clear error if there is none."""
    # (No schema created here: a table made in index.db would hide search.db's.)
    return open_store(store)


def format_hit(hit: Hit, tty: bool) -> str:
    import time

    from tether.display import safe

    wall = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hit.wall))
    on, off = ("\x1b[1;7m", "\x1b[0m") if tty else ("«", "»")
    snippet, out, pos = hit.snippet, [], 0
    for start, end in hit.spans:
        out.append(safe(snippet[pos:start]))
        out.append(on + safe(snippet[start:end]) + off)
        pos = end
    out.append(safe(snippet[pos:]))
    return (f"{hit.n:>3}  {safe(hit.sid[:12])}  {wall}  {safe(hit.user or '-')}@"
            f"{safe(hit.agent or '-')}  {safe(hit.kind):<7} {''.join(out)}")


def save_last_search(path: Path, hits: list[Hit]) -> None:
    """For `tether replay --hit N` (contract: a list of {n, sid, t, wall, offset})."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    items = [{"n": h.n, "sid": h.sid, "t": h.t, "wall": h.wall, "offset": h.offset} for h in hits]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # what auditors looked for
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(items))
    os.replace(tmp, path)
