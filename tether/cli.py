"""The `tether` command. Subcommands are imported only when chosen, so `--help` stays fast.

Each subcommand module exposes `configure(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Protocol

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("tether.up", "start the embedded broker, authority, recorder and a local agent in one process"),
    "console": ("tether.console", "serve the web console: browser shells, inventory and audit"),
    "shell": ("tether.client.shell", "open an interactive, end-to-end encrypted shell on an agent"),
    "run": ("tether.client.run", "run one command on an agent; stdin, stdout, stderr, exit code"),
    "ls": ("tether.client.ls", "list agents with online/offline, labels, platform, last seen"),
    "sessions": ("tether.client.sessions_cli", "list recorded sessions, or terminate a live one"),
    "broker": ("tether.broker.cli", "run the embedded MQTT broker, or generate Mosquitto files"),
    "authority": ("tether.authority.cli", "run the authority, or manage users and agents"),
    "policy": ("tether.authority.policy_cli", "check and validate the access policy"),
    "agent": ("tether.agent.cli", "run an agent on this machine"),
    "login": ("tether.client.login_cli", "create your key, or finish logging in with a token"),
    "user": ("tether.client.user_cli", "register a user's key (on the authority's host)"),
    "audit": ("tether.authority.audit_cli", "list the authority's signed audit trail of decisions"),
    "recorder": ("tether.recorder.cli", "run the recorder that stores, verifies and indexes sessions"),
    "search": ("tether.recorder.search_cli", "find text that recorded sessions showed, newest first"),
    "commands": ("tether.recorder.commands_cli", "list the commands run in a recorded session"),
    "replay": ("tether.recorder.replay_cli", "replay a recorded session in this terminal"),
    "export": ("tether.recorder.export_cli", "export a recording as asciicast v2 or plain text"),
    "verify": ("tether.recorder.verify_cli", "check a stored recording's hash chain and signatures"),
    "init": ("tether.init", "create keys, registry and broker files without starting anything"),
}


class CommandModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class UserError(Exception):
    """A mistake the user can fix; printed as one line, no traceback."""


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
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
    module_name, help_ = COMMANDS[name]
    module: CommandModule = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"tether {name}", description=help_)
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    try:
        return module.run(args)
    except UserError as exc:
        print(f"tether {name}: {exc}", file=sys.stderr)
        return 255
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Stdout went away (e.g. `| head`); nothing left to tell anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # Under `python -m tether.cli` this file runs as __main__; use the one module, so the
    # UserError raised by subcommands is the class caught here.
    from tether.cli import main as _main

    sys.exit(_main())
