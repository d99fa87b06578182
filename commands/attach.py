"""`tether attach [SID]`: take over one of your live shell sessions from here (the code is
shared with `tether watch` and `tether join`, in commands/watch.py)."""

from __future__ import annotations

import argparse

from tether.commands.watch import configure_reader, run_reader


def configure(parser: argparse.ArgumentParser) -> None:
    configure_reader(parser, "attach")


def run(args: argparse.Namespace) -> int:
    return run_reader(args, "attach")
