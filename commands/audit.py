"""`tether audit`: list the authority's decisions, verifying each line."""

from __future__ import annotations

import argparse
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the authority's audit trail: every grant issued or denied (and, as they are "
        "added, enrolments, approvals, revocations and terminations). Each line is signed by "
        "the authority and chained to the one before; lines that fail verification are "
        "flagged. Run on the authority's host ($TETHER_HOME)."
    )
    parser.add_argument("--since", metavar="WHEN", help="only newer entries: 30m, 2h, 7d, or an ISO date")
    parser.add_argument("--user", help="only entries about this user")
    parser.add_argument("--agent", help="only entries about this agent")
    parser.add_argument("--json", action="store_true",
                        help="print each entry as a JSON line (non-ASCII characters as \\u escapes)")


def _line(r: dict[str, Any], number: int, problem: str | None) -> str:
    """One entry as a line. Its fields come from requests by other principals (a user's
    reason, the agent and mode they asked for), so each is escaped for the terminal."""
    from tether.display import safe

    detail = " ".join(f"{k}={safe(r[k])}" for k in ("user", "agent", "mode", "run_as", "jti") if r.get(k))
    command = r.get("command")
    if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
        import shlex

        detail += f" command=[{safe(shlex.join(command))}]"
    why = f" reason={r['reason']!r}" if r.get("reason") else ""
    flag = f"  !! line {number}: {problem}" if problem else ""
    return f"{safe(r.get('ts', '?'))}  {safe(r.get('event', '?')):<14} {detail}{why}{flag}"


def run(args: argparse.Namespace) -> int:
    from tether.authority.audit import parse_since, read_audit
    from tether.commands.main import UserError
    from tether.display import safe_json
    from tether.edge.home import Home
    from tether.edge.keys import Identity, KeyFileError
    from tether.encoding import b64d

    home = Home.default()
    path = home.root / "authority" / "audit.jsonl"
    try:
        authority = Identity.load(home.authority_identity)
    except KeyFileError as exc:
        raise UserError(f"{exc}. Run `tether audit` where the authority runs (set TETHER_HOME).") from None
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError:
            raise UserError(f"--since {args.since!r}: use 30m, 2h, 7d or an ISO date") from None
    if not path.exists():
        print("no audit entries yet")
        return 0
    bad = 0
    for entry in read_audit(path, b64d(authority.authority["ed25519"])):
        r = entry.record
        if entry.problem:
            bad += 1
        if since is not None and entry.when < since and not entry.problem:
            continue
        if args.user and r.get("user") != args.user:
            continue
        if args.agent and r.get("agent") != args.agent:
            continue
        if args.json:
            print(safe_json(r))
            continue
        print(_line(r, entry.line, entry.problem))
    if bad:
        print(f"tether audit: {bad} line(s) failed verification", file=__import__("sys").stderr)
        return 1
    return 0
