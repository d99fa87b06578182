"""`tether login`: make your key on your machine, or finish with the token from `tether user add`.

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


def configure(parser: argparse.ArgumentParser) -> None:
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

    from tether.edge.home import Home

    return Path(arg or os.environ.get("TETHER_IDENTITY") or Home.default().user_identity)


def run(args: argparse.Namespace) -> int:
    from tether.commands.main import UserError
    from tether.edge.keys import Identity, KeyFileError
    from tether.encoding import b64e, loads
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
    from tether.client.connect import GrantRequester, acquire_slot, connect
    from tether.commands.main import UserError
    from tether.display import safe
    from tether.edge.keys import Identity, KeyFileError
    from tether.encoding import b64e
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
