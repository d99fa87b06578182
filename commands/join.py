"""`tether join SID`: take part in a live shell session as a second writer."""

from __future__ import annotations

import argparse

from tether.commands.watch import configure_reader, run_reader


def configure(parser: argparse.ArgumentParser) -> None:
    configure_reader(parser, "join")


def run(args: argparse.Namespace) -> int:
    return run_reader(args, "join")
