"""Command-line options that several commands share."""

from __future__ import annotations

import argparse


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def add_client_timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="end a session whose client has been silent this long (default 300; "
                        "clients send a keepalive every 30 s)")
