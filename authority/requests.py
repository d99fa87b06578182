"""What a request to the authority may carry: each field's type and bounds.

Checked after the signature and before anything from the request is decided, logged or
audited, so only validated values reach the audit trail. The problems returned are fixed
text that never quotes the offending value (docs/threat-model.md, bounded inputs).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from tether import auditq, grants
from tether.encoding import b64d
from tether.limits import MAX_REASON_BYTES, MAX_RUN_AS_BYTES
from tether.topics import valid_name

TYPES = ("grant", "access", "terminate", "rotate")
MAX_ACCESS_AGENTS = 20  # per access request: the signed reply stays under 4 KiB
# An OS user name: what useradd and directory services (sssd's name@domain, Samba's
# machine$) produce; never an option-like leading '-'. ASCII, so characters are bytes.
RUN_AS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?")
SID = re.compile(r"[0-9a-f]{1,64}")
NAME_RULE = "1-64 letters, digits, '-', '_' or '.', not starting with '-' or '.'"


def request_problem(req: dict[str, Any]) -> str | None:
    """Why the request cannot be considered, or None when every field is in bounds."""
    kind = req.get("type")
    check = _CHECKS.get(kind) if isinstance(kind, str) else None  # a list is unhashable
    if check is None:
        return f"unknown request type; expected one of {', '.join(TYPES)}"
    return check(req)


def _grant(req: dict[str, Any]) -> str | None:
    mode = req.get("mode")
    if mode not in (*grants.MODES, auditq.MODE):
        return f"unknown session mode; expected one of {', '.join((*grants.MODES, auditq.MODE))}"
    agent = req.get("agent")
    optional = mode == auditq.MODE  # no name: the registered recorder
    if not (optional and agent in (None, "")) and not _is_name(agent):
        return f"the agent name is not valid: use {NAME_RULE}"
    return (_run_as_problem(req.get("run_as")) or reason_problem(req.get("reason"))
            or grants.command_problem(str(mode), req.get("command")))


def _access(req: dict[str, Any]) -> str | None:
    names = req.get("agents")
    if (not isinstance(names, list) or len(names) > MAX_ACCESS_AGENTS
            or not all(_is_name(n) for n in names)):
        return (f"an access request names a list of at most {MAX_ACCESS_AGENTS} agents, "
                f"each {NAME_RULE}")
    if req.get("mode") not in (None, *grants.MODES):
        return f"unknown session mode; expected one of {', '.join(grants.MODES)}"
    return None


def _terminate(req: dict[str, Any]) -> str | None:
    sid = req.get("sid")
    if not isinstance(sid, str) or not SID.fullmatch(sid):
        return "the session id is not valid: use the hex id `tether sessions` shows"
    agent = req.get("agent")
    if agent is not None and not _is_name(agent):
        return f"the agent name is not valid: use {NAME_RULE}"
    return None


def _rotate(req: dict[str, Any]) -> str | None:
    new_x = req.get("new_x25519")
    if (not _is_key(req.get("new_key"), 32) or not _is_key(req.get("new_sig"), 64)
            or (new_x is not None and not _is_key(new_x, 32))):
        return "a rotation carries the new key, its signature and (agents) the new X25519 key"
    return None


_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "grant": _grant, "access": _access, "terminate": _terminate, "rotate": _rotate,
}


def reason_problem(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        return "the reason must be text"
    if len(reason.encode()) > MAX_REASON_BYTES:
        return f"the reason is longer than {MAX_REASON_BYTES} bytes; say it in fewer words"
    if any(unicodedata.category(ch) == "Cc" for ch in reason):
        return "the reason must be one line of text without control characters"
    return None


def _run_as_problem(run_as: object) -> str | None:
    if run_as is None or run_as == "":
        return None  # the policy's default
    if not isinstance(run_as, str) or len(run_as) > MAX_RUN_AS_BYTES or not RUN_AS.fullmatch(run_as):
        return (f"the run-as user is not a valid user name: use 1-{MAX_RUN_AS_BYTES} letters, "
                "digits, '_', '.', '@' or '-' (not first)")
    return None


def _is_name(value: object) -> bool:
    return isinstance(value, str) and valid_name(value)


def _is_key(value: object, size: int) -> bool:
    if not isinstance(value, str) or len(value) > 2 * size:
        return False
    try:
        return len(b64d(value)) == size
    except ValueError:
        return False


__all__ = ["MAX_ACCESS_AGENTS", "TYPES", "reason_problem", "request_problem"]
