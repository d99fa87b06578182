"""`tether ls`: agents with online/offline, labels, platform, version and last seen.

Every field comes from an agent's own presence document, so it is checked on the way in
(tether.presence) and escaped on the way out (tether.display): an agent cannot break the
table, hide a row or drive the reader's terminal.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.presence import Presence
    from tether.topics import Topics

# Presence keeps arriving while an agent (or, on a broker without a presence rate limit, a
# hostile one) publishes: stop listening after this long even if it never goes quiet.
MAX_LISTEN = 5.0
MAX_NAMED = 5  # agents named in the warning about malformed presence


def configure(parser: argparse.ArgumentParser) -> None:
    from tether.client.connect import add_identity_argument

    parser.description = "List the agents that have announced themselves on the broker."
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--wait", type=float, default=0.3, metavar="SECONDS",
                        help="how long to wait for presence after the last one arrived "
                        f"(default 0.3; at most {MAX_LISTEN:g} s in all)")
    add_identity_argument(parser)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, int(seconds))}s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)}m ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(min(seconds, 1e9) // 86400)}d ago"  # an agent's clock can claim any time


@dataclass
class PresenceView:
    """The newest valid presence and status of each agent, and what was skipped."""

    topics: Topics
    docs: dict[str, Presence] = field(default_factory=dict)
    status: dict[str, bytes] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  # agent -> malformed messages

    def offer(self, topic: str, payload: bytes) -> bool:
        """Take one presence or status message; False if it is not one."""
        from tether.presence import MAX_STATUS_BYTES, parse_presence
        from tether.signed import BadDocument
        from tether.topics import valid_name

        agent = self.topics.parse_agent(topic)
        if agent is None or not payload:
            return False
        if not valid_name(agent):
            self.skipped[agent[:64]] += 1
        elif topic == self.topics.status(agent):
            if len(payload) <= MAX_STATUS_BYTES:
                self.status[agent] = payload
            else:
                self.skipped[agent] += 1
        elif topic == self.topics.presence(agent):
            try:
                doc = parse_presence(payload)
            except BadDocument:
                self.skipped[agent] += 1
                return True
            if doc.name != agent:  # a document copied to another agent's topic
                self.skipped[agent] += 1
                return True
            self.docs[agent] = doc
        else:
            return False
        return True

    def online_and_seen(self, name: str) -> tuple[bool, float]:
        """From the presence document, overridden by a status that the agent's key signs."""
        from tether.presence import read_status
        from tether.signed import BadDocument

        doc = self.docs[name]
        online, seen = doc.online, doc.seen
        if name in self.status:
            try:
                st = read_status(self.status[name], doc.ed25519)
            except BadDocument:
                self.skipped[name] += 1
            else:
                online, seen = bool(st["online"]), max(seen, float(st["ts"]))
        return online, seen

    def warning(self) -> str | None:
        """One line about everything skipped, however many messages that was."""
        from tether.display import safe

        if not self.skipped:
            return None
        names = sorted(self.skipped)
        shown = ", ".join(safe(n) for n in names[:MAX_NAMED])
        more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
        total = sum(self.skipped.values())
        return (f"ignored {total} malformed or mismatched presence message(s) from {shown}{more}; "
                "those agents need a restart or a look at their identity")


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_ls(args))


async def _listen(args: argparse.Namespace, view: PresenceView) -> None:
    import asyncio

    from tether.client.connect import acquire_slot, connect, load_identity

    identity = load_identity(args.identity)
    arrived = asyncio.Event()

    def on_message(topic: str, payload: bytes) -> None:
        if view.offer(topic, payload):
            arrived.set()

    slot = acquire_slot(identity)
    conn = await connect(identity, slot, on_message)
    try:
        await conn.subscribe_confirmed(view.topics.all_presence(), 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_LISTEN
        while (left := deadline - loop.time()) > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), min(args.wait, left))
            except TimeoutError:
                break
    finally:
        await conn.close()


def _rows(view: PresenceView) -> list[dict[str, object]]:
    import time

    now = time.time()
    rows: list[dict[str, object]] = []
    for name in sorted(view.docs):
        doc = view.docs[name]
        online, seen = view.online_and_seen(name)
        rows.append({
            "name": name,
            "status": "online" if online else "offline",
            "labels": ",".join(f"{k}={v}" for k, v in sorted(doc.labels.items())),
            "platform": doc.platform,
            "version": doc.version,
            "last_seen": "now" if online else _ago(now - seen),
            "seen": seen,
        })
    return rows


def _print_table(rows: list[dict[str, object]]) -> None:
    from tether.display import safe

    headers = ["NAME", "STATUS", "LABELS", "PLATFORM", "VERSION", "LAST SEEN"]
    keys = ["name", "status", "labels", "platform", "version", "last_seen"]
    table = [headers] + [[safe(r[k]) or "-" for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


async def _ls(args: argparse.Namespace) -> int:
    import sys

    from tether.display import safe_json
    from tether.topics import Topics

    view = PresenceView(Topics())
    await _listen(args, view)
    rows = _rows(view)
    warning = view.warning()
    if warning is not None:
        print(f"tether ls: {warning}", file=sys.stderr)
    if args.json:
        for row in rows:
            print(safe_json(row))
    elif not rows:
        print("no agents have announced themselves on this broker yet")
    else:
        _print_table(rows)
    return 0
