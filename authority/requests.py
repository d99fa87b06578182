"""What a request to the authority may carry: each field's type and bounds.

Checked after the signature and before anything from the request is decided, logged or
audited, so only validated values reach the audit trail. The problems returned are fixed
text that never quotes the offending value (docs/threat-model.md, bounded inputs).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from tether import auditq, grants
from tether.encoding import b64d
from tether.limits import MAX_REASON_BYTES, MAX_RUN_AS_BYTES
from tether.topics import is_session_id, valid_name

TYPES = ("grant", "access", "terminate", "rotate", "live", "sessions")
MAX_ACCESS_AGENTS = 20  # per access request: the signed reply stays under 4 KiB
MAX_LIVE_SESSIONS = 256  # in one agent's report of its live sessions
MAX_LIVE_COMMAND = 256  # characters of an exec session's command as shown (never granted)
LIVE_MODES = ("shell", "exec")  # the modes a live session can have
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
            or grants.command_problem(str(mode), req.get("command")) or _attach_problem(req))


def _attach_problem(req: dict[str, Any]) -> str | None:
    """`attach` names the live session: one's own shell to take over (mode shell), or a
    session to watch or join (which always name one)."""
    attach = req.get("attach")
    mode = req.get("mode")
    if attach is None:
        if mode in grants.ATTACH_MODES:
            return (f"a {mode} request names the session (attach): the 32-digit hex id "
                    "`tether sessions` shows")
        return None
    if not is_session_id(attach):
        return "the session to attach to is not valid: use the 32-digit hex id `tether sessions` shows"
    if mode not in ("shell", *grants.ATTACH_MODES):
        return "only shell sessions can be attached"
    return None


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


def _sessions(req: dict[str, Any]) -> str | None:
    agent = req.get("agent")
    if agent is not None and not _is_name(agent):
        return f"the agent name is not valid: use {NAME_RULE}"
    return None


def _live(req: dict[str, Any]) -> str | None:
    """An agent's whole list of its live sessions (the authority keeps it to answer
    `sessions` and attach grants). Strict: one bad entry refuses the list, so nothing
    half-understood is offered to users."""
    if not _is_time(req.get("boot")):
        return "a live report carries the agent's boot time (a number)"
    sessions = req.get("sessions")
    if not isinstance(sessions, list) or len(sessions) > MAX_LIVE_SESSIONS:
        return f"a live report carries a list of at most {MAX_LIVE_SESSIONS} sessions"
    seen: set[str] = set()
    for number, entry in enumerate(sessions, 1):
        problem = _live_session_problem(entry)
        if problem is None and entry["sid"] in seen:
            problem = "its session id appears twice"
        if problem is not None:
            return f"live session #{number}: {problem}"
        seen.add(entry["sid"])
    return None


def _live_session_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    if not is_session_id(entry.get("sid")):
        return "the session id is not 32 lowercase hex digits"
    if not _is_name(entry.get("user")):
        return f"the user name is not valid: use {NAME_RULE}"
    mode = entry.get("mode")
    if mode not in LIVE_MODES:
        return f"unknown session mode; expected one of {', '.join(LIVE_MODES)}"
    run_as = entry.get("run_as")
    if run_as in (None, "") or _run_as_problem(run_as):
        return "the run-as user is not a valid user name"
    command = entry.get("command")
    if mode == "shell" and command is not None:
        return "only exec sessions name a command"
    if command is not None and not _is_text(command, MAX_LIVE_COMMAND):
        return f"the command is not text of at most {MAX_LIVE_COMMAND} characters"
    if not _is_time(entry.get("started")):
        return "the start time is not a number"
    if not isinstance(entry.get("attached"), bool):
        return "attached is not true or false"
    detached_at = entry.get("detached_at")
    if detached_at is not None and not _is_time(detached_at):
        return "detached_at is not a number or null"
    timeout = entry.get("detach_timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        return "detach_timeout is not a whole number of seconds"
    if not isinstance(entry.get("awaiting_moderator", False), bool):
        return "awaiting_moderator is not true or false"
    return None


_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "grant": _grant, "access": _access, "terminate": _terminate, "rotate": _rotate,
    "live": _live, "sessions": _sessions,
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


def _is_time(value: object) -> bool:
    """A Unix time: a finite number, not before 1970 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int past any float
        return False


def _is_text(value: object, max_chars: int) -> bool:
    """A string of at most `max_chars` characters that is valid UTF-8 (no lone
    surrogates, which JSON can carry and no encoder writes back out)."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_key(value: object, size: int) -> bool:
    if not isinstance(value, str) or len(value) > 2 * size:
        return False
    try:
        return len(b64d(value)) == size
    except ValueError:
        return False


__all__ = ["LIVE_MODES", "MAX_ACCESS_AGENTS", "MAX_LIVE_COMMAND", "MAX_LIVE_SESSIONS", "TYPES",
           "reason_problem", "request_problem"]
