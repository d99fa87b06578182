"""`tether verify SID`: re-check a stored recording offline."""

from __future__ import annotations

import argparse

from tether.recorder.cli import add_store_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Re-check a stored recording offline: recompute its BLAKE2b hash chain event by event, "
        "check the agent's signed checkpoints and end manifest (the agent's key comes from the "
        "authority-signed grant stored with the session), and report exactly where it breaks: "
        "a changed byte, a removed event, or a truncated tail. Exit status 0 if intact, 1 if not."
    )
    parser.add_argument("sid", help="the session id, or a unique prefix of it")
    add_store_argument(parser)
    parser.add_argument("--authority-key", metavar="B64",
                        help="the authority's Ed25519 public key (default: from the identities "
                        "under $TETHER_HOME)")


def resolve_sid(db: object, prefix: str) -> str:
    """A full session id from a unique prefix; UserError otherwise."""
    import sqlite3

    from tether.cli import UserError

    assert isinstance(db, sqlite3.Connection)
    p = prefix.strip().lower()
    if not p or any(c not in "0123456789abcdef" for c in p):
        raise UserError(f"{prefix!r} is not a session id (hex digits, as `tether sessions` shows)")
    rows = db.execute("SELECT sid FROM sessions WHERE sid LIKE ? LIMIT 3", (p + "%",)).fetchall()
    if not rows:
        raise UserError(f"no recorded session {prefix!r}; list them with `tether sessions`")
    if len(rows) > 1:
        raise UserError(f"{prefix!r} matches several sessions; give more digits")
    return str(rows[0][0])


def authority_key(explicit: str | None) -> bytes | None:
    from tether.encoding import b64d
    from tether.home import Home
    from tether.keys import Identity, KeyFileError

    if explicit:
        return b64d(explicit)
    home = Home.default()
    for path in (home.recorder_identity(), home.user_identity, home.authority_identity):
        try:
            key = Identity.load(path).authority.get("ed25519")
        except (KeyFileError, OSError, ValueError):
            continue
        if key:
            return b64d(key)
    return None


def run(args: argparse.Namespace) -> int:
    from tether.cli import UserError
    from tether.recorder.cli import store_dir
    from tether.recorder.db import connect, log_path, open_message_path
    from tether.recorder.verify import verify_log

    store = store_dir(args)
    try:
        db = connect(store, create=False)
    except FileNotFoundError:
        raise UserError(f"no recordings under {store}") from None
    sid = resolve_sid(db, args.sid)
    row = db.execute("SELECT grant_token, status, events, user, agent FROM sessions WHERE sid=?",
                     (sid,)).fetchone()
    try:
        data = log_path(store, sid).read_bytes()
    except FileNotFoundError:
        raise UserError(f"the log of session {sid} is missing from {store}") from None
    try:
        opened = open_message_path(store, sid).read_bytes()
    except FileNotFoundError:
        opened = b""  # reported: an empty OPEN is not the agent's
    report = verify_log(sid, data, grant_token=row[0], authority_key=authority_key(args.authority_key),
                        status=row[1], stored_events=row[2], open_message=opened)
    print(f"session {sid} ({row[3]}@{row[4]}): {report.events} events, "
          f"{report.checkpoints} signed checkpoints, "
          f"{'end manifest present' if report.ended else 'no end manifest'}")
    for note in report.notes:
        print(f"  note: {note}")
    for problem in report.problems:
        print(f"  BROKEN: {problem}")
    print("verified: intact" if report.ok else "verification FAILED")
    return 0 if report.ok else 1
