"""`tether agent`: run an agent on this machine."""

from __future__ import annotations

import argparse

from tether.commands.options import add_client_timeout_argument, add_verbose_argument
from tether.edge.process import setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an agent: it dials out to the broker, announces itself, and serves shell and "
        "exec sessions that carry a valid grant. Run it as root to allow run-as other users."
    )
    parser.add_argument("--identity", metavar="FILE",
                        help="the agent's identity file (from `tether agent enrol` or "
                        "`tether authority agent add`); required to run the agent")
    add_client_timeout_argument(parser)
    add_verbose_argument(parser)
    sub = parser.add_subparsers(dest="what")
    enrol = sub.add_parser(
        "enrol", aliases=["enroll"], help="enrol this machine with an activation and write its identity file",
        description="Generate this agent's keys here, prove knowledge of the activation code "
        "to the authority (the code itself is never sent), and write the identity file that "
        "`tether agent --identity FILE` runs with.")
    enrol.add_argument("--activation", required=True, metavar="ID:CODE",
                        help="from `tether authority activation create`")
    enrol.add_argument("--broker", required=True, metavar="HOST:PORT", help="the MQTT broker")
    enrol.add_argument("--name", help="agent name (default: this host's name)")
    enrol.add_argument("--out", metavar="FILE",
                        help="identity file to write, 0600 (default: $TETHER_HOME/agent.json)")
    enrol.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA")
    sub.add_parser(
        "rotate", help="replace this agent's keys (stop the agent first)",
        description="Replace the agent's Ed25519 and X25519 keys in --identity FILE. The "
        "authority accepts the change because the old key signs the request and the new key "
        "signs the change. Stop the agent first (it shares the broker connection name), "
        "start it again afterwards.")
    enrol.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                        help="how long to wait for an administrator's approval, when the "
                        "activation requires one (default 600)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tether.commands.main import UserError

    setup_logging(args.verbose)
    if args.what in ("enrol", "enroll"):  # argparse gives the alias as typed
        return asyncio.run(_enrol(args))
    if args.what == "rotate":
        from pathlib import Path

        from tether.commands.login import rotate_identity

        if not args.identity:
            raise UserError("tether agent --identity FILE rotate")
        return asyncio.run(rotate_identity(Path(args.identity)))
    if not args.identity:
        raise UserError("--identity FILE is required to run the agent (or use `tether agent enrol`)")
    return asyncio.run(_agent(args))


async def _enrol(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tether.agent.enrol import enrol
    from tether.agent.naming import default_name
    from tether.commands.main import UserError
    from tether.hostport import parse_hostport

    activation, sep, code = args.activation.partition(":")
    if not sep or not code:
        raise UserError("--activation must be ID:CODE, as printed by `tether authority activation create`")
    host, port = parse_hostport(args.broker)
    from tether.edge.home import Home

    out = Path(args.out) if args.out else Home.default().root / "agent.json"
    if out.exists():
        raise UserError(f"{out} already exists; this machine is enrolled (use --out for another file)")
    ident = await enrol(activation, code, host, port, args.name or default_name(), out, args.tls_ca,
                         approval_wait=args.wait)
    labels = ",".join(f"{k}={v}" for k, v in sorted(ident.labels.items())) or "none"
    print(f"enrolled as agent {ident.name!r} (labels: {labels}); identity written to {out}.\n"
          f"Start it with: tether agent --identity {out}")
    return 0


async def _agent(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tether.agent.replay_state import replay_state_file
    from tether.agent.service import AgentService
    from tether.commands.main import UserError
    from tether.edge.keys import Identity, KeyFileError
    from tether.edge.mqtt import BrokerError
    from tether.edge.process import until_stopped

    try:
        identity = Identity.load(Path(args.identity))
    except KeyFileError as exc:
        raise UserError(str(exc)) from exc
    if identity.kind != "agent":
        raise UserError(f"{args.identity} is a {identity.kind} identity, not an agent's")
    agent = AgentService(identity, client_timeout=args.client_timeout,
                         replay_file=replay_state_file(Path(args.identity)))
    try:
        await agent.start()
    except BrokerError as exc:
        raise UserError(str(exc)) from exc
    print(f"agent {identity.name!r} connected to {agent.conn.settings.address if agent.conn else '?'}",
          file=sys.stderr, flush=True)
    await until_stopped()
    await agent.stop()
    return 0
