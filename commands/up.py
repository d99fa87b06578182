"""`tether up`: broker, authority and a local agent in one process, zero setup."""

from __future__ import annotations

import argparse

from tether.commands.options import add_client_timeout_argument, add_verbose_argument
from tether.edge.process import setup_logging
from tether.hostport import format_hostport, parse_hostport


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start, in one process, the embedded MQTT broker (on loopback, with a websocket "
        "listener for the browser), the authority, the recorder (its screen indexer runs as a "
        "child process), an agent for this machine and the web console. State and keys live "
        "under $TETHER_HOME (default ~/.local/state/tether) and are created on the first run. "
        "Stop with Ctrl-C."
    )
    parser.add_argument("--listen", default="127.0.0.1:1883", metavar="HOST:PORT",
                        help="where the embedded broker listens (default 127.0.0.1:1883)")
    parser.add_argument("--broker", metavar="HOST:PORT",
                        help="use this running broker (e.g. Mosquitto) instead of the embedded one")
    parser.add_argument("--ws-listen", default="127.0.0.1:8083", metavar="HOST:PORT",
                        help="the embedded broker's websocket listener for the browser console "
                        "(default 127.0.0.1:8083); with --broker, where that broker's websocket "
                        "listener is, for the console's configuration")
    parser.add_argument("--console-listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where to serve the web console (default 127.0.0.1:8080)")
    parser.add_argument("--no-console", action="store_true",
                        help="do not serve the web console (the websocket listener stays)")
    parser.add_argument("--agent", default="local", metavar="NAME",
                        help="name of the agent for this machine (default local)")
    parser.add_argument("--no-agent", action="store_true", help="do not run an agent here")
    parser.add_argument("--no-recorder", action="store_true",
                        help="do not run the recorder here (run `tether recorder` elsewhere; "
                        "sessions whose policy requires recording are refused without one)")
    add_client_timeout_argument(parser)
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    setup_logging(args.verbose)
    return asyncio.run(_up(args))


async def _up(args: argparse.Namespace) -> int:
    import os
    import sys

    from tether.agent.replay_state import replay_state_file
    from tether.agent.service import AgentService
    from tether.authority.provision import ensure_local_setup
    from tether.authority.service import AuthorityService
    from tether.client.console_server import (
        ConsoleServer,
        check_dist,
        console_config,
        dist_dir,
        listen_error,
    )
    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.edge.mqtt import BrokerError
    from tether.edge.process import until_stopped
    from tether.topics import DEFAULT_PREFIX

    home = Home.default()
    host, port = parse_hostport(args.broker or args.listen)
    ws_host, ws_port = parse_hostport(args.ws_listen, 8083)
    if not args.broker and ws_host != host:
        raise UserError("--ws-listen must use the same host as --listen")
    bundle_missing = None
    if not args.no_console:
        try:
            check_dist(dist_dir())
        except UserError as exc:
            bundle_missing = str(exc)
    setup = ensure_local_setup(home, host, port, None if args.no_agent else args.agent)
    recorder = None
    broker = None
    console = None
    if not args.broker:
        from tether.broker.embedded import EmbeddedBroker

        broker = EmbeddedBroker(home.broker_files, host=host, port=port, ws_port=ws_port)
        try:
            await broker.start()
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} or (websockets) {ws_host}:{ws_port} "
                f"({exc.strerror or exc}). Is `tether up` already running? Pick other addresses "
                "with --listen and --ws-listen, or use a running broker with --broker."
            ) from None
        ws_port = broker.ws_port or ws_port
    if not args.no_console and bundle_missing is None:
        console = ConsoleServer(dist_dir(), console_config(
            f"ws://{format_hostport(ws_host, ws_port)}", setup.authority.authority, DEFAULT_PREFIX),
            *parse_hostport(args.console_listen, 8080))
        try:
            await console.start()
        except OSError as exc:
            if broker is not None:
                await broker.stop()
            raise UserError(listen_error(
                "the web console", console.host, console.port, exc,
                "Pick another address with --console-listen, or pass --no-console.")) from None
    authority = AuthorityService(setup.authority, home,
                                 on_principals_changed=broker.reload if broker is not None else None)
    agent = (AgentService(setup.agent, client_timeout=args.client_timeout,
                          replay_file=replay_state_file(home.agent_identity(args.agent)))
             if setup.agent is not None else None)
    if broker is not None:
        (home.broker_files / "broker.pid").write_text(f"{os.getpid()}\n")
    try:
        await authority.start()
        if not args.no_recorder:
            from tether.commands.recorder import start_recorder

            recorder = await start_recorder(home.recorder_identity(), home.recordings)
        if agent is not None:
            await agent.start()
    except BrokerError as exc:
        if console is not None:
            await console.stop()
        if broker is not None:
            await broker.stop()
        raise UserError(str(exc)) from exc
    where = f"embedded broker on {host}:{port}" if broker else f"broker at {host}:{port}"
    lines = [
        f"tether is up: {where}, authority, " + ("recorder, " if recorder else "")
        + (f"agent {args.agent!r}." if agent else "no agent."),
        f"State: {home.root}" + (" (created now)" if setup.created else ""),
    ]
    if console is not None:
        lines.append(f"Web console: {console.url} (log in as a user added with "
                     "`tether authority user add NAME --console`)")
    elif bundle_missing is not None:
        lines.append(f"Web console: not served; {bundle_missing}")
    lines += [
        "",
        "Next, in another terminal:",
        f"  tether shell {args.agent}" if agent else "  tether ls",
        "",
        "Stop with Ctrl-C.",
    ]
    if os.environ.get("TETHER_HOME"):
        lines.insert(lines.index("Next, in another terminal:") + 1,
                     f"  export TETHER_HOME={home.root}")
    print("\n".join(lines), flush=True)
    await until_stopped(broker.reload if broker is not None else None)
    print("tether: stopping", file=sys.stderr)
    if agent is not None:
        await agent.stop()
    if recorder is not None:
        from tether.commands.recorder import stop_recorder

        await stop_recorder(recorder)
    await authority.stop()
    if console is not None:
        await console.stop()
    if broker is not None:
        await broker.stop()
        (home.broker_files / "broker.pid").unlink(missing_ok=True)
    return 0
