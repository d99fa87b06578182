"""`tether authority`: run the authority, or add users and agents to its registry."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tether.commands.options import add_verbose_argument
from tether.edge.process import setup_logging

if TYPE_CHECKING:
    from tether.authority.registry import Registry
    from tether.edge.home import Home
    from tether.edge.keys import Identity


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Without a subcommand, run the authority service (it answers grant requests over "
        "MQTT). `user add`, `agent add` and `recorder add` register principals and write their "
        "identity files. Grants name the registered recorder (the first by name, if several)."
    )
    add_verbose_argument(parser)
    sub = parser.add_subparsers(dest="what")
    for kind in ("user", "agent", "recorder"):
        p = sub.add_parser(kind, help=f"manage {kind}s")
        verbs = p.add_subparsers(dest="verb", required=True)
        add = verbs.add_parser("add", help=f"register a new {kind} and write its identity file")
        add.add_argument("name")
        add.add_argument("--out", required=kind != "user", metavar="FILE",
                         help="where to write the identity (0600)" + (
                             "; optional with --console (the same key, for the CLI)"
                             if kind == "user" else ""))
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
            add.add_argument("--console", action="store_true",
                             help="a web console user: the key is derived from a passphrase "
                             "(asked twice on the terminal), which the browser derives again at "
                             "login; the browser's broker login (slot NAME.c) is a one-time token "
                             "signed with that key")
            add.add_argument("--passphrase-stdin", action="store_true",
                             help="with --console: read the passphrase from the first line of stdin")
        elif kind == "agent":
            add.add_argument("--labels", default="", metavar="K=V,...", help="agent labels")
    act = sub.add_parser("activation", help="activations that let agents enrol themselves")
    act_verbs = act.add_subparsers(dest="verb", required=True)
    create = act_verbs.add_parser(
        "create", help="create an activation: an id and a code, shown once",
        description="Create an activation. A device enrols with `tether agent enrol "
        "--activation ID:CODE --broker HOST:PORT --out FILE`; it gets the labels given here.")
    create.add_argument("--labels", default="", metavar="K=V,...", help="labels for the agents it enrols")
    create.add_argument("--max", type=int, default=1, metavar="N", help="how many agents may use it (default 1)")
    create.add_argument("--expires", default="1h", metavar="DURATION",
                        help="how long it is valid: 30m, 1h, 7d (default 1h)")
    create.add_argument("--approve", action="store_true",
                        help="each enrolment waits until an administrator approves the agent's "
                        "key fingerprint with `tether authority agents approve NAME`")
    act_verbs.add_parser("list", help="list activations and how often each was used")
    agents = sub.add_parser("agents", help="agents waiting for approval")
    agent_verbs = agents.add_subparsers(dest="verb", required=True)
    agent_verbs.add_parser("pending", help="list enrolments waiting for approval, with fingerprints")
    approve = agent_verbs.add_parser("approve", help="approve a pending agent (compare its fingerprint first)")
    approve.add_argument("name")
    deny = agent_verbs.add_parser("deny", help="drop a pending enrolment")
    deny.add_argument("name")
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
    if args.what == "activation":
        return _activation(args)
    if args.what == "agents":
        return _pending(args)
    return _add(args)


def _audit(home: Home, event: str, **fields: object) -> None:
    """Administrative actions go into the authority's audit trail too."""
    import getpass

    from tether.authority.audit import AuditLog
    from tether.authority.provision import authority_identity

    AuditLog(home.root / "authority" / "audit.jsonl", authority_identity(home).signing_key).append(
        event, by=getpass.getuser(), **fields)


def _labels(text: str) -> dict[str, str]:
    from tether.commands.main import UserError

    labels: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"label {item!r} is not KEY=VALUE")
        labels[key.strip()] = value.strip()
    from tether.presence import label_problem

    problem = label_problem(labels)
    if problem is not None:
        raise UserError(f"--labels {text!r}: {problem}")
    return labels


def _pending(args: argparse.Namespace) -> int:
    import time

    from tether.authority.activations import PendingStore
    from tether.commands.main import UserError
    from tether.edge.home import Home

    home = Home.default()
    store = PendingStore.load(home.pending_enrolments)
    if args.verb == "pending":
        waiting = [p for p in store.items.values() if not p.approved]
        if not waiting:
            print("no agents are waiting for approval")
        for p in waiting:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.received))
            print(f"{p.name}  {p.fingerprint}  via {p.activation}  since {when}")
        return 0
    item = store.items.get(args.name)
    if item is None:
        raise UserError(f"no pending enrolment named {args.name!r}; `tether authority agents pending` lists them")
    if args.verb == "deny":
        del store.items[args.name]
        store.save()
        _audit(home, "enrol-denied", agent=item.name, fingerprint=item.fingerprint,
               activation=item.activation)
        print(f"dropped the pending enrolment of {args.name!r}")
        return 0
    item.approved = True
    store.save()
    _audit(home, "enrol-approved", agent=item.name, fingerprint=item.fingerprint,
           activation=item.activation)
    print(f"approved {args.name!r} ({item.fingerprint}); the authority completes the enrolment "
          "within a second. Reload the broker afterwards so it accepts the new agent.")
    return 0


def _activation(args: argparse.Namespace) -> int:
    import time

    from tether.authority.activations import Activations, create
    from tether.authority.audit import parse_since
    from tether.authority.provision import authority_identity, commit
    from tether.authority.registry import Registry
    from tether.commands.main import UserError
    from tether.edge.home import Home

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run `tether up` (or set TETHER_HOME)")
    store = Activations.load(home.activations)
    now = time.time()
    if args.verb == "list":
        for a in store.items.values():
            state = a.usable(now) or "usable"
            print(f"{a.id}  used {a.used}/{a.max}  expires {time.strftime('%Y-%m-%d %H:%M', time.localtime(a.expires))}"
                  f"  labels {a.labels}  agents {a.agents}  ({state})")
        return 0
    if args.max < 1:
        raise UserError("--max must be at least 1")
    try:
        ttl = now - parse_since(args.expires, now)
    except ValueError:
        raise UserError(f"--expires {args.expires!r}: use 30m, 1h or 7d") from None
    registry = Registry.load(home.registry)
    act = create(store, registry, _labels(args.labels), args.max, ttl, now, approval=args.approve)
    store.save()
    commit(home, registry)
    broker = authority_identity(home).broker
    print(f"Activation ID:   {act.id}\nActivation code: {act.code}\n"
          f"(valid for {args.expires}, up to {act.max} agent(s); the code is not shown again)\n\n"
          "Reload the broker so it accepts the activation: `tether broker reload` "
          "(Mosquitto: systemctl reload mosquitto). Then, on the device:\n"
          f"  tether agent enrol --activation {act.id}:{act.code} "
          f"--broker {broker.get('host', 'BROKER')}:{broker.get('port', 1883)} --out /etc/tether/agent.json")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    import time

    from tether.authority.registry import Registry
    from tether.commands.main import UserError
    from tether.edge import revocation_file
    from tether.edge.home import Home
    from tether.revocation import RevocationError

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run `tether up` (or set TETHER_HOME)")
    now = time.time()
    try:
        revs = revocation_file.load(home.revocations)
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
    revocation_file.save(home.revocations, revs)
    _audit(home, "revoked", target=args.target, name=args.name, reason=args.reason,
           serial=revs.serial)
    print(f"{args.target} {args.name!r} revoked (bulletin serial {revs.serial}); a running "
          f"authority publishes it within a second.{reload_hint}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tether.authority.policy import PolicyError, Statement, append_statement
    from tether.authority.provision import authority_identity, commit, new_principal
    from tether.authority.registry import Registry, RegistryError
    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.hostport import parse_hostport

    home = Home.default()
    if not home.authority_identity.exists():
        raise UserError(f"no authority under {home.root}; run `tether up` (or set TETHER_HOME)")
    authority = authority_identity(home)
    host, port = (parse_hostport(args.broker) if args.broker else
                  (str(authority.broker.get("host", "127.0.0.1")), int(authority.broker.get("port", 1883))))
    registry = Registry.load(home.registry)
    labels = _labels(args.labels) if args.what == "agent" else {}
    kind = args.what if args.what in ("agent", "recorder") else args.role
    console = args.what == "user" and args.console
    if args.what == "user" and not console and args.out is None:
        raise UserError("give --out FILE for the identity (or --console for a web console user)")
    if args.what == "user" and args.passphrase_stdin and not console:
        raise UserError("--passphrase-stdin goes with --console")
    try:
        if console:
            ident = _console_principal(registry, authority, args, kind, host, port)
        else:
            ident = new_principal(home, registry, authority, args.name, kind, host=host, port=port,
                                  labels=labels)
    except RegistryError as exc:
        raise UserError(str(exc)) from exc
    if args.tls_ca:
        ident.broker["tls"] = {"ca": args.tls_ca}
    out = Path(args.out) if args.out else None
    if out is not None:
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
    where = f"identity written to {out} (keep it secret)" if out else "no identity file written"
    if console:
        from tether.console_login import console_slot

        where = (f"web console login as {args.name!r} with the passphrase (broker user "
                 f"{console_slot(args.name)!r}); " + where)
    print(f"{args.what} {args.name!r} registered; {where}. "
          "Reload the broker so it accepts the new credentials: `tether broker reload`.")
    return 0


def _read_passphrase(from_stdin: bool) -> str:
    import getpass
    import sys

    from tether.commands.main import UserError
    from tether.console_login import MIN_PASSPHRASE

    if from_stdin:
        text = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UserError("no terminal to ask for the passphrase; use --passphrase-stdin")
        text = getpass.getpass("Console passphrase: ")
        if getpass.getpass("Again: ") != text:
            raise UserError("the two passphrases differ; nothing was changed")
    if len(text) < MIN_PASSPHRASE:
        raise UserError(f"the passphrase must have at least {MIN_PASSPHRASE} characters: it is "
                        "the only secret of a console login")
    return text


def _console_principal(registry: Registry, authority: Identity, args: argparse.Namespace,
                       kind: str, host: str, port: int) -> Identity:
    """Register a user whose key and broker password the browser derives from a passphrase."""
    from tether.authority.registry import Principal
    from tether.broker.passwd import hash_password
    from tether.console_login import derive
    from tether.edge.keys import Identity
    from tether.encoding import b64e

    passphrase = _read_passphrase(args.passphrase_stdin)
    keys = derive(passphrase, authority.public_key, args.name)
    registry.add(Principal(name=args.name, kind=kind, ed25519=b64e(keys.public_key),
                           mqtt_hash=hash_password(keys.mqtt_password), console=True))
    # The same key for the CLI, if --out asks for it (the CLI slots share the password).
    return Identity(name=args.name, kind=kind, signing_seed=keys.seed,
                    broker={"host": host, "port": port, "username": args.name,
                            "password": keys.mqtt_password},
                    authority=dict(authority.authority))


async def _serve() -> int:
    from tether.authority.provision import authority_identity
    from tether.authority.service import AuthorityService
    from tether.commands.main import UserError
    from tether.edge.home import Home
    from tether.edge.mqtt import BrokerError
    from tether.edge.process import until_stopped

    home = Home.default()
    service = AuthorityService(authority_identity(home), home)
    try:
        await service.start()
    except BrokerError as exc:
        raise UserError(str(exc)) from exc
    await until_stopped()
    await service.stop()
    return 0
