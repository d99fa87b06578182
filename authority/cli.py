"""`tether authority`: run the authority, or add users and agents to its registry."""

from __future__ import annotations

import argparse

from tether.process_runtime import add_verbose_argument, setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Without a subcommand, run the authority service (it answers grant requests over "
        "MQTT). `user add` and `agent add` register principals and write their identity files."
    )
    add_verbose_argument(parser)
    sub = parser.add_subparsers(dest="what")
    for kind in ("user", "agent"):
        p = sub.add_parser(kind, help=f"manage {kind}s")
        verbs = p.add_subparsers(dest="verb", required=True)
        add = verbs.add_parser("add", help=f"register a new {kind} and write its identity file")
        add.add_argument("name")
        add.add_argument("--out", required=True, metavar="FILE", help="where to write the identity (0600)")
        add.add_argument("--broker", metavar="HOST:PORT", help="broker address the identity dials "
                         "(default: the one in the authority's own identity)")
        add.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA "
                         "certificate file (path as seen on the machine that will use the identity)")
        if kind == "user":
            add.add_argument("--allow", action="append", default=[], metavar="AGENT",
                             help="allow shell and exec on AGENT (glob); repeatable")
            add.add_argument("--run-as", action="append", default=[], metavar="USER",
                             help="OS users the --allow statement permits; repeatable "
                             "(default: an OS user with the same name)")
            add.add_argument("--role", choices=["user", "admin"], default="user",
                             help="broker role; admin may read every topic (for operators' tooling)")
        else:
            add.add_argument("--labels", default="", metavar="K=V,...", help="agent labels")
    revoke = sub.add_parser("revoke", help="revoke a user, an agent or a grant (signed bulletin)")
    revoke.add_argument("target", choices=["user", "agent", "grant"])
    revoke.add_argument("name", help="user or agent name, or the grant's jti")
    revoke.add_argument("--reason", help="why; shown to the users whose sessions it closes")


def run(args: argparse.Namespace) -> int:
    import asyncio

    setup_logging(args.verbose)
    if args.what is None:
        return asyncio.run(_serve())
    if args.what == "revoke":
        return _revoke(args)
    return _add(args)


def _revoke(args: argparse.Namespace) -> int:
    import time

    from tether.authority.registry import Registry

    from tether.cli import UserError
    from tether.home import Home
    from tether.revocation import RevocationError, Revocations

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run `tether up` (or set TETHER_HOME)")
    now = time.time()
    try:
        revs = Revocations.load(home.revocations)
    except RevocationError as exc:
        raise UserError(str(exc)) from exc
    entry: dict[str, object] = {"at": now}
    if args.reason:
        entry["reason"] = args.reason
    reload_hint = ""
    if args.target == "grant":
        # A grant lives at most 10 minutes; keep the jti that long, then let it drop out.
        revs.grants[args.name] = dict(entry, exp=now + 600)
    else:
        registry = Registry.load(home.registry)
        principal = registry.principals.get(args.name)
        kinds = ("agent",) if args.target == "agent" else ("user", "admin")
        if principal is None or principal.kind not in kinds:
            if args.name not in (revs.agents if args.target == "agent" else revs.users):
                raise UserError(f"no {args.target} named {args.name!r} in the registry")
        else:
            entry["ed25519"] = principal.ed25519
            registry.remove(args.name)
            registry.save()
            registry.write_broker_files(home.broker_files)
            reload_hint = (" Its broker credentials are removed; run `tether broker reload` to "
                           "disconnect it.")
        bucket = revs.agents if args.target == "agent" else revs.users
        bucket[args.name] = dict(bucket.get(args.name, {}), **entry)
    revs.bump(now)
    revs.save(home.revocations)
    print(f"{args.target} {args.name!r} revoked (bulletin serial {revs.serial}); a running "
          f"authority publishes it within a second.{reload_hint}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tether.authority.policy import PolicyError, Statement, append_statement
    from tether.authority.provision import authority_identity, commit, new_principal
    from tether.authority.registry import Registry, RegistryError

    from tether.cli import UserError
    from tether.home import Home
    from tether.up import parse_hostport

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run `tether up` (or set TETHER_HOME)")
    authority = authority_identity(home)
    host, port = (parse_hostport(args.broker) if args.broker else
                  (str(authority.broker.get("host", "127.0.0.1")), int(authority.broker.get("port", 1883))))
    registry = Registry.load(home.registry)
    labels: dict[str, str] = {}
    if args.what == "agent" and args.labels:
        for item in args.labels.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"label {item!r} is not KEY=VALUE")
            labels[key.strip()] = value.strip()
    kind = "agent" if args.what == "agent" else args.role
    try:
        ident = new_principal(home, registry, authority, args.name, kind, host=host, port=port,
                              labels=labels)
    except RegistryError as exc:
        raise UserError(str(exc)) from exc
    if args.tls_ca:
        ident.broker["tls"] = {"ca": args.tls_ca}
    out = Path(args.out)
    ident.save(out)
    commit(home, registry)
    if args.what == "user" and args.allow:
        try:
            append_statement(home.policy, Statement(
                id=f"{args.name}-allow", users=[args.name], agents=list(args.allow),
                actions=["shell", "exec"], run_as=list(args.run_as) or [args.name],
            ), comment=f"written by `tether authority user add {args.name} --allow ...`")
        except PolicyError as exc:
            raise UserError(f"{args.name} is registered, but the policy was not changed:\n"
                            + "\n".join(exc.format())) from exc
    print(f"{args.what} {args.name!r} registered; identity written to {out} (keep it secret). "
          "Reload the broker so it accepts the new credentials: `tether broker reload`.")
    return 0


async def _serve() -> int:
    from tether.authority.provision import authority_identity
    from tether.authority.service import AuthorityService

    from tether.cli import UserError
    from tether.home import Home
    from tether.mqtt import BrokerError
    from tether.process_runtime import until_stopped

    home = Home.default()
    service = AuthorityService(authority_identity(home), home)
    try:
        await service.start()
    except BrokerError as exc:
        raise UserError(str(exc)) from exc
    await until_stopped()
    await service.stop()
    return 0
