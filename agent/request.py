"""What a HELLO asks the agent for, checked field by field before anything acts on it.

Every field comes from the network: the client wrote it, and a hostile broker may replay
or reroute it. Each is bounded (tether.limits); a HELLO past a bound is refused with a
reason that names the field and the limit, so the user sees what to change. Nothing past
this point sees the raw HELLO body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.channel import DEFAULT_WINDOW_BYTES
from tether.errors import TetherError
from tether.frames import MAX_PAYLOAD
from tether.grants import command_problem
from tether.limits import (
    MAX_COLS,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_ENV_VARS,
    MAX_GRANT_BYTES,
    MAX_MODE_BYTES,
    MAX_REASON_BYTES,
    MAX_ROWS,
    MAX_RUN_AS_BYTES,
    MAX_TERM_BYTES,
    valid_geometry,
)
from tether.topics import is_session_id

MIN_FRAME = 1024  # the smallest output frame a client may ask for (HELLO `max_frame`)
MIN_WINDOW = 64 * 1024  # the smallest credit window a client may ask for (HELLO `window`)
DEFAULT_COLS = 80
DEFAULT_ROWS = 24
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RequestError(TetherError):
    """The HELLO asks for something malformed or out of bounds; the message says what."""


@dataclass(frozen=True)
class SessionRequest:
    grant: str
    mode: str | None
    command: list[str] | None
    term: str | None  # as the client sent it; None when it sent none
    cols: int = DEFAULT_COLS
    rows: int = DEFAULT_ROWS
    env: dict[str, str] = field(default_factory=dict)
    max_frame: int = MAX_PAYLOAD
    window: int = DEFAULT_WINDOW_BYTES
    attach: str | None = None  # the sid of a live session to take over (docs/protocol.md §8.1)


def parse_request(body: Mapping[str, Any]) -> SessionRequest:
    """The checked request, or RequestError naming the first field out of bounds."""
    _optional_text(body, "reason", MAX_REASON_BYTES)
    _optional_text(body, "run_as", MAX_RUN_AS_BYTES)
    cols, rows = _geometry(body)
    mode = _optional_text(body, "mode", MAX_MODE_BYTES)
    return SessionRequest(
        grant=_grant(body),
        mode=mode,
        command=_command(mode, body.get("command")),
        term=_term(body.get("term")),
        cols=cols,
        rows=rows,
        env=_env(body.get("env")),
        max_frame=max_frame(body),
        window=window_bytes(body),
        attach=_attach(body.get("attach")),
    )


def _attach(value: object) -> str | None:
    if value is None:
        return None
    if not is_session_id(value):
        raise RequestError("attach must be a session id: 32 lowercase hex digits")
    return value


def max_frame(body: Mapping[str, Any]) -> int:
    """The largest output frame payload: the HELLO's `max_frame` (the web console asks for
    3 KiB, which keeps every packet under the 4 KiB that Mosquitto's websocket listener
    sends quickly), clamped to MIN_FRAME…MAX_PAYLOAD; MAX_PAYLOAD when absent."""
    value = body.get("max_frame")
    if not isinstance(value, int) or isinstance(value, bool):
        return MAX_PAYLOAD
    return max(MIN_FRAME, min(MAX_PAYLOAD, value))


def window_bytes(body: Mapping[str, Any]) -> int:
    """The channel's credit window in bytes, both ways: the HELLO's `window` (the web
    console asks for 64 KiB, so Ctrl-C in a flood waits behind less output), clamped to
    MIN_WINDOW…DEFAULT_WINDOW_BYTES; the default when absent."""
    value = body.get("window")
    if not isinstance(value, int) or isinstance(value, bool):
        return DEFAULT_WINDOW_BYTES
    return max(MIN_WINDOW, min(DEFAULT_WINDOW_BYTES, value))


def _utf8_size(value: str, what: str) -> int:
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise RequestError(f"{what} is not valid UTF-8") from None
    if b"\0" in encoded:
        raise RequestError(f"{what} contains a NUL character")
    return len(encoded)


def _bounded(value: str, what: str, limit: int) -> str:
    size = _utf8_size(value, what)
    if size > limit:
        raise RequestError(f"{what} is {size} bytes; the limit is {limit}")
    return value


def _optional_text(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"the HELLO's {key} must be a string")
    return _bounded(value, f"the HELLO's {key}", limit)


def _grant(body: Mapping[str, Any]) -> str:
    value = body.get("grant")
    if not isinstance(value, str) or not value:
        raise RequestError("the HELLO carries no grant; request one from the authority")
    return _bounded(value, "the grant", MAX_GRANT_BYTES)


def _geometry(body: Mapping[str, Any]) -> tuple[int, int]:
    cols = body.get("cols", DEFAULT_COLS)
    rows = body.get("rows", DEFAULT_ROWS)
    if not valid_geometry(cols, rows):
        raise RequestError(f"the terminal size must be whole numbers of columns from 1 to "
                           f"{MAX_COLS} and rows from 1 to {MAX_ROWS}")
    return int(cols), int(rows)


def _term(value: object) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not _TERM.fullmatch(value)
            or len(value) > MAX_TERM_BYTES):
        raise RequestError(f"the terminal type must be a name such as xterm-256color: letters, "
                           f"digits and . _ + -, at most {MAX_TERM_BYTES} bytes")
    return value


def _command(mode: str | None, value: object) -> list[str] | None:
    """The same bounds as a grant's command (the two must be equal to run)."""
    if value is None and mode != "exec":
        return None
    problem = command_problem(mode or "", value)
    if problem is not None:
        raise RequestError(problem)
    assert isinstance(value, list)
    return list(value)


def _env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("the HELLO's env must be an object of names and values")
    if len(value) > MAX_ENV_VARS:
        raise RequestError(f"the HELLO's env has {len(value)} variables; the limit is "
                           f"{MAX_ENV_VARS}")
    env: dict[str, str] = {}
    for name, text in value.items():
        if (not isinstance(name, str) or not _ENV_NAME.fullmatch(name)
                or len(name) > MAX_ENV_NAME_BYTES):
            raise RequestError(f"an env variable name must be letters, digits and _, at most "
                               f"{MAX_ENV_NAME_BYTES} bytes")
        if not isinstance(text, str):
            raise RequestError(f"env variable {name} must have a string value")
        env[name] = _bounded(text, f"env variable {name}", MAX_ENV_VALUE_BYTES)
    return env


__all__ = [
    "MIN_FRAME",
    "MIN_WINDOW",
    "RequestError",
    "SessionRequest",
    "max_frame",
    "parse_request",
    "window_bytes",
]
