"""`tether sessions`: list sessions, or have the authority order one terminated."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = (
        "`terminate SID` asks the authority to end a live session. The authority checks that "
        "you are an admin, or that the policy allows you the `admin` action on the agent, then "
        "publishes a signed terminate order that the agent verifies before it ends the session."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="list live sessions (not available yet)")
    term = verbs.add_parser("terminate", help="end a live session (admin)")
    term.add_argument("sid", help="the session id (32 hex digits)")
    term.add_argument("--agent", help="the agent running it (required unless you are an admin)")
    add_identity_argument(term)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tether.cli import UserError

    if args.verb == "list":
        raise UserError("`tether sessions list` is not available yet")
    return asyncio.run(_terminate(args))


async def _terminate(args: argparse.Namespace) -> int:
    from tether.cli import UserError
    from tether.client.connect import GrantRequester, acquire_slot, connect, load_identity
    from tether.topics import Topics

    identity = load_identity(args.identity)
    topics = Topics()
    slot = acquire_slot(identity)
    requester: GrantRequester | None = None

    def on_message(topic: str, payload: bytes) -> None:
        if requester is not None:
            requester.on_message(topic, payload)

    conn = await connect(identity, slot, on_message)
    try:
        requester = GrantRequester(identity, conn, slot, topics)
        await requester.subscribe()
        reply = await requester.request({"type": "terminate", "sid": args.sid.lower(),
                                         "agent": args.agent})
    finally:
        await conn.close()
    if not reply.get("ok"):
        raise UserError(str(reply.get("error", "the authority refused")))
    print(str(reply.get("message", "terminate order published")))
    return 0
