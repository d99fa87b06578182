"""`tether verify SID`: re-check a stored recording offline."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tether.commands.options import add_store_argument

if TYPE_CHECKING:
    from tether.recorder.verify import Report


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Re-check a stored recording offline: recompute its BLAKE2b hash chain event by event, "
        "check the agent's signed checkpoints and end manifest (the agent's key comes from the "
        "authority-signed grant stored with the session), and report exactly where it breaks: "
        "a changed byte, a removed event, or a truncated tail. The grant, the agent-signed OPEN "
        "that ties it to the session, and the authority's key are all needed: without any of "
        "them the signatures cannot be checked and verification fails. Exit status 0 if "
        "intact and every event is signed, 1 if not (events after the last signature of an "
        "aborted or live session are not verified)."
    )
    parser.add_argument("sid", help="the session id, or a unique prefix of it")
    add_store_argument(parser)
    parser.add_argument("--authority-key", metavar="B64",
                        help="the authority's Ed25519 public key (default: from the identities "
                        "under $TETHER_HOME); without one, verification fails")


def resolve_sid(db: object, prefix: str) -> str:
    """A full session id from a unique prefix; UserError otherwise."""
    import sqlite3

    from tether.commands.main import UserError

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
    """The authority's Ed25519 public key: --authority-key, else from an identity file
    under $TETHER_HOME (the recorder's, the user's, the authority's); None if none."""
    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.edge.keys import Identity, KeyFileError
    from tether.encoding import b64d

    if explicit is not None:
        try:
            key = b64d(explicit.strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UserError("--authority-key must be the authority's Ed25519 public key: 43 "
                            "base64url characters (`.authority.ed25519` in an identity file)")
        return key
    home = Home.default()
    for path in (home.recorder_identity(), home.user_identity, home.authority_identity):
        try:
            found = Identity.load(path).authority.get("ed25519")
            if found:
                return b64d(found)
        except (KeyFileError, OSError, ValueError):
            continue
    return None


NO_KEY_HINT = ("  to check signatures, pass --authority-key KEY: the authority's Ed25519 public "
               "key (`.authority.ed25519` in any identity file it issued), from a host you trust")


def run(args: argparse.Namespace) -> int:
    import sqlite3

    from tether.commands.main import UserError
    from tether.commands.options import open_store, store_dir
    from tether.display import safe
    from tether.recorder.db import log_path, open_message_path
    from tether.recorder.verify import verify_log

    key = authority_key(args.authority_key)
    store = store_dir(args)
    db = open_store(store)
    db.row_factory = sqlite3.Row
    sid = resolve_sid(db, args.sid)
    row = dict(db.execute("SELECT * FROM sessions WHERE sid=?", (sid,)).fetchone())
    try:
        data = log_path(store, sid).read_bytes()
    except FileNotFoundError:
        raise UserError(f"the log of session {sid} is missing from {store}") from None
    try:
        opened = open_message_path(store, sid).read_bytes()
    except FileNotFoundError:
        opened = b""  # reported: the OPEN ties the session to its grant
    report = verify_log(sid, data, grant_token=row["grant_token"], authority_key=key,
                        status=str(row["status"]), stored_events=int(row["events"]),
                        open_message=opened, row=row)
    print(f"session {sid} ({safe(row['user'])}@{safe(row['agent'])}): {report.events} events, "
          f"{report.checkpoints} signed checkpoints, "
          f"{'end manifest present' if report.ended else 'no end manifest'}")
    for note in report.notes:
        print(f"  note: {safe(note)}")
    for problem in report.problems:
        print(f"  BROKEN: {safe(problem)}")
    if key is None:
        print(NO_KEY_HINT)
    print(_verdict(report))
    return 0 if report.ok else 1


def _verdict(report: Report) -> str:
    if report.problems:
        return "verification FAILED"
    if not report.ok:
        return (f"NOT VERIFIED: intact and signed through event {report.signed_through}, but "
                f"the last {report.unsigned} events are not signed by the agent")
    if not report.ended:
        return ("verified: every stored event is intact and signed, but there is no end "
                "manifest, so a cut tail cannot be ruled out")
    return "verified: intact"
