"""`tether attach [SID]`: take over one of your live shell sessions from here."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = (
        "Attach this terminal to one of your live shell sessions: one you detached with ~d, "
        "one whose connection was lost, or one open in another terminal (that one is told it "
        "was detached). Without SID: your only detached session; otherwise the candidates are "
        "listed. The authority grants the attach afresh, as for a new shell, so rights you "
        "have lost cannot be regained this way. The screen is restored from the session's "
        "recent output. `tether sessions --live` lists your live sessions."
    )
    parser.add_argument("sid", nargs="?", help="the session id, or a unique prefix of it")
    parser.add_argument("--agent", help="only sessions on this agent")
    parser.add_argument("--reason", help="why; recorded, and required by some policies")
    parser.add_argument("-e", dest="escape", default="~", metavar="CHAR",
                        help="escape character (default ~); 'none' disables escapes")
    add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_attach(args))


async def _attach(args: argparse.Namespace) -> int:
    from tether.client.live import choose, live_sessions
    from tether.commands.shell import interactive, terminal_request

    target = choose(await live_sessions(args.identity, args.agent), args.sid)
    request = terminal_request(str(target.get("run_as")), args.reason)
    request["attach"] = target["sid"]
    return await interactive(args, str(target["agent"]), request)
