"""`tether login` (on the user's machine) and `tether user add` (on the authority's host).

The user's private key is made on the user's machine and never leaves it:
1. `tether login --name alice` creates the key (0600) and prints its public half;
2. an administrator runs `tether user add alice --key PUBLIC --group ops`, which registers
   it and prints a one-time `tether login --token ...` line with the broker credentials;
3. the user runs that line, which completes the identity file.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

TOKEN_PREFIX = "tether1:"


def configure_login(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Create your key on this machine (it never leaves it), or complete your identity "
        "with the token an administrator gives you after `tether user add`."
    )
    parser.add_argument("--name", help="your user name (first step)")
    parser.add_argument("--token", help="the token from `tether user add` (second step)")
    parser.add_argument("--rotate", action="store_true",
                        help="replace your key with a new one; the authority accepts the change "
                        "because both the old and the new key sign it")
    parser.add_argument("--identity", metavar="FILE",
                        help="identity file (default: $TETHER_IDENTITY, else $TETHER_HOME/user.json)")


def _identity_path(arg: str | None) -> Path:
    import os

    from tether.home import Home

    return Path(arg or os.environ.get("TETHER_IDENTITY") or Home.default().user_identity)


def run_login(args: argparse.Namespace) -> int:
    from tether.cli import UserError
    from tether.encoding import b64e, loads
    from tether.keys import Identity, KeyFileError
    from tether.topics import valid_name

    path = _identity_path(args.identity)
    if args.rotate:
        import asyncio

        return asyncio.run(rotate_identity(path))
    if args.token:
        try:
            ident = Identity.load(path)
        except KeyFileError as exc:
            raise UserError(f"{exc}. Run `tether login --name NAME` first.") from None
        text = args.token.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise UserError("that is not a tether login token (it starts with 'tether1:')")
        try:
            doc = loads(base64.urlsafe_b64decode(text[len(TOKEN_PREFIX):] + "=" * (-len(text) % 4)))
            if doc["name"] != ident.name or doc["key"] != b64e(ident.public_key):
                raise UserError(f"this token is for {doc['name']!r} with another key, not for {path}")
            ident.broker = dict(doc["broker"])
            ident.authority = dict(doc["authority"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError("the token is damaged; copy it again in one piece") from exc
        ident.save(path)
        print(f"logged in as {ident.name!r}; your identity is {path}. Try: tether ls")
        return 0
    if not args.name or not valid_name(args.name):
        raise UserError("give your user name: tether login --name NAME (letters, digits, '-', '_', '.')")
    if path.exists():
        raise UserError(f"{path} already exists; use --identity FILE for another identity")
    ident = Identity.generate(args.name, "user")
    ident.save(path)
    print(f"Created your key in {path} (0600). Ask an administrator to run:\n\n"
          f"  tether user add {args.name} --key {b64e(ident.public_key)}\n\n"
          "then run the `tether login --token ...` line they send you.")
    return 0


async def rotate_identity(path: Path) -> int:
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    from tether.authz import rotation_message
    from tether.cli import UserError
    from tether.client.connect import GrantRequester, acquire_slot, connect
    from tether.display import safe
    from tether.encoding import b64e
    from tether.keys import Identity, KeyFileError
    from tether.topics import Topics

    try:
        ident = Identity.load(path)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    if not ident.broker:
        raise UserError(f"{path} is not logged in yet; finish with `tether login --token ...`")
    new = SigningKey.generate()
    new_pub = bytes(new.verify_key)
    new_x_secret = bytes(PrivateKey.generate()) if ident.x25519_secret is not None else None
    new_x = bytes(PrivateKey(new_x_secret).public_key) if new_x_secret else b""
    body = {"type": "rotate", "new_key": b64e(new_pub),
            "new_sig": b64e(new.sign(rotation_message(ident.public_key, new_pub, new_x)).signature)}
    if new_x:
        body["new_x25519"] = b64e(new_x)
    slot = acquire_slot(ident)
    requester: GrantRequester | None = None

    def on_message(topic: str, payload: bytes) -> None:
        if requester is not None:
            requester.on_message(topic, payload)

    conn = await connect(ident, slot, on_message)
    try:
        requester = GrantRequester(ident, conn, slot, Topics())
        await requester.subscribe()
        reply = await requester.request(body)
    finally:
        await conn.close()
    if not reply.get("ok"):
        raise UserError(f"the authority refused the rotation: {safe(reply.get('error'))}")
    ident.signing_seed = bytes(new)
    if new_x_secret is not None:
        ident.x25519_secret = new_x_secret
    ident.save(path)
    print(f"rotated: {path} now holds a new key; the old one no longer works")
    return 0


def configure_user(parser: argparse.ArgumentParser) -> None:
    parser.description = "Register users whose keys were made with `tether login` (on the authority's host)."
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="register a user's public key and print their login token")
    add.add_argument("name")
    add.add_argument("--key", required=True, help="the public key `tether login` printed")
    add.add_argument("--group", action="append", default=[], help="a group the user belongs to; repeatable")
    add.add_argument("--broker", metavar="HOST:PORT",
                     help="broker address the user dials (default: the authority's)")
    add.add_argument("--tls-ca", metavar="FILE", help="CA certificate path on the user's machine")


def run_user(args: argparse.Namespace) -> int:
    from tether.authority.provision import authority_identity, commit
    from tether.authority.registry import Principal, Registry, RegistryError, new_mqtt_password
    from tether.cli import UserError
    from tether.encoding import b64d, dumps
    from tether.home import Home
    from tether.up import parse_hostport

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
