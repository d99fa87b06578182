"""`tether recorder`: run the recorder service."""

from __future__ import annotations

import argparse
from pathlib import Path

from tether.commands.options import add_store_argument, add_verbose_argument, store_dir
from tether.edge.process import setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the recorder: it dials out to the broker, receives every session's recorder "
        "stream (sealed to its key by the agent), stores it durably before acknowledging, "
        "verifies the agent's hash chain, and indexes the reconstructed screens for "
        "`tether search`. `tether up` runs one; run this on its own host in production, with "
        "an identity from `tether authority recorder add NAME --out FILE`."
    )
    parser.add_argument("--identity", metavar="FILE", type=Path,
                        help="the recorder's identity file (default: the one `tether up` "
                        "created under $TETHER_HOME/recorders/)")
    add_store_argument(parser)
    parser.add_argument("--agent-grace", type=float, default=90.0, metavar="SECONDS",
                        help="how long an agent may be cut off from the broker before its open "
                        "recordings are marked aborted (default 90: its sessions resume if it "
                        "comes back within that time; a restarted agent aborts them at once)")
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio

    setup_logging(args.verbose)
    return asyncio.run(_serve(args))


async def start_recorder(identity_path: Path, store: Path,
                         agent_grace: float | None = None) -> tuple[object, object]:
    """Start the service and its index worker; return both for `stop_recorder`."""
    from tether.edge.keys import Identity
    from tether.recorder.index_process import IndexProcess
    from tether.recorder.service import RecorderService

    identity = Identity.load(identity_path)
    indexer = IndexProcess(store)
    indexer.start()
    service = RecorderService(identity, store, indexer=indexer)
    if agent_grace is not None:
        service.agent_grace = agent_grace
    try:
        await service.start()
    except BaseException:
        indexer.stop()
        raise
    return service, indexer


async def stop_recorder(parts: tuple[object, object]) -> None:
    from tether.recorder.index_process import IndexProcess
    from tether.recorder.service import RecorderService

    service, indexer = parts
    assert isinstance(service, RecorderService) and isinstance(indexer, IndexProcess)
    await service.stop()
    indexer.stop()


async def _serve(args: argparse.Namespace) -> int:
    import sys

    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.edge.keys import KeyFileError
    from tether.edge.mqtt import BrokerError
    from tether.edge.process import until_stopped

    home = Home.default()
    identity = args.identity or home.recorder_identity()
    if not identity.exists():
        raise UserError(f"no recorder identity at {identity}; create one with `tether authority "
                        "recorder add NAME --out FILE` and pass --identity FILE")
    store = store_dir(args)
    try:
        if not args.agent_grace >= 0:
            raise UserError("--agent-grace must be a number of seconds, 0 or more")
        parts = await start_recorder(identity, store, args.agent_grace)
    except (BrokerError, KeyFileError) as exc:
        raise UserError(str(exc)) from exc
    print(f"recorder is up; storing recordings in {store}", flush=True)
    await until_stopped()
    print("tether recorder: stopping", file=sys.stderr)
    await stop_recorder(parts)
    return 0
