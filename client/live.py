"""Your live sessions, as the authority knows them from the agents' reports: listed by
`tether sessions --live`, chosen by `tether attach`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tether.client.connect import ClientError, ask_authority, load_identity
from tether.display import safe, safe_json


async def live_sessions(identity_path: str | None, agent: str | None = None) -> list[dict[str, Any]]:
    reply = await ask_authority(load_identity(identity_path), {"type": "sessions", "agent": agent})
    if not reply.get("ok"):
        raise ClientError(safe(str(reply.get("error", "the authority refused"))))
    sessions = reply.get("sessions")
    if not isinstance(sessions, list):
        raise ClientError("the authority's answer has no session list")
    return [s for s in sessions if isinstance(s, dict) and isinstance(s.get("sid"), str)]


def _ago(t: object, now: float) -> str:
    if not isinstance(t, int | float):
        return "?"
    s = max(0, int(now - t))
    return f"{s // 3600}h{s % 3600 // 60:02d}m ago" if s >= 3600 else f"{s // 60}m{s % 60:02d}s ago"


def describe(s: dict[str, Any], now: float) -> str:
    state = "attached" if s.get("attached") else f"detached {_ago(s.get('detached_at'), now)}"
    if s.get("awaiting_moderator"):
        state = "awaiting a moderator"
    what = s.get("command") or s.get("mode") or "?"
    return (f"{safe(str(s['sid']))}  {safe(str(s.get('agent', '?'))):<16} "
            f"{safe(str(s.get('run_as', '?'))):<10} {state:<22} started {_ago(s.get('started'), now)}  "
            f"{safe(str(what))}")


async def print_live(args: argparse.Namespace) -> int:
    sessions = await live_sessions(args.identity, args.agent)
    if args.json:
        for s in sessions:
            print(safe_json(s))
        return 0
    if not sessions:
        print("no live sessions of yours (the authority knows of none)")
        return 0
    now = time.time()
    print(f"{'SID':<32}  {'AGENT':<16} {'RUN AS':<10} {'STATE':<22} STARTED")
    for s in sessions:
        print(describe(s, now))
    return 0


def choose(sessions: list[dict[str, Any]], sid: str | None, action: str = "attach") -> dict[str, Any]:
    """The session `tether attach|watch|join [SID]` means: SID (or a unique prefix of
    it); without one, for attach, your only detached session. Otherwise ClientError with
    the candidates listed."""
    attachable = [s for s in sessions if action in (s.get("actions") or [])]
    now = time.time()
    listing = "\n".join("  " + describe(s, now) for s in attachable)
    if sid is not None:
        sid = sid.lower()
        found = [s for s in attachable if str(s["sid"]).startswith(sid)]
        if len(found) == 1:
            return found[0]
        if not found:
            whose = "of yours " if action == "attach" else f"you may {action} "
            raise ClientError(f"no live session {whose}matches {safe(sid)!r}"
                              + (f"; yours are:\n{listing}" if attachable else
                                 " (`tether sessions --live` lists them)"))
        raise ClientError(f"{safe(sid)!r} matches {len(found)} sessions; give more of the id:\n"
                          + "\n".join("  " + describe(s, now) for s in found))
    if action != "attach":
        raise ClientError(f"name the session to {action}: tether {action} SID\n{listing}"
                          if attachable else f"there is no live session you may {action}")
    detached = [s for s in attachable if not s.get("attached")]
    if len(detached) == 1:
        return detached[0]
    if not attachable:
        raise ClientError("you have no live shell sessions to attach to")
    why = "several of your sessions are detached" if detached else "none of your sessions is detached"
    raise ClientError(f"{why}; name one: tether attach SID\n{listing}")
