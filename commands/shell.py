"""`tether shell AGENT`: an interactive login shell, end-to-end encrypted."""

from __future__ import annotations

import argparse
import os
import sys

ENV_PASSED = ("LANG", "LC_ALL", "LC_CTYPE", "COLORTERM")


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = (
        "Open an interactive login shell on AGENT through the broker, end-to-end encrypted. "
        "The exit status of the remote shell becomes this command's exit status. "
        "Type ~. at the start of a line to disconnect, ~d to detach (the session goes on; "
        "`tether attach` comes back to it), ~? for help."
    )
    parser.add_argument("agent", help="agent name, as listed by `tether ls`")
    parser.add_argument("--as", dest="run_as", metavar="USER",
                        help="remote OS user (default: the first the policy allows)")
    parser.add_argument("--reason", help="why you need access; recorded, and required by some policies")
    parser.add_argument("-e", dest="escape", default="~", metavar="CHAR",
                        help="escape character (default ~); 'none' disables escapes")
    add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_shell(args))


def terminal_request(run_as: str | None, reason: str | None) -> dict[str, object]:
    from tether.client.terminal import terminal_size

    cols, rows = terminal_size()
    return {
        "run_as": run_as,
        "reason": reason,
        "term": os.environ.get("TERM") or "xterm-256color",
        "cols": cols,
        "rows": rows,
        "env": {k: os.environ[k] for k in ENV_PASSED if k in os.environ},
    }


async def _shell(args: argparse.Namespace) -> int:
    return await interactive(args, args.agent, terminal_request(args.run_as, args.reason))


async def interactive(args: argparse.Namespace, agent: str, request: dict[str, object],
                      mode: str = "shell") -> int:
    """A terminal session on `agent` until it ends, ~. or ~d: `tether shell` and `attach`
    (mode shell), `tether join` (join: a second writer) and `tether watch` (watch: what is
    typed is not sent; ~. stops watching, ~k ends the session for a moderator)."""
    import asyncio
    import signal
    from collections.abc import Awaitable

    from tether.client.connect import load_identity
    from tether.client.escape import HELP, EscapeFilter
    from tether.client.session import ClientSession
    from tether.client.stdin import StdinReader
    from tether.client.terminal import raw_mode, stderr_line, terminal_size

    identity = load_identity(args.identity)
    session = ClientSession(identity, agent, mode, request)
    watching = mode == "watch"
    loop = asyncio.get_running_loop()
    disconnected = asyncio.Event()
    detached = ended = False
    try:
        await session.open()
        with raw_mode(0):
            if mode == "shell":  # the owner's terminal sizes the session's
                loop.add_signal_handler(signal.SIGWINCH, lambda: session.resize(*terminal_size()))
            escapes = EscapeFilter(None if args.escape == "none" else args.escape)

            def on_chunk(data: bytes) -> Awaitable[None] | None:
                if not data:
                    return None  # local input ended; keep showing output until the shell exits
                result = escapes.feed(data)
                if result.help:
                    stderr_line("\n" + HELP)
                nonlocal detached, ended
                pending = session.send_input(result.data) if result.data and not watching else None
                if result.end and watching and session.accepted.get("moderator"):
                    ended = True
                    disconnected.set()
                elif result.end:
                    stderr_line("\ntether: ~k ends the session only for its moderator "
                                "(policy require_moderator); ~. stops watching")
                if result.detach and mode != "shell":
                    stderr_line("\ntether: only the session's owner detaches; ~. leaves")
                elif result.detach and not session.accepted.get("detach_timeout"):
                    stderr_line("\ntether: this session cannot be detached: the policy's "
                                "detach_timeout for it is 0 (type ~. to disconnect)")
                elif result.detach:
                    detached = True
                    disconnected.set()
                if result.disconnect:
                    disconnected.set()
                return pending

            # fd 0 closed at startup leaves sys.stdin None, and fd 0 may be a socket now.
            reader = StdinReader(on_chunk) if sys.stdin is not None else None
            await session.wait_closed_or(disconnected)
            if reader is not None:
                reader.close()
            if mode == "shell":
                loop.remove_signal_handler(signal.SIGWINCH)
    finally:
        await session.close(detach=detached, end=ended)
    if detached:
        sid = session.sid
        minutes = int(session.accepted.get("detach_timeout", 0)) // 60
        stderr_line(f"Detached from session {sid} on {agent}; it keeps running for "
                    f"{minutes} min. Come back with: tether attach {sid}")
        return 0
    if disconnected.is_set() and mode != "shell":
        stderr_line(f"Stopped {'watching' if watching else 'taking part in'} session "
                    f"{session.sid} on {agent}" + ("; asked it to end." if ended else "."))
        return 0
    if disconnected.is_set():
        stderr_line(f"Connection to {agent} closed.")
        return 255
    if session.lost:
        stderr_line(f"tether: {session.lost}")
        return 255
    return session.exit.shell_code
