"""Keyframes: render(t) repaints a fresh Terminal into the same state as t, and the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from tether.recorder import db as recdb
from tether.recorder import keyframes
from tether.recorder.screen import Terminal


def _cells(screen: Any, buffer: Any) -> list[list[Any]]:
    rows = []
    for y in range(screen.lines):
        line = buffer.get(y)
        rows.append([line[x] if line else screen.default_char for x in range(screen.columns)])
    return rows


def _display(t: Terminal) -> list[str] | str:
    try:
        return t.display
    except IndexError:
        return "pyte cannot display a lone stub cell"  # the cells are compared all the same


def state(t: Terminal) -> dict[str, Any]:
    """Everything in a Terminal that shows, or changes what later output does."""
    s: Any = t.screen
    main = getattr(s, "_main", None)
    return {
        "display": _display(t),
        "cells": _cells(s, s.buffer),
        "cursor": (s.cursor.x, s.cursor.y, s.cursor.hidden, s.cursor.attrs),
        "mode": set(s.mode),
        "margins": s.margins,
        "tabstops": {x for x in s.tabstops if x < s.columns},
        "charsets": (id(s.g0_charset), id(s.g1_charset), s.charset),
        "savepoints": [(sp.cursor.x, sp.cursor.y, sp.cursor.hidden, sp.cursor.attrs,
                        id(sp.g0_charset), id(sp.g1_charset), sp.charset, sp.origin, sp.wrap)
                       for sp in s.savepoints],
        "alternate": s.alternate,
        "main": None if main is None else (_cells(s, main[0]), main[1]),
    }


def repainted(t: Terminal) -> Terminal:
    fresh = Terminal(t.screen.columns, t.screen.lines)
    fresh.feed(keyframes.render(t))
    return fresh


def assert_same(t: Terminal) -> None:
    r = repainted(t)
    want, got = state(t), state(r)
    for key in want:
        assert got[key] == want[key], key


# ----- generated terminal output -----

TEXT = st.sampled_from([
    "hello", "a", " ", "x y", "\u4e2d\u6587", "\u4e2d", "e\u0301", "\u2764\ufe0f",
    "\U0001f468\u200d\U0001f469", "\u00e9t\u00e9", "\u2500\u2502", "lqqk", "~",
])
SGR_PARAM = st.one_of(
    st.sampled_from(["0", "1", "3", "4", "5", "7", "9", "22", "23", "24", "25", "27", "29",
                     "39", "49", ""]),
    st.integers(30, 37).map(str), st.integers(40, 47).map(str),
    st.integers(90, 97).map(str), st.integers(100, 107).map(str),
    st.integers(0, 255).map(lambda n: f"38;5;{n}"), st.integers(0, 255).map(lambda n: f"48;5;{n}"),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(
        lambda c: f"38;2;{c[0]};{c[1]};{c[2]}"),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(
        lambda c: f"48:2::{c[0]}:{c[1]}:{c[2]}"),
)
N = st.integers(0, 30).map(lambda n: "" if n == 0 else str(n))
# DECSCNM (?5) is left out: pyte gives each line a default cell from DECSCNM's state when
# the line is made, hidden state no repaint re-creates; see test_reverse_screen instead.
MODE = st.sampled_from(["?6", "?7", "4", "20", "?25", "?1049", "?1047", "?47", "?1",
                        "?2004", "?1000"])
CONTROL = st.one_of(
    st.sampled_from(["\r", "\n", "\r\n", "\b", "\t", "\x1b7", "\x1b8", "\x1b(0", "\x1b(B",
                     "\x1b)0", "\x0e", "\x0f", "\x1bH", "\x1b[g", "\x1b[3g", "\x1bD", "\x1bM",
                     "\x1bE", "\x1b[r", "\x1b[m"]),
    st.tuples(N, N).map(lambda p: f"\x1b[{p[0]};{p[1]}H"),
    st.tuples(N, st.sampled_from("ABCDGdJK@PXLMSTE")).map(lambda p: f"\x1b[{p[0]}{p[1]}"),
    st.sampled_from(["0", "1", "2"]).flatmap(lambda n: st.sampled_from([f"\x1b[{n}J", f"\x1b[{n}K"])),
    st.lists(SGR_PARAM, min_size=1, max_size=4).map(lambda ps: f"\x1b[{';'.join(ps)}m"),
    st.tuples(MODE, st.sampled_from("hl")).map(lambda p: f"\x1b[{p[0]}{p[1]}"),
    st.tuples(N, N).map(lambda p: f"\x1b[{p[0]};{p[1]}r"),
)
SEQUENCE = st.lists(st.one_of(TEXT, CONTROL), max_size=60).map("".join)
SIZE = st.tuples(st.integers(2, 30), st.integers(1, 8))


def feed_or_reject(t: Terminal, text: str) -> None:
    # pyte 0.8.2 itself raises on a few inputs (CSI ?6h CSI d: an assert; CSI 5J/3K:
    # UnboundLocalError); those are screen.py's to fix, not the repaint's.
    try:
        t.feed(text.encode())
    except (AssertionError, UnboundLocalError):
        reject()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)  # the same examples in every run: CI must not find new pyte quirks at random
@given(SIZE, SEQUENCE, SEQUENCE)
def test_render_repaints_the_same_state(size: tuple[int, int], before: str, after: str) -> None:
    cols, rows = size
    t = Terminal(cols, rows)
    feed_or_reject(t, before)
    assert_same(t)
    # And the state behind the picture (pen, modes, margins, charsets, saved cursors) is
    # the same too: the same later output changes both alike.
    r = repainted(t)
    cur: Any = t.screen.cursor
    if cur.x >= cols and (cols - 1) not in t.screen.buffer.get(cur.y, {}):
        # Only drawing in the last column makes that cursor state, so the repaint holds
        # a blank there that t does not: same picture, but pyte's ED (which erases only
        # the cells it holds) would colour it differently.
        return
    # pyte's ICH keeps a cell past the right edge (an off-by-one) that a later DCH pulls
    # back into view; no terminal keeps such a cell, so drop them before going on.
    for line in t.screen.buffer.values():
        for x in [x for x in line if x >= cols]:
            del line[x]
    # pyte's DL/IL move only the lines it holds, so an untouched line below is not moved
    # up into the deleted one; hold every line in both, as a terminal has them all.
    for term in (t, r):
        for y in range(rows):
            term.screen.buffer[y]  # the defaultdict makes the line
    feed_or_reject(t, after)
    r.feed(after.encode())
    assert state(r) == state(t)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(SIZE, SEQUENCE, SIZE, SEQUENCE)
def test_render_after_a_resize(size: tuple[int, int], before: str, new: tuple[int, int],
                               after: str) -> None:
    t = Terminal(*size)
    feed_or_reject(t, before)
    t.resize(*new)
    # pyte's resize can leave the cursor below the last line (it restores the saved
    # position before the size changes); no terminal has that state, so clamp it here.
    for cur in [t.screen.cursor, *(sp.cursor for sp in t.screen.savepoints)]:
        cur.y, cur.x = min(cur.y, t.screen.lines - 1), min(cur.x, t.screen.columns)
    feed_or_reject(t, after)
    assert_same(t)


# ----- real-ish captures -----

SHELL = (
    b"\x1b]0;user@host: ~\x07\x1b[01;32muser@host\x1b[00m:\x1b[01;34m~\x1b[00m$ ls --color\r\n"
    b"\x1b[0m\x1b[01;34mbin\x1b[0m  \x1b[01;32mrun.sh\x1b[0m  notes.txt  \xe4\xb8\xad\xe6\x96\x87.txt\r\n"
    b"\x1b]133;D;0\x07\x1b]133;A\x07user@host:~$ "
)
VIM = (
    b"\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\x1b[H\x1b[2J\x1b[?25l\x1b[1;24r\x1b[?12h\x1b[?12l"
    b"\x1b[27m\x1b[29m\x1b[m\x1b[H\x1b[2J\x1b[2;1H\x1b[94m~                   \x1b[3;1H~"
    b"\x1b[m\x1b[24;63H0,0-1\x1b[9CAll\x1b[1;1H\x1b[34h\x1b[?25hdef main():\r\n"
    b"    print(\x1b[31m\"h\xc3\xa9llo \xe2\x9d\xa4\xef\xb8\x8f\"\x1b[m)\x1b[2;5H"
)
TOP = (
    b"\x1b[?1h\x1b=\x1b[H\x1b[2J\x1b[mtop - 12:03:01 up 3 days,  load average: 0.10\x1b[K\r\n"
    b"Tasks:\x1b[m\x1b[1m 201 \x1b[mtotal\x1b[K\r\n\x1b[7m    PID USER      %CPU COMMAND"
    b"        \x1b[m\x1b[K\r\n\x1b[1m   1234 root      99.0 \x1b[38;2;10;200;30mpython3\x1b[m\x1b[K"
    b"\x1b[4;1H\x1b[5;40r\x1b[5;1H\x1bM\x1b[r\x1b[?25l"
)


def test_real_captures() -> None:
    for capture in (SHELL, VIM, TOP, SHELL + VIM, SHELL + VIM + b"\x1b[?1049l\x1b[?25h"):
        for size in ((80, 24), (40, 10)):
            t = Terminal(*size)
            for i in range(0, len(capture), 7):  # fed in small pieces, like PTY reads
                t.feed(capture[i:i + 7])
            assert_same(t)
            r = repainted(t)
            assert r.display == t.display


def test_reverse_screen() -> None:
    t = Terminal(20, 3)
    t.feed(b"\x1b[?5hreverse \x1b[0mpen \x1b[27mnot\r\n\x1b[31mred")
    assert_same(t)


def test_alternate_screen_is_entered_and_the_shell_screen_kept() -> None:
    t = Terminal(30, 5)
    t.feed(b"shell$ vim\r\n\x1b[?1049h\x1b[H\x1b[2JVIM TEXT")
    r = repainted(t)
    assert r.screen.alternate and r.display[0].startswith("VIM TEXT")
    r.feed(b"\x1b[?1049l")
    assert r.display[0].startswith("shell$ vim")


def test_repaint_is_compact_for_an_ordinary_screen() -> None:
    t = Terminal(80, 24)
    t.feed(b"".join(b"line %d \x1b[32mgreen\x1b[m\r\n" % i for i in range(40)))
    repaint = keyframes.render(t)
    assert len(repaint) < 1200


# ----- the store -----


def test_store_and_nearest(tmp_path: Path) -> None:
    db: sqlite3.Connection = recdb.connect(tmp_path)
    sid = "ab" * 16
    assert keyframes.nearest(db, sid, 10.0) is None  # no table yet: not indexed
    keyframes.ensure_schema(db)
    keyframes.ensure_schema(db)  # idempotent
    for i, t in enumerate((5.0, 10.0, 15.0)):
        keyframes.store(db, sid, t, i * 10, i * 1000, b"repaint %d" % i)
    keyframes.store(db, "cd" * 16, 12.0, 3, 300, b"other")
    assert keyframes.nearest(db, sid, 4.9) is None
    kf = keyframes.nearest(db, sid, 12.0)
    assert kf is not None
    assert (kf.t, kf.event_index, kf.log_offset, kf.repaint) == (10.0, 10, 1000, b"repaint 1")
    kf = keyframes.nearest(db, sid, 15.0)
    assert kf is not None and kf.repaint == b"repaint 2"
    keyframes.store(db, sid, 15.0, 20, 2000, b"again")  # re-indexing replaces
    kf = keyframes.nearest(db, sid, 99.0)
    assert kf is not None and kf.repaint == b"again"
