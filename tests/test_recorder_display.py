"""Hole 4 in the auditor commands: text from other principals never drives the reader's
terminal. A real session's argv, reason and output carry ESC sequences, BEL, CR and bidi
overrides; in a copy of the store the user, agent, reason and a command line carry them
too (as a store written by an older or another authority may). Every command that prints
them (sessions, search, commands, replay, verify, export) shows them escaped.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from stack import TETHER, Stack, wait_for

from tether.display import safe

EVIL = "ev\x1b]0;pwned\x07il\x1b[2J\x1b[31m\rX\u202eLIVE\x9b1m\x7f"
BIDI = "INC-\u202e7331"  # a reason the authority accepts: no C0 controls, but a bidi override
NEEDLE = "needle-q7x"
SHOWN = safe(EVIL).encode()  # what the reader sees instead: every control as an escape


def _printable(out: bytes) -> None:
    """Nothing but printable text and newlines reached the reader's terminal."""
    text = out.decode("utf-8")
    bad = sorted({f"U+{ord(c):04X}" for c in text if not c.isprintable() and c != "\n"})
    assert not bad, f"raw {bad} in: {text[:400]!r}"


@pytest.fixture(scope="module")
def store(stack: Stack) -> tuple[Path, str, str]:
    """A store copy with a shell and an exec session whose fields are hostile."""
    shell = stack.recorded_shell(
        f"printf '{NEEDLE}-\\342\\200\\256-tail\\n'".encode(),
        f"echo cmd-{chr(0x202e)}-x".encode())
    start = time.time()
    r = stack.tether("run", "--reason", BIDI, "local", "--", "sh", "-c", "echo done", EVIL)
    assert r.returncode == 0, r.stderr
    exec_row = stack.wait_recorded("closed", after=start)

    def indexed() -> bool:
        out = stack.tether("search", NEEDLE, "--json", "--session", shell["sid"])
        return out.returncode == 0 and bool(json.loads(out.stdout))
    wait_for(indexed, timeout=30, what="the shell session indexed")

    copy = stack.root / "store-hostile"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(stack.home.recordings, copy)
    db = sqlite3.connect(copy / "index.db")
    try:
        for sid in (shell["sid"], exec_row["sid"]):
            db.execute("UPDATE sessions SET user=?, agent=?, reason=?, run_as=? WHERE sid=?",
                       (f"u{EVIL}", f"a{EVIL}", f"r{EVIL}", f"ra{EVIL}", sid))
        db.commit()
    finally:
        db.close()
    db = sqlite3.connect(copy / "search.db")  # the text index's own file
    try:
        db.execute("UPDATE commands SET command=? WHERE sid=?", (f"c{EVIL}", shell["sid"]))
        assert db.total_changes > 0
        db.commit()
    finally:
        db.close()
    return copy, shell["sid"], exec_row["sid"]


def test_the_real_session_carries_the_hostile_argv_and_reason(stack: Stack,
                                                              store: tuple[Path, str, str]) -> None:
    _, _, sid = store
    row = stack.recorded(sid)
    assert json.loads(row["command"])[-1] == EVIL and row["reason"] == BIDI
    r = stack.tether("sessions", "--limit", "5")
    assert r.returncode == 0, r.stderr
    _printable(r.stdout)
    assert SHOWN in r.stdout and safe(BIDI).encode() in r.stdout, r.stdout


@pytest.mark.parametrize("json_out", [False, True])
def test_sessions(stack: Stack, store: tuple[Path, str, str], json_out: bool) -> None:
    copy, _, _ = store
    r = stack.tether("sessions", "--store", str(copy), *(["--json"] if json_out else []))
    assert r.returncode == 0, r.stderr
    _printable(r.stdout)
    if json_out:
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert any(row["user"] == f"u{EVIL}" for row in rows)  # the data is kept, only escaped
    else:
        for field in (b"u", b"a", b"ra", b"r"):
            assert field + SHOWN in r.stdout, (field, r.stdout)


@pytest.mark.parametrize("json_out", [False, True])
def test_search(stack: Stack, store: tuple[Path, str, str], json_out: bool) -> None:
    copy, shell, _ = store
    r = stack.tether("search", NEEDLE, "--store", str(copy), *(["--json"] if json_out else []))
    assert r.returncode == 0, r.stderr
    _printable(r.stdout)
    if json_out:
        hits = json.loads(r.stdout)
        assert any(h["sid"] == shell and "\u202e" in h["snippet"] for h in hits), hits
    else:
        assert b"\\u202e-tail" in r.stdout and b"u" + SHOWN in r.stdout, r.stdout


@pytest.mark.parametrize("json_out", [False, True])
def test_commands(stack: Stack, store: tuple[Path, str, str], json_out: bool) -> None:
    copy, shell, _ = store
    r = stack.tether("commands", shell, "--store", str(copy), *(["--json"] if json_out else []))
    assert r.returncode == 0, r.stderr
    _printable(r.stdout)
    if not json_out:
        assert b"c" + SHOWN in r.stdout, r.stdout


def test_replay_header(stack: Stack, store: tuple[Path, str, str]) -> None:
    copy, _, sid = store
    r = stack.tether("replay", sid, "--store", str(copy))
    assert r.returncode == 0, r.stderr
    _printable(r.stderr)
    assert b"u" + SHOWN in r.stderr and b"a" + SHOWN in r.stderr, r.stderr


def test_verify(stack: Stack, store: tuple[Path, str, str]) -> None:
    copy, _, sid = store
    r = stack.tether("verify", sid, "--store", str(copy))
    assert r.returncode == 1, r.stdout  # the row no longer matches its grant
    _printable(r.stdout)
    assert b"u" + SHOWN in r.stdout and b"differ from its grant's" in r.stdout, r.stdout


def test_export(stack: Stack, store: tuple[Path, str, str]) -> None:
    copy, shell, sid = store
    cast = stack.tether("export", sid, "--store", str(copy))
    assert cast.returncode == 0, cast.stderr
    _printable(cast.stdout)
    assert json.loads(cast.stdout.splitlines()[0])["title"].startswith(f"u{EVIL}@")
    # The text transcript on a terminal: the recorded bidi override is shown, not obeyed.
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([TETHER, "export", shell, "--store", str(copy), "--format", "text"],
                              stdout=slave, stderr=subprocess.PIPE, env=stack.env, timeout=60)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, proc.stderr
    out = out.replace(b"\r\n", b"\n")
    _printable(out)
    assert f"{NEEDLE}-\\u202e-tail".encode() in out, out
