"""Command-line options that several commands share."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def add_client_timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="end a session whose client has been silent this long (default 300; "
                        "clients send a keepalive every 30 s)")


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR",
                        help="the recordings directory (default $TETHER_HOME/recordings)")


def store_dir(args: argparse.Namespace) -> Path:
    """The recording store the command works on: --store, else $TETHER_HOME's."""
    from tether.edge.home import Home

    store = getattr(args, "store", None)
    return Path(store).expanduser() if store else Home.default().recordings


def open_store(store: Path) -> sqlite3.Connection:
    """The store's database, for reading; a clear error when there is none."""
    from tether.commands.main import UserError
    from tether.recorder.db import connect

    try:
        return connect(store, create=False)
    except FileNotFoundError:
        raise UserError(f"no recordings under {store}: the recorder stores them there "
                        "(`tether up` runs one), or give the store with --store") from None
