"""Limits on inputs that come from other principals, shared by every role that checks them.

One place per limit, so the agent that refuses a value and the recorder or player that
would otherwise try to render it agree. docs/threat-model.md lists every bounded input.
"""

from __future__ import annotations

# A terminal's size. xterm's own limit is far above any screen; these leave room for
# very large monitors with small fonts while keeping a reconstructed screen (cols x rows
# cells) small enough to allocate: 1000 x 1000 cells.
MAX_COLS = 1000
MAX_ROWS = 1000


# What one HELLO may carry (tether.session_request checks it; docs/threat-model.md lists
# each). The agent refuses a HELLO past any of these and names the limit in the reason.
MAX_HELLO_BYTES = 128 * 1024  # the sealed message, as brokers cap packets; dropped unread past it
MAX_GRANT_BYTES = 32 * 1024  # the PASETO token: room for a command at its own limit
MAX_COMMAND_ARGS = 1024
MAX_COMMAND_BYTES = 16 * 1024  # an exec argv: UTF-8 bytes plus one NUL per argument
MAX_ENV_VARS = 32
MAX_ENV_NAME_BYTES = 64
MAX_ENV_VALUE_BYTES = 256  # locale names and COLORTERM are all the agent passes on
MAX_TERM_BYTES = 64
MAX_REASON_BYTES = 1024
MAX_RUN_AS_BYTES = 256
MAX_MODE_BYTES = 16


# Requests to the authority (grants, access questions, enrolments) per principal. The
# authority drops those over this rate before opening them; the embedded broker drops those
# over twice it before queueing them, so a flood never fills the queue every message waits in.
AUTHORITY_REQUEST_RATE = 4.0  # a second, sustained
AUTHORITY_REQUEST_BURST = 64  # lets a console ask about 1000+ agents at once (20 a question)


def valid_geometry(cols: object, rows: object) -> bool:
    """Whether (cols, rows) is a terminal size every role accepts: ints in 1..MAX."""
    return (type(cols) is int and type(rows) is int
            and 1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS)


def clamp_geometry(cols: int, rows: int) -> tuple[int, int]:
    """The nearest size every role accepts, for sizes a reader cannot refuse (a stored
    recording): each side into 1..MAX."""
    return min(max(cols, 1), MAX_COLS), min(max(rows, 1), MAX_ROWS)


__all__ = [
    "AUTHORITY_REQUEST_BURST",
    "AUTHORITY_REQUEST_RATE",
    "MAX_COLS",
    "MAX_COMMAND_ARGS",
    "MAX_COMMAND_BYTES",
    "MAX_ENV_NAME_BYTES",
    "MAX_ENV_VALUE_BYTES",
    "MAX_ENV_VARS",
    "MAX_GRANT_BYTES",
    "MAX_HELLO_BYTES",
    "MAX_MODE_BYTES",
    "MAX_REASON_BYTES",
    "MAX_ROWS",
    "MAX_RUN_AS_BYTES",
    "MAX_TERM_BYTES",
    "clamp_geometry",
    "valid_geometry",
]
