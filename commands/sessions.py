"""`tether sessions`: list sessions, or have the authority order one terminated."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = (
        "Without a verb (or with `list`): the recorded sessions in the recorder's store on this "
        "machine, newest first, with who, where, when, how long, the exit code, the status "
        "(live, closed or aborted) and whether the hash chain verified on ingest. "
        "`terminate SID` asks the authority to end a live session: it checks that you are an "
        "admin, or that the policy allows you the `admin` action on the agent, then publishes a "
        "signed terminate order that the agent verifies before it ends the session."
    )
    verbs = parser.add_subparsers(dest="verb")
    listing = verbs.add_parser("list", help="list recorded sessions (the default)")
    for p in (parser, listing):
        _add_filters(p)
    term = verbs.add_parser("terminate", help="end a live session (admin)")
    term.add_argument("sid", help="the session id (32 hex digits)")
    term.add_argument("--agent", help="the agent running it (required unless you are an admin)")
    add_identity_argument(term)


def _add_filters(p: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument
    from tether.commands.options import add_store_argument

    p.add_argument("--agent", help="only sessions on this agent")
    p.add_argument("--user", help="only sessions of this user")
    p.add_argument("--since", metavar="T", help="started at or after T: ISO date/time, or 30m, 2h, 3d")
    p.add_argument("--until", metavar="T", help="started before T: ISO date/time, or 30m, 2h, 3d")
    p.add_argument("--status", choices=["live", "closed", "aborted"], help="only this status")
    p.add_argument("--limit", type=int, default=50, help="at most N sessions (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--live", action="store_true",
                   help="ask the authority for your live sessions instead (attached or "
                   "detached; `tether attach SID` takes one over)")
    add_store_argument(p)
    add_identity_argument(p)


def run(args: argparse.Namespace) -> int:
    import asyncio

    if args.verb in (None, "list") and args.live:
        from tether.client.live import print_live

        return asyncio.run(print_live(args))
    if args.verb in (None, "list"):
        return _list(args)
    return asyncio.run(_terminate(args))


def _list(args: argparse.Namespace) -> int:
    import shlex
    import sys
    import time

    from tether.commands.main import UserError
    from tether.commands.options import open_store, store_dir
    from tether.display import safe, safe_json
    from tether.recorder.search import parse_when

    store = store_dir(args)
    db = open_store(store)
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    where, params = [], []
    for column, value in (("agent", args.agent), ("user", args.user), ("status", args.status)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("started >= ?")
        params.append(since)
    if until is not None:
        where.append("started < ?")
        params.append(until)
    sql = ("SELECT sid, user, agent, run_as, mode, command, reason, started, duration, exit_code,"
           " exit_signal, status, chain, bytes_out FROM sessions"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY started DESC LIMIT ?")
    rows = db.execute(sql, (*params, max(1, args.limit))).fetchall()
    db.close()
    keys = ["sid", "user", "agent", "run_as", "mode", "command", "reason", "started", "duration",
            "exit_code", "exit_signal", "status", "chain", "bytes_out"]
    if args.json:
        for row in rows:
            print(safe_json(dict(zip(keys, row, strict=True))))
        return 0
    if not rows:
        print("no recorded sessions match", file=sys.stderr)
        return 0
    print(f"{'SESSION':<12}  {'STARTED':<19}  {'DURATION':>8}  {'USER@AGENT':<24}  {'AS':<8}  "
          f"{'EXIT':>4}  {'STATUS':<7}  {'CHAIN':<5}  WHAT")
    for r in rows:
        d = dict(zip(keys, r, strict=True))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(d["started"])))
        exit_ = (str(d["exit_code"]) if d["exit_code"] is not None else
                 f"sig{d['exit_signal']}" if d["exit_signal"] is not None else "-")
        what = "shell" if d["mode"] == "shell" else shlex.join(_argv(d["command"]))
        if d["reason"]:
            what += f"  ({d['reason']})"
        print(f"{safe(d['sid'][:12]):<12}  {started:<19}  {_duration(float(d['duration'])):>8}  "
              f"{safe(d['user'] + '@' + d['agent']):<24}  {safe(d['run_as']):<8}  {exit_:>4}  "
              f"{safe(d['status']):<7}  {'ok' if d['chain'] == 'ok' else 'BAD':<5}  {safe(what)}")
    return 0


def _argv(command: object) -> list[str]:
    from tether.encoding import loads

    if not isinstance(command, str):
        return []
    try:
        value = loads(command)
    except ValueError:
        return [command]
    return [str(a) for a in value] if isinstance(value, list) else [command]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s"


async def _terminate(args: argparse.Namespace) -> int:
    from tether.client.connect import ask_authority, load_identity
    from tether.commands.main import UserError
    from tether.display import safe

    reply = await ask_authority(load_identity(args.identity),
                                {"type": "terminate", "sid": args.sid.lower(), "agent": args.agent})
    if not reply.get("ok"):
        raise UserError(safe(reply.get("error", "the authority refused")))
    print(safe(reply.get("message", "terminate order published")))
    return 0
