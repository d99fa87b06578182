"""`tether agent`: run an agent on this machine."""

from __future__ import annotations

import argparse

from tether.process_runtime import add_client_timeout_argument, add_verbose_argument, setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an agent: it dials out to the broker, announces itself, and serves shell and "
        "exec sessions that carry a valid grant. Run it as root to allow run-as other users."
    )
    parser.add_argument("--identity", required=True, metavar="FILE",
                        help="the agent's identity file (from `tether authority agent add`)")
    add_client_timeout_argument(parser)
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    setup_logging(args.verbose)
    return asyncio.run(_agent(args))


async def _agent(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tether.agent.service import AgentService

    from tether.cli import UserError
    from tether.keys import Identity, KeyFileError
    from tether.mqtt import BrokerError
    from tether.process_runtime import until_stopped

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
    await until_stopped()
    await agent.stop()
    return 0
