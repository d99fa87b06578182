"""OSC 133 marks from raw output, across chunk boundaries, and the commands they give."""

from __future__ import annotations

import sqlite3

import pytest

from tether.recorder.osc133 import Mark, MarkParser
from tether.recorder.textindex import SessionIndexer, ensure_schema


def marks_of(chunks: list[bytes]) -> list[tuple[str, tuple[str, ...], int, int]]:
    p = MarkParser()
    out = []
    for i, chunk in enumerate(chunks):
        for m in p.feed(chunk):
            assert chunk[m.end - 1:m.end] in (b"\x07", b"\\")
            out.append((m.kind, m.params, i, m.end))
    return out


def test_marks_with_bel_and_st_terminators() -> None:
    data = b"x\x1b]133;A\x07$ \x1b]133;B\x1b\\ls\r\n\x1b]133;C;cmdline_url=ls%20-la\x07out\x1b]133;D;2\x07"
    got = marks_of([data])
    assert [(k, p) for k, p, _, _ in got] == [
        ("A", ()), ("B", ()), ("C", ("cmdline_url=ls%20-la",)), ("D", ("2",))]
    assert data[got[0][3]:].startswith(b"$ ")
    assert Mark("C", ("cmdline_url=ls%20-la%3B%20echo",), 0).cmdline == "ls -la; echo"
    assert Mark("D", ("2",), 0).exit_code == 2 and Mark("D", (), 0).exit_code is None


@pytest.mark.parametrize("cut", range(1, 40))
def test_marks_split_anywhere_across_chunks(cut: int) -> None:
    data = b"ab\x1b]133;C;cmdline_url=echo%20hi\x1b\\hi\r\n\x1b]133;D;0\x07"
    got = marks_of([data[:cut], data[cut:]])
    assert [(k, p) for k, p, _, _ in got] == [("C", ("cmdline_url=echo%20hi",)), ("D", ("0",))]


def test_other_osc_and_cancelled_marks_are_ignored() -> None:
    data = b"\x1b]0;title\x07\x1b]133;A\x1b[31m\x1b]133;B\x07"
    assert marks_of([data]) == [("B", (), 0, len(data))]


def index(events: list[tuple[str, float, bytes]], cols: int = 40, rows: int = 10) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    ensure_schema(db)
    ix = SessionIndexer(db, "s1", cols, rows, started=1000.0)
    offset = 0
    for kind, t, data in events:
        if kind == "o":
            ix.output(t, offset, data)
            offset += len(data)
        else:
            ix.input(t, data)
    ix.finish(events[-1][1])
    return db


def prompt(t: float) -> list[tuple[str, float, bytes]]:
    return [("o", t, b"\x1b]133;A\x07user@host:~$ \x1b]133;B\x07")]


def test_commands_from_marks_exit_code_and_duration() -> None:
    events = [
        *prompt(0.0),
        ("o", 1.0, b"false\r\n\x1b]133;C;cmdline_url=false\x07"),
        ("o", 1.01, b"\x1b]133;D;1\x07"),
        *prompt(1.02),
        ("o", 2.0, b"sleep 1\r\n\x1b]133;C;cmdline_url=sleep%201\x07"),
        ("o", 3.004, b"\x1b]133;D;0\x07"),
        *prompt(3.01),
        ("o", 4.0, b"seq 3\r\n\x1b]133;C\x07"),  # no cmdline_url: taken from the screen
        ("o", 4.1, b"1\r\n2\r\n3\r\n\x1b]133;D;0\x07"),
        *prompt(4.2),
    ]
    db = index(events)
    rows = db.execute("SELECT seq, command, t, duration, exit_code, source, output, wall FROM commands"
                      " ORDER BY seq").fetchall()
    assert [(r[1], r[4], r[5]) for r in rows] == [
        ("false", 1, "osc133"), ("sleep 1", 0, "osc133"), ("seq 3", 0, "osc133")]
    assert rows[1][2] == 2.0 and rows[1][3] == pytest.approx(1.004)
    assert rows[1][7] == 1002.0
    assert rows[2][6] == "1\n2\n3"
    hits = db.execute("SELECT text FROM text_fts WHERE text_fts MATCH '\"sleep 1\"'").fetchall()
    assert ("sleep 1",) in hits


def test_command_output_excerpt_is_bounded_and_keeps_first_and_last_lines() -> None:
    out = b"".join(b"line %d %s\r\n" % (i, b"x" * 20) for i in range(5000))
    db = index([*prompt(0.0), ("o", 1.0, b"big\r\n\x1b]133;C;cmdline_url=big\x07"),
                ("o", 2.0, out), ("o", 3.0, b"\x1b]133;D;0\x07"), *prompt(3.1)], rows=24)
    (excerpt,) = db.execute("SELECT output FROM commands").fetchone()
    assert excerpt.startswith("line 0 ") and "line 4999 " in excerpt
    assert "user@host" not in excerpt and len(excerpt.encode()) <= 2100


def test_enter_fallback_without_marks() -> None:
    events = [("o", 0.0, b"$ "), ("i", 1.0, b"l"), ("o", 1.0, b"l"), ("i", 1.1, b"s"), ("o", 1.1, b"s"),
              ("i", 1.5, b"\r"), ("o", 1.51, b"\r\nfile\r\n$ "),
              ("i", 2.0, b"echo pasted\r"), ("o", 2.01, b"echo pasted\r\npasted\r\n$ ")]
    db = index(events)
    rows = db.execute("SELECT command, t, source, exit_code FROM commands ORDER BY seq").fetchall()
    assert rows == [("$ ls", 1.5, "enter", None), ("$ echo pasted", 2.0, "enter", None)]
