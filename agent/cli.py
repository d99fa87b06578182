"""`tether agent`: run an agent on this machine."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an agent: it dials out to the broker, announces itself, and serves shell and "
        "exec sessions that carry a valid grant. Run it as root to allow run-as other users."
    )
    parser.add_argument("--identity", required=True, metavar="FILE",
                        help="the agent's identity file (from `tether authority agent add`)")
    parser.add_argument("--client-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="end a session whose client has been silent this long (default 300; "
                        "clients send a keepalive every 30 s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_agent(args))


async def _agent(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys
    from pathlib import Path

    from tether.agent.service import AgentService

    from tether.cli import UserError
    from tether.keys import Identity, KeyFileError
    from tether.mqtt import BrokerError

    try:
        identity = Identity.load(Path(args.identity))
    except KeyFileError as exc:
        raise UserError(str(exc)) from exc
    if identity.kind != "agent":
        raise UserError(f"{args.identity} is a {identity.kind} identity, not an agent's")
    agent = AgentService(identity, client_timeout=args.client_timeout)
    try:
        await agent.start()
    except BrokerError as exc:
        raise UserError(str(exc)) from exc
    print(f"agent {identity.name!r} connected to {agent.conn.settings.address if agent.conn else '?'}",
          file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await agent.stop()
    return 0
