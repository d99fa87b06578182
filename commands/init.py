"""`tether init`: create the authority, a user for you and an agent identity, without
starting anything. For deployments where the broker is not the embedded one."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Create keys, the registry, a policy and the broker's passwd and acl files under "
        "$TETHER_HOME (default ~/.local/state/tether), for a broker at --broker. Safe to run "
        "again: existing keys are kept. `tether up` does this by itself on first run."
    )
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                        help="the broker every identity dials (default 127.0.0.1:1883)")
    parser.add_argument("--agent", default="local", metavar="NAME",
                        help="name of the agent for this machine (default local)")


def run(args: argparse.Namespace) -> int:
    from tether.authority.provision import ensure_local_setup
    from tether.edge.home import Home
    from tether.hostport import parse_hostport

    home = Home.default()
    host, port = parse_hostport(args.broker)
    setup = ensure_local_setup(home, host, port, args.agent)
    print(
        f"{'created' if setup.created else 'reused'} tether state in {home.root}\n"
        f"  authority, user {setup.user.name!r}, agent {args.agent!r}; broker files in {home.broker_files}\n"
        "Next, for Mosquitto (see docs/operations.md):\n"
        "  tether broker mosquitto-files --out /etc/tether/broker\n"
        "  mosquitto -c mosquitto.conf        # this repository's file\n"
        f"  tether up --broker {host}:{port}"
    )
    return 0
