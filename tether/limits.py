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


def valid_geometry(cols: object, rows: object) -> bool:
    """Whether (cols, rows) is a terminal size every role accepts: ints in 1..MAX."""
    return (type(cols) is int and type(rows) is int
            and 1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS)


def clamp_geometry(cols: int, rows: int) -> tuple[int, int]:
    """The nearest size every role accepts, for sizes a reader cannot refuse (a stored
    recording): each side into 1..MAX."""
    return min(max(cols, 1), MAX_COLS), min(max(rows, 1), MAX_ROWS)


__all__ = ["MAX_COLS", "MAX_ROWS", "clamp_geometry", "valid_geometry"]
