"""What every long-running tether process shares: logging and stopping on a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def add_client_timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="end a session whose client has been silent this long (default 300; "
                        "clients send a keepalive every 30 s)")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not verbose:
        # amqtt logs client disconnects and bind failures with tracebacks; we report those.
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


async def until_stopped(on_reload: Callable[[], None] | None = None) -> None:
    """Wait for SIGINT or SIGTERM; call on_reload on SIGHUP."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    await stop.wait()
