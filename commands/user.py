"""`tether user add` (on the authority's host): register a key made with `tether login` and
print the one-time token that completes the user's identity file (see tether.commands.login)."""

from __future__ import annotations

import argparse
import base64

from tether.commands.login import TOKEN_PREFIX


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Register users whose keys were made with `tether login` (on the authority's host)."
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="register a user's public key and print their login token")
    add.add_argument("name")
    add.add_argument("--key", required=True, help="the public key `tether login` printed")
    add.add_argument("--group", action="append", default=[], help="a group the user belongs to; repeatable")
    add.add_argument("--broker", metavar="HOST:PORT",
                     help="broker address the user dials (default: the authority's)")
    add.add_argument("--tls-ca", metavar="FILE", help="CA certificate path on the user's machine")


def run(args: argparse.Namespace) -> int:
    from tether.authority.provision import authority_identity, commit
    from tether.authority.registry import Principal, Registry, RegistryError, new_mqtt_password
    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.encoding import b64d, dumps
    from tether.hostport import parse_hostport

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run this where the authority runs")
    try:
        if len(b64d(args.key)) != 32:
            raise ValueError
    except ValueError:
        raise UserError("--key is not a public key printed by `tether login`") from None
    authority = authority_identity(home)
    host, port = (parse_hostport(args.broker) if args.broker else
                  (str(authority.broker.get("host", "127.0.0.1")), int(authority.broker.get("port", 1883))))
    registry = Registry.load(home.registry)
    password, hashed = new_mqtt_password()
    try:
        registry.add(Principal(name=args.name, kind="user", ed25519=args.key, mqtt_hash=hashed,
                               groups=list(args.group)))
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    commit(home, registry)
    broker: dict[str, object] = {"host": host, "port": port, "username": args.name, "password": password}
    if args.tls_ca:
        broker["tls"] = {"ca": args.tls_ca}
    token = base64.urlsafe_b64encode(dumps({"name": args.name, "key": args.key, "broker": broker,
                                            "authority": authority.authority})).decode().rstrip("=")
    groups = ", ".join(args.group) or "no groups"
    print(f"user {args.name!r} registered ({groups}). Reload the broker (`tether broker reload`, or "
          "systemctl reload mosquitto), then send the user this line over a channel you trust "
          "(it holds their broker password):\n\n"
          f"  tether login --token {TOKEN_PREFIX}{token}")
    return 0
