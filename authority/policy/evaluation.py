"""Policy evaluation: pure functions of a policy and a request (the rules are in the
package's docstring)."""

from __future__ import annotations

import dataclasses
import fnmatch
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .model import (
    ACTIONS,
    ROOT,
    RUN_AS_ACTIONS,
    SESSION_ACTIONS,
    WATCH_ACTIONS,
    Decision,
    Policy,
    Request,
    Statement,
)

# ------------------------------------------------------------------------ evaluation


def evaluate(policy: Policy, request: Request) -> Decision:
    """Decide `request` under `policy`. Pure: the result depends only on the arguments."""
    if request.now.tzinfo is None or request.now.utcoffset() is None:
        raise ValueError("Request.now must be timezone-aware")
    if request.action not in ACTIONS:
        return Decision(False, f"unknown action {request.action!r}")
    groups = user_groups(policy, request.user, request.groups)
    allow, failure = _first_allow(policy, request, groups)
    run_as = request.run_as if request.run_as is not None else (allow.run_as if allow else None)
    for index, st in enumerate(policy.statements):
        if st.effect == "deny" and _applies(st, request, groups) and _deny_bites(st, request, run_as):
            as_ = f" as {run_as!r}" if run_as else ""
            return Decision(False, f"user {request.user!r} may not {request.action} on "
                            f"{request.agent!r}{as_} (denied by statement {st.label(index)})",
                            run_as or "", index, statement_id=st.id)
    if allow is not None:
        return allow
    if failure is not None:
        _, index, message = failure
        st = policy.statements[index]
        return Decision(False, f"{message} (statement {st.label(index)})", statement=index,
                        statement_id=st.id)
    return Decision(False, f"no policy statement allows {request.user!r} to {request.action} "
                    f"on {request.agent!r}")


def user_groups(policy: Policy, user: str, registry_groups: Sequence[str] = ()) -> set[str]:
    """A user's groups: the registry's and the policy's [groups] that list the user."""
    return set(registry_groups) | {g for g, members in policy.groups.items() if user in members}


def deciding_allow(policy: Policy, request: Request) -> Decision | None:
    """The allow statement that would decide `request`, deny statements aside (which
    statement's limits a session has, e.g. its require_moderator); None if none allows.
    Not an access decision: `evaluate` is."""
    if request.now.tzinfo is None or request.now.utcoffset() is None:
        raise ValueError("Request.now must be timezone-aware")
    return _first_allow(policy, request, user_groups(policy, request.user, request.groups))[0]


def _first_allow(policy: Policy, request: Request, groups: set[str],
                 ) -> tuple[Decision | None, tuple[int, int, str] | None]:
    """The first allow statement whose conditions hold, else the failure that got furthest
    as (depth reached, statement index, message)."""
    failure: tuple[int, int, str] | None = None
    for index, st in enumerate(policy.statements):
        if st.effect != "allow" or not _applies(st, request, groups):
            continue
        outcome = _check_allow(st, index, request)
        if isinstance(outcome, Decision):
            return outcome, None
        if failure is None or outcome[0] > failure[0]:
            failure = (outcome[0], index, outcome[1])
    return None, failure


@dataclass(frozen=True)
class RunAsChoice:
    name: str
    reason_required: bool


@dataclass(frozen=True)
class Access:
    """What a console offers a user for one agent and action: the run-as users the policy
    allows now (literal names; `other` when a glob also allows unlisted ones), the
    default first, and whether each needs a reason. Advisory: the grant request is
    decided on its own."""

    allowed: bool
    why_not: str
    default: str
    run_as: tuple[RunAsChoice, ...]
    other: bool

    def to_json(self) -> dict[str, object]:
        return {"allowed": self.allowed, "why": self.why_not or None, "default": self.default,
                "run_as": [{"name": c.name, "reason": c.reason_required} for c in self.run_as],
                "other": self.other}


def access(policy: Policy, request: Request) -> Access:
    """The run-as choices for `request` (its run_as and reason are ignored)."""
    base = dataclasses.replace(request, run_as=None, reason=None)
    given = dataclasses.replace(base, reason="(given)")
    groups = user_groups(policy, request.user, request.groups)
    names: list[str] = []
    other = False
    for st in policy.statements:
        if st.effect == "allow" and _applies(st, base, groups):
            for pattern in st.run_as:
                if not _is_literal(pattern):
                    other = True
                elif pattern not in names:
                    names.append(pattern)
    default = evaluate(policy, given)
    if default.allowed and default.run_as:
        names = [default.run_as] + [n for n in names if n != default.run_as]
    choices = tuple(RunAsChoice(n, not evaluate(policy, dataclasses.replace(base, run_as=n)).allowed)
                    for n in names if evaluate(policy, dataclasses.replace(given, run_as=n)).allowed)
    allowed = default.allowed or bool(choices) or other
    return Access(allowed, "" if allowed else evaluate(policy, base).reason,
                  default.run_as if default.allowed else "", choices, other)


def _applies(st: Statement, request: Request, groups: set[str]) -> bool:
    """Whether the statement is about this user, agent and action (conditions aside)."""
    if request.action not in st.actions and "*" not in st.actions:
        return False
    if not (any(fnmatch.fnmatchcase(request.user, u) for u in st.users)
            or any(fnmatch.fnmatchcase(g, pattern) for pattern in st.groups for g in groups)):
        return False
    if not st.agents and not st.labels:
        return False
    if st.agents and not any(fnmatch.fnmatchcase(request.agent, a) for a in st.agents):
        return False
    return labels_match(st.labels, request.agent_labels)


def labels_match(selector: Mapping[str, Sequence[str]], labels: Mapping[str, str]) -> bool:
    """Every selector key must be present with a value matching one of its patterns."""
    for key, patterns in selector.items():
        value = labels.get(key)
        if value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
            return False
    return True


def run_as_allowed(patterns: Sequence[str], user: str) -> bool:
    """Root only when listed literally; any other user by name or glob."""
    if user == ROOT:
        return ROOT in patterns
    return any(fnmatch.fnmatchcase(user, p) for p in patterns)


def _is_literal(pattern: str) -> bool:
    return not any(ch in pattern for ch in "*?[")


def command_line(command: Sequence[str]) -> str:
    """What `commands` patterns are matched against: the argv, shell-quoted and joined."""
    return shlex.join(command)


def _check_allow(st: Statement, index: int, request: Request) -> Decision | tuple[int, str]:
    """The allow decision if every condition holds, else (how far it got, why not)."""
    who, where = request.user, request.agent
    if request.run_as is None:
        run_as = next((u for u in st.run_as if _is_literal(u)), "")
        if not run_as and request.action in RUN_AS_ACTIONS:
            return 1, "no run-as user was asked for and the statement has no literal one to default to"
    else:
        run_as = request.run_as
        if not run_as_allowed(st.run_as, run_as):
            if request.action in WATCH_ACTIONS:
                return 1, f"user {who!r} may not {request.action} sessions running as {run_as!r} on {where!r}"
            return 1, f"user {who!r} may not run as {run_as!r} on {where!r}"
    if st.commands is not None and request.action == "exec":
        if not request.command:
            return 2, f"only listed commands may run on {where!r}, and no command was given"
        line = command_line(request.command)
        if not any(fnmatch.fnmatchcase(line, p) for p in st.commands):
            return 2, f"command {line!r} is not allowed on {where!r}"
    if st.time_window is not None and not st.time_window.contains(request.now):
        return 3, f"outside the allowed time window ({st.time_window.describe()})"
    if st.require_reason and not (request.reason or "").strip():
        return 4, "a reason is required"
    if (st.max_sessions is not None and request.action in SESSION_ACTIONS
            and request.active_sessions >= st.max_sessions):
        return 5, f"user {who!r} already has {request.active_sessions} of {st.max_sessions} sessions"
    return Decision(True, f"allowed by statement {st.label(index)}", run_as, index,
                    st.max_duration, st.idle_timeout, st.id, st.recording, st.require_reason,
                    st.max_sessions, st.detach_timeout, list(st.require_moderator))


def _deny_bites(st: Statement, request: Request, run_as: str | None) -> bool:
    """Whether a deny statement's own conditions hold (a deny narrows with conditions)."""
    if st.run_as and (run_as is None or not any(fnmatch.fnmatchcase(run_as, p) for p in st.run_as)):
        return False
    if st.commands is not None:
        if request.action != "exec":
            return False
        # An exec that names no command could run anything, so such a deny bites it too.
        if request.command and not any(fnmatch.fnmatchcase(command_line(request.command), p)
                                       for p in st.commands):
            return False
    return st.time_window is None or st.time_window.contains(request.now)
