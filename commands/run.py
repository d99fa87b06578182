"""`tether run AGENT -- COMMAND...`: one command, no PTY; stdin, stdout, stderr, exit code."""

from __future__ import annotations

import argparse
import os
import sys

from tether.commands.shell import ENV_PASSED


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = (
        "Run COMMAND on AGENT without a terminal. Local stdin is streamed to it; its stdout "
        "and stderr arrive separately; this command exits with its exit status (128+N if a "
        "signal N killed it). Ctrl-C is forwarded once; press it twice to give up locally."
    )
    parser.usage = "tether run [options] AGENT -- COMMAND [ARG...]"
    parser.add_argument("agent", help="agent name, as listed by `tether ls`")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    parser.add_argument("--as", dest="run_as", metavar="USER", help="remote OS user")
    parser.add_argument("--reason", help="why you need access; recorded, and required by some policies")
    parser.add_argument("-n", dest="no_stdin", action="store_true",
                        help="do not read stdin (like ssh -n); the command sees end of input")
    add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tether.commands.main import UserError

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UserError("no command given. Usage: tether run AGENT -- COMMAND [ARG...]")
    args.command = command
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import time
    from collections.abc import Awaitable

    from tether.client.connect import load_identity
    from tether.client.session import ClientSession
    from tether.client.stdin import StdinReader
    from tether.frames import FrameType

    identity = load_identity(args.identity)
    request = {
        "run_as": args.run_as,
        "reason": args.reason,
        "command": args.command,
        "env": {k: os.environ[k] for k in ENV_PASSED if k in os.environ},
    }

    session = ClientSession(identity, args.agent, "exec", request)
    loop = asyncio.get_running_loop()
    aborted = asyncio.Event()
    last_interrupt = 0.0

    def on_interrupt() -> None:
        nonlocal last_interrupt
        now = time.monotonic()
        if now - last_interrupt < 2.0 or session.channel is None:
            aborted.set()
            return
        last_interrupt = now
        session.send(FrameType.SIGNAL, bytes((signal.SIGINT,)))

    try:
        await session.open()
        loop.add_signal_handler(signal.SIGINT, on_interrupt)

        def on_chunk(data: bytes) -> Awaitable[None] | None:
            if not data:
                session.send(FrameType.EOF)
                return None
            return session.send_input(data)

        # With fd 0 closed at startup, Python leaves sys.stdin None and fd 0 may be reused
        # by a socket: never read it then.
        reader = None
        if args.no_stdin or sys.stdin is None:
            session.send(FrameType.EOF)
        else:
            reader = StdinReader(on_chunk)
        await session.wait_closed_or(aborted)
        if reader is not None:
            reader.close()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await session.close()
    if aborted.is_set():
        print("tether: interrupted; the remote command may still be running", file=sys.stderr)
        return 130
    if session.lost:
        print(f"tether: {session.lost}", file=sys.stderr)
        return 255
    return session.exit.shell_code
