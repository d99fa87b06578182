"""The `tether` command. Subcommands are imported only when chosen, so `--help` stays fast.

Each subcommand module exposes `configure(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Protocol

from tether.errors import TetherError

# name -> one-line help, in the order --help shows them. `tether NAME` is the module
# tether.commands.NAME, imported only when chosen.
COMMANDS: dict[str, str] = {
    "up": "start the embedded broker, authority, recorder and a local agent in one process",
    "console": "serve the web console: browser shells, inventory and audit",
    "shell": "open an interactive, end-to-end encrypted shell on an agent",
    "run": "run one command on an agent; stdin, stdout, stderr, exit code",
    "attach": "take over one of your live shell sessions (after ~d, a lost link, elsewhere)",
    "watch": "watch a live session read-only (policy action `watch`)",
    "join": "join a live shell session as a second writer (policy action `join`)",
    "ls": "list agents with online/offline, labels, platform, last seen",
    "sessions": "list recorded sessions (--live: your live ones to attach), or terminate one",
    "broker": "run the embedded MQTT broker, or generate Mosquitto files",
    "authority": "run the authority, or manage users and agents",
    "policy": "check and validate the access policy",
    "agent": "run an agent on this machine",
    "login": "create your key, or finish logging in with a token",
    "user": "register a user's key (on the authority's host)",
    "audit": "list the authority's signed audit trail of decisions",
    "recorder": "run the recorder that stores, verifies and indexes sessions",
    "search": "find text that recorded sessions showed, newest first",
    "commands": "list the commands run in a recorded session",
    "replay": "replay a recorded session in this terminal",
    "export": "export a recording as asciicast v2 or plain text",
    "verify": "check a stored recording's hash chain and signatures",
    "init": "create keys, registry and broker files without starting anything",
}


class CommandModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class UserError(TetherError):
    """A mistake on the command line the user can fix; printed as one line, no traceback.
    Raised by command modules only: library code raises its own TetherError subclasses."""


# Options whose values are base64url keys: a key may begin with "-", which argparse would
# take for an option ("expected one argument"), so `--key -AbC` is glued to `--key=-AbC`.
KEY_OPTIONS = frozenset({"--key", "--authority-key"})


def glue_key_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            out.append(arg)
            out.extend(rest)
            break
        if arg in KEY_OPTIONS:
            value = next(rest, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {help_}" for name, help_ in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="tether",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="tether: outbound-only, end-to-end encrypted shells over MQTT.",
        usage="tether COMMAND [options]",
        epilog=f"commands:\n{lines}\n\nStart here: `tether up`, then follow the printed next step.\n"
        "Run `tether COMMAND --help` for the options of one command.",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from tether import __version__

        print(f"tether {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"tether: unknown command {name!r}. Run `tether --help` for the list.", file=sys.stderr)
        return 2
    if os.environ.get("TETHER_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)d %(name)s %(message)s")
    help_ = COMMANDS[name]
    module: CommandModule = importlib.import_module(f"tether.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"tether {name}", description=help_)
    module.configure(parser)
    args = parser.parse_args(glue_key_values(argv[1:]))
    try:
        return module.run(args)
    except TetherError as exc:
        print(f"tether {name}: {exc}", file=sys.stderr)
        return 255
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Stdout went away (e.g. `| head`); nothing left to tell anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # Under `python -m tether.commands.main` this file runs as __main__; use the one module, so the
    # UserError raised by subcommands is the class caught here.
    from tether.commands.main import main as _main

    sys.exit(_main())
