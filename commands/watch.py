"""`tether watch SID`: show a live session read-only. `tether join` and `tether attach`
(commands/join.py, commands/attach.py) share this module's code: each connects this
terminal to a live session the authority lists, in its own mode."""

from __future__ import annotations

import argparse

ABOUT = {
    "attach": (
        "Attach this terminal to one of your live shell sessions: one you detached with ~d, "
        "one whose connection was lost, or one open in another terminal (that one is told it "
        "was detached). Without SID: your only detached session; otherwise the candidates are "
        "listed. The authority grants the attach afresh, as for a new shell, so rights you "
        "have lost cannot be regained this way. The screen is restored from the session's "
        "recent output. `tether sessions --live` lists your live sessions."
    ),
    "watch": (
        "Watch a live session read-only, as the policy's `watch` action allows: you see what "
        "its users see, from the current screen on; nothing you type is sent (the agent would "
        "drop it: a watcher has no input channel). The session's users are told that you "
        "watch. ~. stops watching; a moderator (policy `require_moderator`) ends the session "
        "with ~k. `tether sessions --live` lists the sessions you may watch."
    ),
    "join": (
        "Join a live shell session as a second writer, as the policy's `join` action allows: "
        "you see its screen and what you type goes to its shell, like its owner's. The "
        "session's users are told that you joined. ~. leaves; the session goes on."
    ),
}


def configure_reader(parser: argparse.ArgumentParser, action: str) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = ABOUT[action]
    parser.add_argument("sid", nargs="?", help="the session id, or a unique prefix of it")
    parser.add_argument("--agent", help="only sessions on this agent")
    parser.add_argument("--reason", help="why; recorded, and required by some policies")
    parser.add_argument("-e", dest="escape", default="~", metavar="CHAR",
                        help="escape character (default ~); 'none' disables escapes")
    add_identity_argument(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    configure_reader(parser, "watch")


def run_reader(args: argparse.Namespace, action: str) -> int:
    import asyncio

    return asyncio.run(_read(args, action))


def run(args: argparse.Namespace) -> int:
    return run_reader(args, "watch")


async def _read(args: argparse.Namespace, action: str) -> int:
    from tether.client.live import choose, live_sessions
    from tether.commands.shell import interactive, terminal_request

    target = choose(await live_sessions(args.identity, args.agent), args.sid, action)
    request = terminal_request(str(target.get("run_as")), args.reason)
    request["attach"] = target["sid"]
    # A takeover is a shell of one's own; watch and join are modes of their own.
    return await interactive(args, str(target["agent"]), request,
                             mode="shell" if action == "attach" else action)
