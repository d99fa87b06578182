"""Writing policy TOML: a whole policy (`Policy.dumps`) or one statement appended to a
hand-written file, keeping its text and comments."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from .model import (
    DEFAULT_DETACH_TIMEOUT,
    DEFAULT_MAX_DURATION,
    Policy,
    Statement,
    format_duration,
)

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


def dumps(policy: Policy) -> str:
    out = [HEADER]
    if policy.groups:
        out.append("[groups]")
        out += [f"{_key(g)} = {_value(m)}" for g, m in policy.groups.items()]
        out.append("")
    for st in policy.statements:
        out.append(statement_toml(st))
    return "\n".join(out)


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
        if st.detach_timeout != DEFAULT_DETACH_TIMEOUT:
            lines.append(f"detach_timeout = {_value(format_duration(st.detach_timeout))}")
        if st.require_moderator:
            lines.append(f"require_moderator = {_value(st.require_moderator)}")
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
