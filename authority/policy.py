"""The access policy: who may open what kind of session on which agents, as whom, when,
and with which limits.

The policy is a TOML file (`$TETHER_HOME/authority/policy.toml`, reference in
docs/policy.md). Evaluation is a pure function, `evaluate(policy, request)`:

- an explicit `deny` statement that matches wins over any allow;
- otherwise the first `allow` statement, in file order, that matches the request and
  whose conditions all hold decides, and supplies the limits (max duration, idle
  timeout, recording, ...);
- nothing matching means deny. When an allow statement applied to the request but one of
  its conditions failed, the decision's reason says which condition.

Parsing and validation report problems with line numbers; `Policy.load` raises
`PolicyError` carrying all of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether.errors import TetherError

ACTIONS = ("shell", "exec", "forward", "watch", "audit", "admin")
# Actions that open a session on an agent: the session limits apply to these.
SESSION_ACTIONS = ("shell", "exec", "forward", "watch")
# Actions that start a process as an OS user, so they need a run-as user.
RUN_AS_ACTIONS = ("shell", "exec")
EFFECTS = ("allow", "deny")
RECORDING = ("required", "optional", "off")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_MAX_DURATION = 12 * 3600
MAX_POLICY_BYTES = 1024 * 1024
ROOT = "root"

STATEMENT_KEYS = (
    "id", "effect", "users", "groups", "agents", "labels", "actions", "run_as", "commands",
    "time_window", "max_duration", "idle_timeout", "require_reason", "recording", "max_sessions",
)
# Limits and conditions that only make sense on an allow statement.
ALLOW_ONLY_KEYS = ("max_duration", "idle_timeout", "require_reason", "recording", "max_sessions")
TOP_KEYS = ("groups", "statement")
TIME_WINDOW_KEYS = ("days", "hours", "tz")


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy text. `line` is 1-based, None when unknown."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class PolicyError(TetherError):
    """The policy file cannot be used. `problems` lists everything found, with lines."""

    def __init__(self, problems: Sequence[Problem], source: str = "<policy>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.format()))

    def format(self) -> list[str]:
        """One `SOURCE:LINE: message` line per problem (compiler style)."""
        return [f"{self.source}:{p.line}: {p.message}" if p.line else f"{self.source}: {p.message}"
                for p in self.problems]


class UnsafePolicyFile(PolicyError):
    """The policy file could have been written by someone other than its owner."""


class _Invalid(TetherError, ValueError):
    """A value is wrong; raised by the parsers below, turned into a Problem with a line."""


# ----------------------------------------------------------------- durations, windows


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: object, what: str = "duration") -> int:
    """Seconds from an int (seconds) or a string such as "90", "30m", "8h", "1h30m", "2d"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(f"{what} must be seconds (an integer) or a string like \"8h\" or \"30m\"")
    if isinstance(value, int):
        seconds = value
    else:
        text = value.strip().lower()
        if text.isdigit():
            seconds = int(text)
        else:
            m = _DURATION.fullmatch(text)
            if not text or m is None:
                raise _Invalid(f"{what} {value!r} is not a duration; use seconds or e.g. "
                               "\"90s\", \"30m\", \"8h\", \"1h30m\", \"1d\"")
            d, h, mi, s = (int(g or 0) for g in m.groups())
            seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds < 0:
        raise _Invalid(f"{what} must not be negative")
    return seconds


def format_duration(seconds: int) -> str:
    """The inverse of parse_duration: 43200 -> "12h", 5400 -> "1h30m", 0 -> "0s"."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def _parse_days(specs: Sequence[str]) -> frozenset[int]:
    days: set[int] = set()
    for spec in specs:
        first, sep, last = spec.strip().lower().partition("-")
        if first not in DAYS or (sep and last not in DAYS):
            raise _Invalid(f"bad day {spec!r}: use mon, tue, wed, thu, fri, sat, sun or a range "
                           "such as \"mon-fri\"")
        a = DAYS.index(first)
        b = DAYS.index(last) if sep else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def _parse_hours(spec: str) -> tuple[int, int]:
    """"08:00-18:00" -> (480, 1080) in minutes; the end may be 24:00 or before the start
    (an overnight window such as "22:00-06:00")."""
    m = _HOURS.fullmatch(spec.strip())
    if m is None:
        raise _Invalid(f"bad hours {spec!r}: use \"HH:MM-HH:MM\", e.g. \"08:00-18:00\" or "
                       "\"22:00-06:00\" (overnight)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise _Invalid(f"bad hours {spec!r}: a time is out of range")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise _Invalid(f"bad hours {spec!r}: the window is empty")
    return start, end


@dataclass(frozen=True)
class TimeWindow:
    """When an allow statement applies (or a deny statement bites).

    `days` are day names or ranges ("mon-fri", "sat-sun", "fri-mon"); empty means every
    day. `hours` are "HH:MM-HH:MM" ranges in `tz`, the end exclusive; an end at or before
    the start makes an overnight window, which belongs to the day it starts on. Empty
    means all day.
    """

    days: tuple[str, ...] = ()
    hours: tuple[str, ...] = ()
    tz: str = "UTC"
    _days: frozenset[int] = field(init=False, repr=False, compare=False)
    _ranges: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.days and not self.hours:
            raise _Invalid("time_window needs days, hours or both")
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise _Invalid(f"unknown time zone {self.tz!r}: use an IANA name such as \"UTC\" "
                           "or \"Europe/Paris\"") from exc
        object.__setattr__(self, "_days", _parse_days(self.days) if self.days else frozenset(range(7)))
        object.__setattr__(self, "_ranges", tuple(_parse_hours(h) for h in self.hours) or ((0, 1440),))
        object.__setattr__(self, "_zone", zone)

    @classmethod
    def from_toml(cls, value: object) -> TimeWindow:
        if not isinstance(value, dict):
            raise _Invalid("time_window must be a table, e.g. "
                           "{ days = [\"mon-fri\"], hours = \"08:00-18:00\", tz = \"UTC\" }")
        for key in value:
            if key not in TIME_WINDOW_KEYS:
                raise _Invalid(f"unknown key {key!r} in time_window{_did_you_mean(key, TIME_WINDOW_KEYS)}")
        days = value.get("days", [])
        if isinstance(days, str):
            days = [days]
        hours = value.get("hours", [])
        if isinstance(hours, str):
            hours = [hours]
        tz = value.get("tz", "UTC")
        if not _is_str_list(days):
            raise _Invalid("time_window.days must be a list of day names or ranges, e.g. [\"mon-fri\"]")
        if not _is_str_list(hours):
            raise _Invalid("time_window.hours must be \"HH:MM-HH:MM\" or a list of such ranges")
        if not isinstance(tz, str):
            raise _Invalid("time_window.tz must be a time zone name such as \"UTC\"")
        return cls(tuple(days), tuple(hours), tz)

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self._zone)
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        for start, end in self._ranges:
            if start < end:
                if start <= minute < end and today in self._days:
                    return True
            elif (minute >= start and today in self._days) or (
                    minute < end and (today - 1) % 7 in self._days):
                return True
        return False

    def describe(self) -> str:
        parts = [",".join(self.days) or "every day", ",".join(self.hours) or "all day", self.tz]
        return " ".join(parts)


# ----------------------------------------------------------------------- statements


@dataclass
class Statement:
    """One `[[statement]]`. Lists of names are glob patterns (fnmatch, case-sensitive),
    except `run_as`, where a glob never matches root."""

    users: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    run_as: list[str] = field(default_factory=list)
    max_duration: int = DEFAULT_MAX_DURATION
    idle_timeout: int = 0
    effect: str = "allow"
    id: str | None = None
    groups: list[str] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] | None = None
    time_window: TimeWindow | None = None
    require_reason: bool = False
    recording: str = "optional"
    max_sessions: int | None = None
    line: int | None = field(default=None, compare=False)

    def label(self, index: int) -> str:
        """How reasons name this statement: `#2` or `#2 'ops-prod'` (1-based)."""
        return f"#{index + 1}" + (f" {self.id!r}" if self.id else "")


@dataclass
class Decision:
    """The outcome of one evaluation. On allow, the limits come from the deciding statement."""

    allowed: bool
    reason: str
    run_as: str = ""
    statement: int | None = None  # 0-based index of the deciding statement, if any
    max_duration: int = DEFAULT_MAX_DURATION
    idle_timeout: int = 0
    statement_id: str | None = None
    recording: str = "optional"
    require_reason: bool = False
    max_sessions: int | None = None

    @property
    def statement_label(self) -> str | None:
        if self.statement is None:
            return None
        return f"#{self.statement + 1}" + (f" {self.statement_id!r}" if self.statement_id else "")


@dataclass(frozen=True, kw_only=True)
class Request:
    """Everything a decision may depend on. `now` must be timezone-aware."""

    user: str
    agent: str
    action: str
    now: datetime
    run_as: str | None = None  # None: the deciding statement's default
    groups: Sequence[str] = ()  # the user's groups from the registry
    agent_labels: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None  # exec: the argv
    reason: str | None = None
    active_sessions: int = 0  # the user's sessions open right now


# --------------------------------------------------------------------------- policy


@dataclass
class Policy:
    statements: list[Statement] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Policy:
        """The policy in `path`; a missing file is the empty policy (everything denied)."""
        try:
            raw = read_policy_file(path)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise PolicyError([Problem(None, f"cannot read: {exc.strerror}")], str(path)) from exc
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise PolicyError([Problem(None, "not UTF-8 text")], str(path)) from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<policy>") -> Policy:
        policy, problems = _parse(text)
        if problems:
            raise PolicyError(problems, source)
        return policy

    def save(self, path: Path) -> None:
        """Write the policy as TOML, atomically, mode 0600. Comments are not kept; use
        `append_statement` to add to a hand-written file."""
        from tether.edge.keys import write_private_file

        text = self.dumps()
        Policy.parse(text, str(path))  # never write a file we would refuse to load
        write_private_file(path, text.encode())

    def dumps(self) -> str:
        out = [HEADER]
        if self.groups:
            out.append("[groups]")
            out += [f"{_key(g)} = {_value(m)}" for g, m in self.groups.items()]
            out.append("")
        for st in self.statements:
            out.append(statement_toml(st))
        return "\n".join(out)

    def decide(self, request: Request) -> Decision:
        return evaluate(self, request)

    @classmethod
    def from_legacy_json(cls, path: Path) -> Policy:
        """Read a policy.json written by tether before the TOML format (allow statements)."""
        import json

        try:
            doc = json.loads(path.read_bytes())
            keys = ("users", "agents", "actions", "run_as", "max_duration", "idle_timeout")
            return cls([Statement(**{k: s[k] for k in keys if k in s}) for s in doc.get("statements", [])])
        except (ValueError, TypeError, AttributeError) as exc:
            raise PolicyError([Problem(None, f"not a tether policy.json: {exc}")], str(path)) from exc


def read_policy_file(path: Path) -> bytes:
    """The file's bytes, checked on the descriptor they are read from: its mode (anyone
    able to write it could grant themselves access) and its size."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePolicyFile([Problem(None, f"writable by group or others (mode "
                                            f"{stat.S_IMODE(st.st_mode):o}), so anyone could grant "
                                            f"themselves access; fix with: chmod 600 {path}")], str(path))
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([Problem(None, f"larger than {MAX_POLICY_BYTES // 1024} KiB; a policy "
                                   "this long is a mistake (use groups and globs)")], str(path))
    return raw


HEADER = """\
# tether access policy (reference and examples: docs/policy.md).
# An explicit deny wins; otherwise the first allow statement that matches decides.
# Anything no statement allows is denied. Check a request with `tether policy check`.
"""


def append_statement(path: Path, statement: Statement, comment: str | None = None) -> Statement:
    """Add `statement` to the end of the policy file, keeping the file's own text and
    comments. A clashing `id` gets a numeric suffix. Returns the statement as written."""
    from tether.edge.keys import write_private_file

    try:
        text = path.read_text()
    except FileNotFoundError:
        text = HEADER
    existing = Policy.parse(text, str(path))
    ids = {s.id for s in existing.statements}
    if statement.id is not None and statement.id in ids:
        n = 2
        while f"{statement.id}-{n}" in ids:
            n += 1
        statement = dataclasses.replace(statement, id=f"{statement.id}-{n}")
    note = " ".join((comment or "").split())
    block = (f"# {note}\n" if note else "") + statement_toml(statement)
    new_text = text.rstrip("\n") + "\n\n" + block
    Policy.parse(new_text, str(path))
    write_private_file(path, new_text.encode())
    return statement


def statement_toml(st: Statement) -> str:
    lines = ["[[statement]]"]
    if st.id is not None:
        lines.append(f"id = {_value(st.id)}")
    lines.append(f"effect = {_value(st.effect)}")
    if st.users:
        lines.append(f"users = {_value(st.users)}")
    if st.groups:
        lines.append(f"groups = {_value(st.groups)}")
    if st.agents:
        lines.append(f"agents = {_value(st.agents)}")
    if st.labels:
        items = ", ".join(f"{_key(k)} = {_value(v[0] if len(v) == 1 else v)}"
                          for k, v in st.labels.items())
        lines.append(f"labels = {{ {items} }}")
    lines.append(f"actions = {_value(st.actions)}")
    if st.run_as:
        lines.append(f"run_as = {_value(st.run_as)}")
    if st.commands is not None:
        lines.append(f"commands = {_value(st.commands)}")
    if st.time_window is not None:
        tw = st.time_window
        items_tw = ([f"days = {_value(list(tw.days))}"] if tw.days else []) + (
            [f"hours = {_value(tw.hours[0] if len(tw.hours) == 1 else list(tw.hours))}"]
            if tw.hours else []) + [f"tz = {_value(tw.tz)}"]
        lines.append(f"time_window = {{ {', '.join(items_tw)} }}")
    if st.effect == "allow":
        if st.max_duration != DEFAULT_MAX_DURATION:
            lines.append(f"max_duration = {_value(format_duration(st.max_duration))}")
        if st.idle_timeout:
            lines.append(f"idle_timeout = {_value(format_duration(st.idle_timeout))}")
        if st.require_reason:
            lines.append("require_reason = true")
        if st.recording != "optional":
            lines.append(f"recording = {_value(st.recording)}")
        if st.max_sessions is not None:
            lines.append(f"max_sessions = {st.max_sessions}")
    return "\n".join(lines) + "\n"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: str | Sequence[str]) -> str:
    if isinstance(value, str):
        return _string(value)
    return "[" + ", ".join(_string(v) for v in value) + "]"


# -------------------------------------------------------------------------- parsing


def validate(text: str) -> list[str]:
    """Every problem in a policy text, as "line N: message"; empty when it is valid."""
    return [str(p) for p in find_problems(text)]


def find_problems(text: str) -> list[Problem]:
    return _parse(text)[1]


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _parse(text: str) -> tuple[Policy, list[Problem]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = None
        if m := _TOML_POS.search(message):
            line = int(m.group(1))
            message = f"TOML syntax: {message[:m.start()]} (column {m.group(2)})"
        elif m := _TOML_END.search(message):
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            message = f"TOML syntax: {message[:m.start()]} (at the end of the file)"
        else:
            message = f"TOML syntax: {message}"
        return Policy(), [Problem(line, message)]
    where = _Locator(text)
    problems: list[Problem] = []
    policy = Policy()
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(Problem(where.top_key(key), f"unknown top-level key {key!r}"
                                    f"{_did_you_mean(key, TOP_KEYS)}; expected [groups] and "
                                    "[[statement]] tables"))
    groups = doc.get("groups", {})
    if not isinstance(groups, dict):
        problems.append(Problem(where.top_key("groups"), "groups must be a table: [groups] then "
                                "lines like ops = [\"alice\", \"bob\"]"))
    else:
        for name, members in groups.items():
            if not _is_str_list(members):
                problems.append(Problem(where.group(name), f"group {name!r} must be a list of user "
                                        "names, e.g. ops = [\"alice\", \"bob\"]"))
            else:
                policy.groups[name] = list(members)
    raw_statements = doc.get("statement", [])
    if not isinstance(raw_statements, list) or not all(isinstance(s, dict) for s in raw_statements):
        problems.append(Problem(where.top_key("statement"),
                                "statements must be [[statement]] tables"))
        return policy, problems
    where.expect_statements(len(raw_statements))
    seen_ids: dict[str, int] = {}
    for index, raw in enumerate(raw_statements):
        st, found = _statement(raw, index, where)
        problems += found
        if st is None:
            continue
        if st.id is not None:
            if st.id in seen_ids:
                problems.append(Problem(where.key(index, "id"), f"duplicate id {st.id!r} (also "
                                        f"statement #{seen_ids[st.id] + 1})"))
            seen_ids.setdefault(st.id, index)
        policy.statements.append(st)
    problems.sort(key=lambda p: p.line or 0)
    return policy, problems


def _statement(raw: dict[str, Any], index: int, where: _Locator) -> tuple[Statement | None, list[Problem]]:
    problems: list[Problem] = []
    name = f"statement #{index + 1}"

    def bad(key: str, message: str) -> None:
        problems.append(Problem(where.key(index, key), message))

    for key in raw:
        if key not in STATEMENT_KEYS:
            bad(key, f"unknown key {key!r} in {name}{_did_you_mean(key, STATEMENT_KEYS)}")
    st = Statement(line=where.statement(index))
    effect = raw.get("effect")
    if effect is None:
        problems.append(Problem(st.line, f"{name} has no effect; add effect = \"allow\" or "
                                "effect = \"deny\""))
    elif effect not in EFFECTS:
        bad("effect", f"effect must be \"allow\" or \"deny\", not {effect!r}")
    else:
        st.effect = effect
    if "id" in raw:
        if not isinstance(raw["id"], str) or not raw["id"].strip():
            bad("id", "id must be a non-empty string")
        else:
            st.id = raw["id"]
    for key in ("users", "groups", "agents", "run_as"):
        if key in raw:
            if not _is_str_list(raw[key]) or not all(v.strip() for v in raw[key]):
                bad(key, f"{key} must be a list of names or glob patterns, e.g. {key} = [\"x\"]")
            elif not raw[key]:
                bad(key, f"{key} is empty, so {name} can never match; remove it or add names")
            else:
                setattr(st, key, list(raw[key]))
    if "users" not in raw and "groups" not in raw:
        problems.append(Problem(st.line, f"{name} names no users or groups (use users = [\"*\"] "
                                "for everyone)"))
    if "labels" in raw:
        labels = raw["labels"]
        if not isinstance(labels, dict) or not labels:
            bad("labels", "labels must be a non-empty table such as "
                "{ env = \"prod\", role = [\"db\", \"cache\"] }")
        else:
            for k, v in labels.items():
                if isinstance(v, str):
                    st.labels[k] = [v]
                elif _is_str_list(v) and v:
                    st.labels[k] = list(v)
                else:
                    bad("labels", f"label {k!r} must be a string or a non-empty list of strings")
    if "agents" not in raw and "labels" not in raw:
        problems.append(Problem(st.line, f"{name} names no agents or labels (use agents = [\"*\"] "
                                "for all agents)"))
    actions = raw.get("actions")
    if actions is None:
        problems.append(Problem(st.line, f"{name} has no actions; e.g. actions = [\"shell\", \"exec\"]"))
    elif not _is_str_list(actions) or not actions:
        bad("actions", f"actions must be a non-empty list drawn from {', '.join(ACTIONS)}")
    else:
        for a in actions:
            if a not in (*ACTIONS, "*"):
                bad("actions", f"unknown action {a!r}{_did_you_mean(a, ACTIONS)}; expected "
                    f"{', '.join(ACTIONS)} or \"*\"")
        st.actions = list(actions)
    if "commands" in raw:
        commands = raw["commands"]
        if not _is_str_list(commands) or not commands or not all(c.strip() for c in commands):
            bad("commands", "commands must be a non-empty list of glob patterns, e.g. "
                "[\"systemctl status *\"]")
        else:
            st.commands = list(commands)
        if isinstance(actions, list) and actions != ["exec"]:
            bad("commands", "commands only apply to exec: a statement with commands must have "
                "actions = [\"exec\"]")
    if "time_window" in raw:
        try:
            st.time_window = TimeWindow.from_toml(raw["time_window"])
        except _Invalid as exc:
            bad("time_window", str(exc))
    if st.effect == "deny":
        for key in ALLOW_ONLY_KEYS:
            if key in raw:
                bad(key, f"{key} has no meaning on a deny statement; it is a limit of an allow")
        return st, problems
    for key in ("max_duration", "idle_timeout"):
        if key in raw:
            try:
                seconds = parse_duration(raw[key], key)
            except _Invalid as exc:
                bad(key, str(exc))
                continue
            if key == "max_duration" and seconds == 0:
                bad(key, "max_duration must be positive")
                continue
            setattr(st, key, seconds)
    if "require_reason" in raw:
        if not isinstance(raw["require_reason"], bool):
            bad("require_reason", "require_reason must be true or false")
        else:
            st.require_reason = raw["require_reason"]
    if "recording" in raw:
        if raw["recording"] not in RECORDING:
            bad("recording", "recording must be \"required\", \"optional\" or \"off\", "
                f"not {raw['recording']!r}")
        else:
            st.recording = raw["recording"]
    if "max_sessions" in raw:
        n = raw["max_sessions"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            bad("max_sessions", "max_sessions must be a whole number of at least 1")
        else:
            st.max_sessions = n
    if (isinstance(actions, list) and any(a in (*RUN_AS_ACTIONS, "*") for a in actions)
            and "run_as" not in raw):
        problems.append(Problem(st.line, f"{name} allows {'/'.join(RUN_AS_ACTIONS)} but lists no "
                                "run_as users; add e.g. run_as = [\"ubuntu\"]"))
    return st, problems


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_HEADER_LINE = re.compile(r"^\s*(\[\[?)\s*([^\]#]+?)\s*\]\]?\s*(?:#.*)?$")


class _Locator:
    """Line numbers for parsed values, found by scanning the text for table headers and
    `key =` lines. tomllib keeps no positions, and a policy file is small."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line number, dotted table name without quotes or spaces, is array table)
        self.headers: list[tuple[int, str, bool]] = []
        for n, line in enumerate(self.lines, 1):
            m = _HEADER_LINE.match(line)
            if m:
                name = re.sub(r"[\s\"']", "", m.group(2))
                self.headers.append((n, name, m.group(1) == "[["))
        self.starts = [n for n, name, array in self.headers if array and name == "statement"]
        self.usable = True

    def expect_statements(self, count: int) -> None:
        # Statements written some other way (an inline array) are not located by header.
        self.usable = len(self.starts) == count

    def statement(self, index: int) -> int | None:
        if self.usable and index < len(self.starts):
            return self.starts[index]
        return self.top_key("statement")

    def _block(self, start: int, prefix: str) -> tuple[int, int]:
        """Lines (start, end] belonging to the table at `start`, sub-tables included."""
        end = len(self.lines)
        for n, name, _ in self.headers:
            if n > start and not name.startswith(prefix + "."):
                end = n - 1
                break
        return start, end

    def _find_key(self, start: int, end: int, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*[=.]")
        for n in range(start + 1, end + 1):
            if pattern.match(self.lines[n - 1]):
                return n
        return None

    def key(self, index: int, key: str) -> int | None:
        start = self.statement(index)
        if not self.usable or start is None:
            return start
        lo, hi = self._block(start, "statement")
        for n, name, _ in self.headers:
            if lo < n <= hi and name == f"statement.{key}":
                return n
        return self._find_key(lo, hi, key) or start

    def top_key(self, key: str) -> int | None:
        for n, name, _ in self.headers:
            if name == key or name.startswith(key + "."):
                return n
        first = self.headers[0][0] - 1 if self.headers else len(self.lines)
        return self._find_key(0, first, key)

    def group(self, name: str) -> int | None:
        for n, header, _ in self.headers:
            if header == "groups":
                lo, hi = self._block(n, "groups")
                return self._find_key(lo, hi, name) or n
        return self.top_key("groups")


# ------------------------------------------------------------------------ evaluation


def evaluate(policy: Policy, request: Request) -> Decision:
    """Decide `request` under `policy`. Pure: the result depends only on the arguments."""
    if request.now.tzinfo is None or request.now.utcoffset() is None:
        raise ValueError("Request.now must be timezone-aware")
    if request.action not in ACTIONS:
        return Decision(False, f"unknown action {request.action!r}")
    groups = set(request.groups) | {g for g, members in policy.groups.items()
                                    if request.user in members}
    allow: Decision | None = None
    failure: tuple[int, int, str] | None = None  # (depth reached, statement index, message)
    for index, st in enumerate(policy.statements):
        if st.effect != "allow" or not _applies(st, request, groups):
            continue
        outcome = _check_allow(st, index, request)
        if isinstance(outcome, Decision):
            allow = outcome
            break
        if failure is None or outcome[0] > failure[0]:
            failure = (outcome[0], index, outcome[1])
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
    groups = set(request.groups) | {g for g, members in policy.groups.items() if request.user in members}
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
                    st.max_sessions)


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


__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_DURATION",
    "Access",
    "Decision",
    "Policy",
    "PolicyError",
    "Problem",
    "Request",
    "RunAsChoice",
    "Statement",
    "TimeWindow",
    "UnsafePolicyFile",
    "access",
    "append_statement",
    "evaluate",
    "find_problems",
    "format_duration",
    "parse_duration",
    "read_policy_file",
    "validate",
]
