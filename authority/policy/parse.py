"""Reading a policy file and parsing its TOML, with every problem located on its line
(tomllib keeps no positions; `_Locator` finds them in the text)."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from .model import (
    ACTIONS,
    ALLOW_ONLY_KEYS,
    EFFECTS,
    MAX_POLICY_BYTES,
    RECORDING,
    RUN_AS_ACTIONS,
    STATEMENT_KEYS,
    TOP_KEYS,
    WATCH_ACTIONS,
    Policy,
    PolicyError,
    Problem,
    Statement,
    TimeWindow,
    UnsafePolicyFile,
    _did_you_mean,
    _Invalid,
    _is_str_list,
    parse_duration,
)


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


# -------------------------------------------------------------------------- parsing


def validate(text: str) -> list[str]:
    """Every problem in a policy text, as "line N: message"; empty when it is valid."""
    return [str(p) for p in find_problems(text)]


def find_problems(text: str) -> list[Problem]:
    return parse_text(text)[1]


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def parse_text(text: str) -> tuple[Policy, list[Problem]]:
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
    for key in ("max_duration", "idle_timeout", "detach_timeout"):
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
    if "require_moderator" in raw:
        groups = raw["require_moderator"]
        if not _is_str_list(groups) or not all(g.strip() for g in groups):
            bad("require_moderator", "require_moderator must be a list of group names or globs, "
                "e.g. require_moderator = [\"ops-leads\"]")
        elif not groups:
            bad("require_moderator", "require_moderator is empty, so it requires no one; remove it "
                "or name the moderators' groups")
        elif not (isinstance(actions, list) and any(a in ("shell", "*") for a in actions)):
            bad("require_moderator", f"require_moderator only applies to shell sessions, and {name} "
                "does not allow shell; add \"shell\" to its actions or move it to the statement "
                "that allows the shells")
        else:
            st.require_moderator = list(groups)
    if isinstance(actions, list) and "run_as" not in raw:
        if any(a in (*RUN_AS_ACTIONS, "*") for a in actions):
            problems.append(Problem(st.line, f"{name} allows {'/'.join(RUN_AS_ACTIONS)} but lists no "
                                    "run_as users; add e.g. run_as = [\"ubuntu\"]"))
        elif any(a in WATCH_ACTIONS for a in actions):
            # A watched session is chosen by the user it runs as: without run_as, none is.
            problems.append(Problem(st.line, f"{name} allows {'/'.join(WATCH_ACTIONS)} but lists no "
                                    "run_as users, so it lets no one watch or join any session; add "
                                    "the run-as users whose sessions may be watched, e.g. "
                                    "run_as = [\"*\"] (every session but root's)"))
    return st, problems


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
