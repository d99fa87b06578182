"""tether export: asciicast v2 that the real asciinema plays, and the text transcript."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from test_replay import ROOT, make_store

from tether.recevents import EventKind
from tether.recorder import db as recdb
from tether.recorder.export import asciicast, transcript
from tether.recorder.replay import Recording

OUT = EventKind.OUTPUT
EURO = "\u20ac".encode()

EVENTS = [
    (0.0, OUT, b"\x1b[32muser@web1\x1b[m:~$ "),
    (0.5, EventKind.INPUT, b"echo h\xc3"),
    (0.6, EventKind.INPUT, b"\xa9llo\r"),
    (0.7, OUT, b"echo h\xc3\xa9llo\r\nh\xc3"),  # a character split across two events
    (0.8, OUT, b"\xa9llo " + EURO[:2]),
    (0.9, OUT, EURO[2:] + b"\r\n"),
    (1.0, EventKind.RESIZE, struct.pack(">HH", 100, 30)),
    (2.0, EventKind.GAP, b'{"lost_bytes": 42, "lost_events": 3}'),
    (2.5, EventKind.REDACTION, b'{"hidden": true}'),
    (3.0, EventKind.NOTICE, b"session frozen by an admin"),
    (3.5, OUT, b"bad byte \xff here\r\n"),
    (4.0, EventKind.EXIT, b'{"code": 0, "signal": null}'),
]


def recording(store: Path, events: list[tuple[float, EventKind, bytes]], **kw: object) -> Recording:
    sid = make_store(store, events, **kw)  # type: ignore[arg-type]
    db = recdb.connect(store, create=False)
    try:
        return Recording.load(store, db, sid)
    finally:
        db.close()


def test_asciicast_v2(tmp_path: Path) -> None:
    rec = recording(tmp_path, EVENTS, cols=90, rows=20)
    lines = list(asciicast(rec))
    header = json.loads(lines[0])
    assert header == {"version": 2, "width": 90, "height": 20, "timestamp": 1_700_000_000,
                      "duration": 4.0, "title": f"alice@web1 {rec.info.sid}"}
    events = [json.loads(line) for line in lines[1:]]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "h\u00e9llo \u20ac\r\n" in output and "\ufffd" not in output.replace("\ufffd here", "")
    assert "bad byte \ufffd here" in output
    assert "".join(e[2] for e in events if e[1] == "i") == "echo h\u00e9llo\r"
    assert [e for e in events if e[1] == "r"] == [[1.0, "r", "100x30"]]
    assert [e[2] for e in events if e[1] == "m"] == [
        "recording gap: 42 bytes lost", "input hidden (echo off)", "session frozen by an admin",
        "exited with code 0"]
    times = [e[0] for e in events]
    assert times == sorted(times)


def test_transcript_has_scrolled_lines_and_the_final_screen_without_vim(tmp_path: Path) -> None:
    events = [(i * 0.1, OUT, b"line %02d\r\n" % i) for i in range(30)]
    events += [
        (5.0, OUT, b"$ vim notes\r\n\x1b[?1049h\x1b[H\x1b[2JVIM SCREEN\r\n" + b"~\r\n" * 30),
        (6.0, OUT, b"\x1b[?1049l$ echo done\r\ndone\r\n$ "),
    ]
    text = transcript(recording(tmp_path, events, cols=40, rows=10))
    lines = text.splitlines()
    assert lines[:30] == [f"line {i:02d}" for i in range(30)]
    assert lines[30:] == ["$ vim notes", "$ echo done", "done", "$"]
    assert "VIM" not in text and "~" not in text and text.endswith("$\n")


def test_transcript_of_a_session_ending_in_a_full_screen_program(tmp_path: Path) -> None:
    events = [(0.0, OUT, b"$ top\r\n\x1b[?1049h\x1b[Htop - 12:00\r\n")]
    assert transcript(recording(tmp_path, events)) == "$ top\n"


HARNESS = """
import argparse, sys
from tether.commands import export as export_cli
p = argparse.ArgumentParser()
export_cli.configure(p)
sys.exit(export_cli.run(p.parse_args(sys.argv[1:])))
"""


def export(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", HARNESS, *args], capture_output=True,
                          cwd=ROOT, timeout=60)


def asciinema() -> list[str]:
    # The pinned asciinema of the test extras, from this interpreter: whatever else is on
    # PATH (Debian's asciinema wants /dev/tty) is not what the README's install provides.
    return [sys.executable, "-m", "asciinema"]


def test_exported_asciicast_plays_in_asciinema(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    sid = make_store(store, [*EVENTS[:6], (1.5, OUT, b"\x1b[1mTHE-END-MARK\x1b[m\r\n")])
    cast = tmp_path / "s.cast"
    r = export([sid[:8], "--store", str(store), "-o", str(cast)])
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}
    cat = subprocess.run([*asciinema(), "cat", str(cast)], capture_output=True, env=env,
                         timeout=60)
    assert cat.returncode == 0, cat.stderr
    assert "h\u00e9llo \u20ac".encode() in cat.stdout and b"THE-END-MARK" in cat.stdout
    # play wants a terminal only for its keyboard; with stdin not a tty it just plays
    play = subprocess.run([*asciinema(), "play", "-i", "0.1", str(cast)], capture_output=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert play.returncode == 0, play.stderr
    assert b"THE-END-MARK" in play.stdout


def test_text_export_to_stdout(tmp_path: Path) -> None:
    store = tmp_path / "recordings"
    sid = make_store(store, EVENTS)
    r = export([sid, "--store", str(store), "--format", "text"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[:3] == [
        "user@web1:~$ echo h\u00e9llo", "h\u00e9llo \u20ac", "bad byte \ufffd here"]
