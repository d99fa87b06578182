"""What every long-running tether process shares: logging and stopping on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable


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
