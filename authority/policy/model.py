"""The access policy's model: statements, time windows, requests, decisions, the errors a
policy text can have, and `Policy`, which loads, writes and decides by the modules beside it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether.errors import TetherError

ACTIONS = ("shell", "exec", "forward", "watch", "join", "audit", "admin")
# Actions that open a session on an agent: the session limits apply to these.
SESSION_ACTIONS = ("shell", "exec", "forward", "watch", "join")
# Actions that start a process as an OS user, so they need a run-as user.
RUN_AS_ACTIONS = ("shell", "exec")
# Actions on another live session (read-only, or a second writer): the statement's run_as
# says whose sessions, by the run-as user they run as.
WATCH_ACTIONS = ("watch", "join")
EFFECTS = ("allow", "deny")
RECORDING = ("required", "optional", "off")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_MAX_DURATION = 12 * 3600
# How long a shell or exec session outlives its client (detached) unless a statement says.
DEFAULT_DETACH_TIMEOUT = 600
MAX_POLICY_BYTES = 1024 * 1024
ROOT = "root"

STATEMENT_KEYS = (
    "id", "effect", "users", "groups", "agents", "labels", "actions", "run_as", "commands",
    "time_window", "max_duration", "idle_timeout", "require_reason", "recording", "max_sessions",
    "detach_timeout", "require_moderator",
)
# Limits and conditions that only make sense on an allow statement.
ALLOW_ONLY_KEYS = ("max_duration", "idle_timeout", "require_reason", "recording", "max_sessions",
                   "detach_timeout", "require_moderator")
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
    detach_timeout: int = DEFAULT_DETACH_TIMEOUT
    # Groups whose members must watch a shell session this statement allows before it
    # starts; empty: none needed.
    require_moderator: list[str] = field(default_factory=list)
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
    detach_timeout: int = DEFAULT_DETACH_TIMEOUT
    require_moderator: list[str] = field(default_factory=list)

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
        from .parse import read_policy_file

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
        from .parse import parse_text

        policy, problems = parse_text(text)
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
        from .write import dumps

        return dumps(self)

    def decide(self, request: Request) -> Decision:
        from .evaluation import evaluate

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


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
