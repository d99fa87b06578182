"""`tether console`: serve the web console (tether.client.console_server) on its own."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from tether.client.console_server import (
    DEFAULT_LISTEN,
    DEFAULT_WS_LISTEN,
    ConsoleServer,
    check_dist,
    console_config,
    dist_dir,
    listen_error,
    ws_source,
)
from tether.commands.main import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the web console: a static page that logs in with a passphrase (see `tether "
        "authority user add NAME --console`), talks MQTT over the broker's websocket listener "
        "and encrypts every session end to end in the browser. Serves on loopback by default; "
        "put a TLS-terminating reverse proxy in front to offer it on a network."
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"where to serve the page (default {DEFAULT_LISTEN})")
    parser.add_argument("--ws-url", metavar="URL",
                        help="the broker's websocket listener as the browser reaches it "
                        f"(default ws://{DEFAULT_WS_LISTEN})")
    parser.add_argument("--dist", metavar="DIR", type=Path,
                        help="serve this bundle instead of the installed one (or set "
                        "$TETHER_CONSOLE_DIST, which `tether up` follows too)")


def authority_keys() -> dict[str, str]:
    """The authority's public keys, from $TETHER_HOME (the authority's or the user's identity)."""
    from tether.edge.home import Home
    from tether.edge.keys import Identity, KeyFileError

    home = Home.default()
    for path in (home.authority_identity, home.user_identity):
        try:
            keys = Identity.load(path).authority
        except (KeyFileError, OSError, ValueError):
            continue
        if keys.get("ed25519") and keys.get("x25519"):
            return {"ed25519": keys["ed25519"], "x25519": keys["x25519"]}
    raise UserError(f"no authority keys under {home.root}; run `tether up` or `tether init` "
                    "first (or set TETHER_HOME)")


def run(args: argparse.Namespace) -> int:
    from tether.edge.process import setup_logging

    setup_logging(False)
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from tether.edge.process import until_stopped
    from tether.hostport import parse_hostport
    from tether.topics import DEFAULT_PREFIX

    dist = args.dist or dist_dir()
    check_dist(dist)
    host, port = parse_hostport(args.listen, 8080)
    ws_url = args.ws_url or f"ws://{DEFAULT_WS_LISTEN}"
    try:
        ws_source(ws_url)
    except ValueError as exc:
        raise UserError(f"--ws-url: {exc}; give the broker's websocket listener as "
                        "ws://HOST:PORT or wss://HOST[:PORT][/PATH]") from None
    server = ConsoleServer(dist, console_config(ws_url, authority_keys(), DEFAULT_PREFIX),
                           host, port)
    try:
        await server.start()
    except OSError as exc:
        raise UserError(listen_error("the console", host, port, exc,
                                     "Pick another address with --listen.")) from None
    print(f"web console at {server.url} (broker websocket {ws_url}); stop with Ctrl-C", flush=True)
    await until_stopped()
    await server.stop()
    return 0
