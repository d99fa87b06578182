"""The embedded broker on a thread of the test process, for tests that set its limits or
look at its state (a broker process cannot be inspected)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from tether.broker.embedded import BrokerLimits, EmbeddedBroker


@contextlib.contextmanager
def embedded_broker(files: Path, limits: BrokerLimits) -> Iterator[EmbeddedBroker]:
    """A started EmbeddedBroker on 127.0.0.1 (a free port: ``.port``), stopped afterwards."""
    broker = EmbeddedBroker(files, port=0, limits=limits)
    started = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []
    errors: list[BaseException] = []

    async def serve() -> None:
        stop = asyncio.Event()
        loop_box.append(asyncio.get_running_loop())
        stop_box.append(stop)
        try:
            await broker.start()
        except BaseException as exc:
            errors.append(exc)
            started.set()
            raise
        started.set()
        try:
            await stop.wait()
        finally:
            await broker.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10) or errors:
        raise RuntimeError(f"the embedded broker did not start: {errors}")
    try:
        yield broker
    finally:
        loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(10)
