"""`tether ls`: agents with online/offline, labels, platform, version and last seen."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = "List the agents that have announced themselves on the broker."
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--wait", type=float, default=0.3, metavar="SECONDS",
                        help="how long to wait for presence after the last one arrived (default 0.3)")
    add_identity_argument(parser)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, int(seconds))}s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)}m ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_ls(args))


async def _ls(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from tether.client.connect import acquire_slot, connect, load_identity
    from tether.encoding import b64d, dumps
    from tether.presence import read_presence, read_status
    from tether.signed import BadDocument
    from tether.topics import Topics

    identity = load_identity(args.identity)
    topics = Topics()
    docs: dict[str, dict[str, object]] = {}
    status: dict[str, bytes] = {}
    arrived = asyncio.Event()

    def on_message(topic: str, payload: bytes) -> None:
        agent = topics.parse_agent(topic)
        if agent is None or not payload:
            return
        if topic == topics.status(agent):
            status[agent] = payload
        elif topic == topics.presence(agent):
            try:
                doc = read_presence(payload)
            except BadDocument:
                return
            if doc.get("name") != agent:
                return  # a document copied to another agent's topic
            docs[agent] = doc
        arrived.set()

    slot = acquire_slot(identity)
    conn = await connect(identity, slot, on_message)
    try:
        await conn.subscribe_confirmed(topics.all_presence(), 1)
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), args.wait)
            except TimeoutError:
                break
    finally:
        await conn.close()
    now = time.time()
    rows = []
    for name in sorted(docs):
        doc = docs[name]
        online = bool(doc.get("online"))
        seen = float(str(doc.get("seen", 0)))
        if name in status:
            try:
                st = read_status(status[name], b64d(str(doc["ed25519"])))
                online = bool(st.get("online"))
                seen = max(seen, float(st.get("ts", 0)))
            except (BadDocument, KeyError, ValueError):
                pass
        labels = doc.get("labels") or {}
        assert isinstance(labels, dict)
        rows.append({
            "name": name,
            "status": "online" if online else "offline",
            "labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "platform": str(doc.get("platform", "")),
            "version": str(doc.get("version", "")),
            "last_seen": "now" if online else _ago(now - seen),
            "seen": seen,
        })
    if args.json:
        for row in rows:
            print(dumps(row).decode())
        return 0
    if not rows:
        print("no agents have announced themselves on this broker yet")
        return 0
    headers = ["NAME", "STATUS", "LABELS", "PLATFORM", "VERSION", "LAST SEEN"]
    keys = ["name", "status", "labels", "platform", "version", "last_seen"]
    table = [headers] + [[str(r[k]) or "-" for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0
