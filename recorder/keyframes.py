"""Keyframes: a screen saved as the bytes that repaint it, so replay can seek without
feeding the session from its start.

`render(terminal)` turns a `Terminal` into ANSI bytes such that feeding them to a fresh
`Terminal` of the same size gives the same cells (text and attributes), cursor, pen,
modes, margins, tab stops, character sets, saved cursors and alternate screen. The same
bytes repaint a real terminal, so the player writes them as they are.

A keyframe is taken between events (the parser in its ground state). `log_offset` is
where playback goes on from: the first record NOT yet reflected in the repaint;
`event_index` is the last event that is (the index worker's numbering; replay uses only
`t` and `log_offset`).
"""

from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass
from typing import Any

from pyte import charsets as cs
from pyte import graphics as g
from pyte import modes as mo
from wcwidth import wcwidth

from tether.recorder.screen import Terminal

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyframes (
    sid TEXT NOT NULL,
    t REAL NOT NULL,                -- session time of the screen, seconds
    event_index INTEGER NOT NULL,   -- the last event reflected in the repaint
    log_offset INTEGER NOT NULL,    -- byte offset of the first record NOT yet reflected (replay resumes there)
    repaint BLOB NOT NULL,          -- zlib-compressed `render` output
    PRIMARY KEY (sid, log_offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keyframes_t ON keyframes(sid, t);
"""

# Leave the alternate screen first: a full reset alone does not in every terminal model.
RESET = b"\x1b[?1049l\x1bc"
WIDE = "\u4e2d"  # any two-column character, used to create stub cells

_FG = {name: code for code, name in {**g.FG_ANSI, **g.FG_AIXTERM}.items() if name != "default"}
_BG = {name: code for code, name in {**g.BG_ANSI, **g.BG_AIXTERM}.items() if name != "default"}
_DEFAULT_MODES = frozenset({mo.DECAWM, mo.DECTCEM})
_CHARSET_CODES = {id(table): code for code, table in cs.MAPS.items()}


@dataclass(frozen=True)
class Keyframe:
    sid: str
    t: float
    event_index: int  # the last event reflected in the repaint
    log_offset: int  # offset of that event's record: playback goes on from here
    repaint: bytes


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def store(db: sqlite3.Connection, sid: str, t: float, event_index: int, log_offset: int,
          repaint: bytes) -> None:
    db.execute(
        "INSERT OR REPLACE INTO keyframes (sid, t, event_index, log_offset, repaint)"
        " VALUES (?, ?, ?, ?, ?)",
        (sid, t, event_index, log_offset, zlib.compress(repaint, 6)),
    )


def nearest(db: sqlite3.Connection, sid: str, t: float) -> Keyframe | None:
    """The latest keyframe with keyframe.t <= t, or None."""
    try:
        row = db.execute(
            "SELECT t, event_index, log_offset, repaint FROM keyframes"
            " WHERE sid = ? AND t <= ? ORDER BY t DESC, log_offset DESC LIMIT 1",
            (sid, t),
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # nothing indexed yet
        raise
    if row is None:
        return None
    return Keyframe(sid, float(row[0]), int(row[1]), int(row[2]), zlib.decompress(row[3]))


# ----- render -----


def sgr(char: Any, reverse_screen: bool = False) -> str:
    """An absolute SGR (starting from 0) that gives a pen the attributes of `char`.
    Under DECSCNM, 0 itself turns reverse on, so "not reverse" must be said (27)."""
    params = ["0"]
    for flag, code in (("bold", "1"), ("italics", "3"), ("underscore", "4"), ("blink", "5"),
                       ("reverse", "7"), ("strikethrough", "9")):
        if getattr(char, flag):
            params.append(code)
    if reverse_screen and not char.reverse:
        params.append("27")
    params += _colour(char.fg, _FG, "38")
    params += _colour(char.bg, _BG, "48")
    return "\x1b[" + ";".join(params) + "m"


def _colour(value: str, names: dict[str, int], extended: str) -> list[str]:
    if value == "default":
        return []
    if value in names:
        return [str(names[value])]
    if len(value) == 6:
        try:
            r, gr, b = (int(value[i:i + 2], 16) for i in (0, 2, 4))
        except ValueError:
            return []
        return [extended, "2", str(r), str(gr), str(b)]
    return []  # e.g. 38;2 with a component over 255: pyte kept a string we cannot re-create


def _cup(y: int, x: int) -> str:
    return f"\x1b[{y + 1};{x + 1}H"


def _is_wide(data: str) -> bool:
    return bool(data) and wcwidth(data[0]) == 2


class _Painter:
    """Writes the cells of one buffer, tracking the pen so SGR is sent only on change."""

    def __init__(self, screen: Any, out: list[str]) -> None:
        self.columns: int = screen.columns
        self.lines: int = screen.lines
        self.default = screen.default_char
        self.reverse_screen = mo.DECSCNM in screen.mode
        self.out = out
        self.pen: Any = None

    def set_pen(self, char: Any) -> None:
        attrs = char._replace(data=" ")
        if attrs != self.pen:
            self.out.append(sgr(attrs, self.reverse_screen))
            self.pen = attrs

    def put(self, y: int, x: int, char: Any, top: int = 0) -> None:
        self.out.append(_cup(y - top, x))
        self.set_pen(char)
        self.out.append(char.data)

    def buffer(self, buffer: Any) -> None:
        for y in range(self.lines):
            line = buffer.get(y)
            # pyte erases (ED) only the cells it holds, so which cells it holds is state
            # too: draw exactly those.
            present = {x for x in line or () if 0 <= x < self.columns}
            if present:
                self.row(y, [line[x] for x in range(self.columns)], present)

    def row(self, y: int, cells: list[Any], present: set[int]) -> None:
        last = max(present)
        start = 0
        while start <= last and cells[start].data == "":
            start += 1
        # A stub cell (the right half of a wide character, "") at column 0 can only be
        # made by drawing a wide character and deleting its left half (DCH); one by one,
        # right to left, each prepended with ICH.
        for x in range(start - 1, -1, -1):
            self.out.append(_cup(y, 0) + "\x1b[0m\x1b[2@")
            self.pen = self.default
            self.set_pen(cells[x])
            self.out.append(WIDE + _cup(y, 0) + "\x1b[0m\x1b[P")
            self.pen = self.default
        orphans: list[int] = []
        x = start
        cursor = -1  # the column the terminal's cursor is at, if known
        force = -1  # a blank that must be drawn: it replaces a wide character's stub
        while x <= last:
            c = cells[x]
            if c.data == "":
                orphans.append(x)
                x += 1
                continue
            if x not in present and x != force:
                while x <= last and x not in present:
                    x += 1
                cursor = -1
                continue
            if cursor != x:
                self.out.append(_cup(y, x))
            self.set_pen(c)
            self.out.append(c.data)
            if not _is_wide(c.data):
                x += 1
                cursor = x
            elif x == self.columns - 1:
                self.out[-1] = "\x1b[?7l" + c.data + "\x1b[?7h"  # no wrap before it
                break
            elif cells[x + 1].data == "":
                x += 2  # its own stub (if that has other attributes, they are lost)
                cursor = x
            else:
                x += 1  # something was drawn over its right half
                cursor, force, last = -1, x, max(last, x)
        # Stubs that are not the right half of the wide character before them: draw a
        # wide character in their attributes one column to the left, then put back that
        # column, and so on leftwards through a run of stubs.
        for x in reversed(orphans):
            q = x
            while cells[q].data == "" and q > start:
                if _is_wide(cells[q - 1].data) and q == x:
                    break  # see above: a stub of another colour after a wide character
                self.put(y, q - 1, cells[q]._replace(data=WIDE))
                q -= 1
            else:
                if q != x:
                    self.put(y, q, cells[q])


def _charsets(g0: Any, g1: Any, shift: int) -> str:
    return (f"\x1b({_CHARSET_CODES.get(id(g0), 'B')}\x1b){_CHARSET_CODES.get(id(g1), '0')}"
            + ("\x0e" if shift else "\x0f"))


def _mode_seq(mode: int, on: bool) -> str:
    private = mode >= 32 and mode % 32 == 0
    return f"\x1b[{'?' if private else ''}{mode >> 5 if private else mode}{'h' if on else 'l'}"


def _place_cursor(p: _Painter, screen: Any, buffer: Any, y: int, x: int, top: int = 0,
                  wrap: bool = True) -> None:
    """Move to (y, x), `top` being the origin of CUP; x == columns is the state after
    drawing in the last column, so re-draw that column's cell to get there."""
    if x < screen.columns:
        p.out.append(_cup(y - top, x))
        return
    line = buffer.get(y) or {}
    last = screen.columns - 1
    cell = line.get(last, screen.default_char)
    if cell.data == "" and last > 0:
        wide = line.get(last - 1, screen.default_char)
        if _is_wide(wide.data):
            p.put(y, last - 1, wide, top)
            return
    if cell.data == "":
        cell = screen.default_char
    if _is_wide(cell.data):  # with autowrap on it would go to the next line first
        p.out.append(_cup(y - top, last))
        p.set_pen(cell)
        p.out.append("\x1b[?7l" + cell.data + ("\x1b[?7h" if wrap else ""))
        return
    p.put(y, last, cell, top)


def render(terminal: Terminal) -> bytes:
    """ANSI bytes that repaint `terminal`'s screen and state exactly (see module doc)."""
    s: Any = terminal.screen
    out: list[str] = [RESET.decode()]
    p = _Painter(s, out)
    p.pen = s.default_char
    if mo.DECCOLM in s.mode:
        out.append("\x1b[?3h")
    if mo.DECSCNM in s.mode:
        out.append("\x1b[?5h")
        p.pen = None
    # Saved cursors (DECSC) are a stack; re-create each with the state it saved.
    for sp in s.savepoints:
        cur = sp.cursor
        out.append(_charsets(sp.g0_charset, sp.g1_charset, sp.charset))
        out.append("\x1b[?6h" if sp.origin else "\x1b[?6l")
        out.append("\x1b[?7h" if sp.wrap else "\x1b[?7l")
        if cur.x >= s.columns:
            out.append(_cup(cur.y, s.columns - 1) + "\x1b[0m ")
            p.pen = s.default_char
        else:
            out.append(_cup(cur.y, cur.x))
        p.set_pen(cur.attrs)
        out.append("\x1b[?25l" if cur.hidden else "\x1b[?25h")
        out.append("\x1b7")
    if s.savepoints:
        out.append("\x1b[0m\x1b[?6l\x1b[?7h\x1b[?25h" + _charsets(cs.LAT1_MAP, cs.VT100_MAP, 0)
                   + "\x1b[2J")
        p.pen = s.default_char
    main = getattr(s, "_main", None)
    if main is not None:
        main_buffer, saved = main
        p.buffer(main_buffer)
        if saved is not None:
            x, y, attrs = saved
            _place_cursor(p, s, main_buffer, y, x)
            p.set_pen(attrs)
            out.append("\x1b[?1049h")
        else:
            out.append("\x1b[?1047h")
    elif s.alternate:  # a screen that keeps its main buffer elsewhere: at least switch
        out.append("\x1b[?1049h")
    p.buffer(s.buffer)
    if s.tabstops != set(range(8, s.columns, 8)):
        out.append("\x1b[3g")
        out.extend(_cup(0, stop) + "\x1bH" for stop in sorted(s.tabstops) if stop < s.columns)
    out.append(_charsets(s.g0_charset, s.g1_charset, s.charset))
    if s.margins is not None:
        out.append(f"\x1b[{s.margins.top + 1};{s.margins.bottom + 1}r")
    for mode in sorted(s.mode ^ _DEFAULT_MODES):
        if mode not in (mo.DECCOLM, mo.DECSCNM, mo.IRM, mo.DECTCEM):
            out.append(_mode_seq(mode, mode in s.mode))
    cur = s.cursor
    top = s.margins.top if mo.DECOM in s.mode and s.margins is not None else 0
    _place_cursor(p, s, s.buffer, cur.y, cur.x, top, mo.DECAWM in s.mode)
    if mo.IRM in s.mode:
        out.append(_mode_seq(mo.IRM, True))
    p.pen = None
    p.set_pen(cur.attrs)
    if cur.hidden or mo.DECTCEM not in s.mode:
        out.append("\x1b[?25l")
    return "".join(out).encode("utf-8", "surrogateescape")
