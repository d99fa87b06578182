"""The harnesses, one per decoder, grouped by the tether module they fuzz.

`load` imports only the group that holds a harness, so a fuzzing process instruments
only the code that harness reaches.
"""

from __future__ import annotations

import importlib

from tools.fuzz.base import Harness

GROUPS: dict[str, tuple[str, ...]] = {
    "frames": ("frames", "channel"),
    "handshake": ("handshake-hello", "handshake-reply", "handshake-confirm"),
    "tokens": ("paseto", "grants"),
    "recorder": ("recevents", "recording-open", "recording-data", "recording-ack"),
    "presence": ("presence",),
    "authz": ("authz-request", "authz-reply"),
    "enrolment": ("enrolment-request", "enrolment-reply"),
    "console": ("console-token",),
    "auditq": ("auditq-query", "auditq-reply"),
    "revocation": ("revocation",),
    "policy": ("policy",),
}
NAMES = tuple(name for names in GROUPS.values() for name in names)


def load(name: str) -> Harness:
    group = next(g for g, names in GROUPS.items() if name in names)
    harnesses: dict[str, Harness] = importlib.import_module(f"tools.fuzz.harnesses.{group}").HARNESSES
    return harnesses[name]
