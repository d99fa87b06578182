"""tether replay: the sans-IO player, seeking with keyframes, and the terminal edge on a PTY."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.commands.replay import parse_keys
from tether.edge.pty import open_pty, read_ready
from tether.recevents import Event, EventKind, chain_next, genesis, log_record
from tether.recorder import db as recdb
from tether.recorder import keyframes
from tether.recorder.replay import (
    Player,
    Recording,
    ReplayError,
    format_position,
    parse_position,
    resolve_sid,
    seek_bytes,
    steps,
)
from tether.recorder.screen import Terminal

ROOT = Path(__file__).resolve().parent.parent
OUT = EventKind.OUTPUT
Ev = tuple[float, EventKind, bytes]


def make_store(store: Path, events: list[Ev], *, sid: str = "ab" * 16, cols: int = 80,
               rows: int = 24, user: str = "alice", agent: str = "web1",
               started: float = 1_700_000_000.0) -> str:
    """A recorder store made by hand: a sessions row and a chained log."""
    db = recdb.connect(store)
    chain = genesis(bytes.fromhex(sid))
    parts = []
    for index, (t, kind, data) in enumerate(events):
        event = Event(index, round(t * 1e6), kind, data)
        chain = chain_next(chain, event.encode())
        parts.append(log_record(event, chain))
    log = b"".join(parts)
    recdb.log_path(store, sid).write_bytes(log)
    db.execute(
        "INSERT INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key, client,"
        " recording, started, ended, events, log_bytes, duration, status, cols, rows)"
        " VALUES (?, ?, ?, 'root', 'shell', 'g', 'k', 'c', 'required', ?, ?, ?, ?, ?,"
        " 'closed', ?, ?)",
        (sid, agent, user, started, started + (events[-1][0] if events else 0), len(events),
         len(log), events[-1][0] if events else 0, cols, rows),
    )
    db.close()
    return sid


def index_keyframes(store: Path, sid: str, every: float = 5.0) -> int:
    """What the index worker does: feed a Terminal, keep a repaint every `every` seconds."""
    db = recdb.connect(store)
    keyframes.ensure_schema(db)
    info = db.execute("SELECT cols, rows FROM sessions WHERE sid = ?", (sid,)).fetchone()
    rec = Recording.load(store, db, sid)
    term = Terminal(info[0], info[1])
    last, count = 0.0, 0
    for i, (t, kind, data) in enumerate(zip(rec.times, rec.kinds, rec.data, strict=True)):
        if t - last >= every:
            keyframes.store(db, sid, t, i - 1, rec.offsets[i], keyframes.render(term))
            last, count = t, count + 1
        if kind in (EventKind.OUTPUT, EventKind.STDERR):
            term.feed(data)
        elif kind == EventKind.RESIZE:
            term.resize(*struct.unpack(">HH", data))
    db.close()
    return count


def open_recording(store: Path, sid: str) -> tuple[Recording, Player]:
    db = recdb.connect(store, create=False)
    rec = Recording.load(store, db, sid)
    return rec, Player(rec, lambda t: keyframes.nearest(db, sid, t))


def screen_after(data: bytes, cols: int = 80, rows: int = 24) -> list[str]:
    t = Terminal(cols, rows)
    t.feed(data)
    return t.display


# ----- the sans-IO core -----


def test_positions_parse_and_format() -> None:
    assert parse_position("42") == 42 and parse_position("1:30") == 90
    assert parse_position("1:02:03.5") == 3723.5 and parse_position("0:07.25") == 7.25
    for bad in ("", "x", "1::2", "-3", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_position(bad)
    assert format_position(42) == "0:42.0" and format_position(3723.5) == "1:02:03.5"


def test_keys_parse() -> None:
    assert parse_keys(b" \x1b[C\x1b[D\x1bOA\x1b[B+-q") == [
        "pause", "right", "left", "up", "down", "faster", "slower", "quit"]
    assert parse_keys(b"\x03") == ["quit"] and parse_keys(b"x\x1b") == []


def test_timing_speed_idle_limit_and_what_is_played(tmp_path: Path) -> None:
    sid = make_store(tmp_path, [
        (0.0, OUT, b"one "), (0.5, EventKind.INPUT, b"secret"), (1.0, OUT, b"two "),
        (1.001, OUT, b"three "), (31.0, EventKind.GAP, b'{"lost_bytes": 12, "lost_events": 1}'),
        (32.0, EventKind.NOTICE, b"frozen"), (33.0, EventKind.STDERR, b"err"),
    ])
    db = recdb.connect(tmp_path, create=False)
    rec = Recording.load(tmp_path, db, sid)
    plan = list(steps(Player(rec, lambda t: None)))
    assert [round(d, 3) for d, _ in plan] == [0, 0, 1.0, 29.999, 2.0]
    assert b"".join(d for _, d in plan) == (
        b"one two three \r\n\x1b[0;2m[recording gap: 12 bytes lost]\x1b[0m\r\nerr")
    assert all(b"secret" not in d and b"frozen" not in d for _, d in plan)
    fast = list(steps(Player(rec, lambda t: None, speed=2, idle_limit=3)))
    assert [round(d, 3) for d, _ in fast] == [0, 0, 0.5, 1.5, 1.0]
    untimed = list(steps(Player(rec, lambda t: None, timed=False)))
    assert all(d == 0 for d, _ in untimed)


def test_sid_prefixes(tmp_path: Path) -> None:
    make_store(tmp_path, [(0, OUT, b"a")], sid="ab" * 16)
    make_store(tmp_path, [(0, OUT, b"b")], sid="ac" + "00" * 15)
    db = recdb.connect(tmp_path, create=False)
    assert resolve_sid(db, "ABAB") == "ab" * 16
    with pytest.raises(ReplayError, match="2 sessions"):
        resolve_sid(db, "a")
    with pytest.raises(ReplayError, match="no recorded session"):
        resolve_sid(db, "ff")
    with pytest.raises(ReplayError, match="not a session id"):
        resolve_sid(db, "a%")


def busy_session(seconds: float, step: float = 0.25, seed: int = 7) -> list[Ev]:
    """Shell-like output with colours, wide characters, a full-screen program and resizes."""
    rng = random.Random(seed)
    events: list[Ev] = []
    t, n = 0.0, 0
    while t < seconds:
        n += 1
        r = rng.random()
        if r < 0.05:
            events.append((t, OUT, b"\x1b[?1049h\x1b[H\x1b[2J\x1b[7m top %d \x1b[m\r\n" % n))
        elif r < 0.1:
            events.append((t, OUT, b"\x1b[?1049l"))
        elif r < 0.12:
            events.append((t, EventKind.INPUT, b"ls\r"))
        else:
            events.append((t, OUT, b"\x1b[3%dmline %d\x1b[m \xe4\xb8\xad %s\r\n"
                           % (n % 8, n, b"x" * rng.randrange(60))))
        t += step * rng.random() * 2
    return events


def test_seek_lands_on_the_same_screen_as_playing_from_the_start(tmp_path: Path) -> None:
    events = busy_session(120)
    sid = make_store(tmp_path, events)
    assert index_keyframes(tmp_path, sid) > 10
    rec, player = open_recording(tmp_path, sid)
    no_keyframes = Player(rec, lambda t: None)
    for target in (0.0, 3.0, 5.0, 47.3, 60.0, 99.99, 119.0, 500.0):
        full = b"".join(d for t, k, d in events if k == OUT and t <= target)
        want = screen_after(full)
        data = player.seek(target)
        assert screen_after(data) == want, target
        assert screen_after(no_keyframes.seek(target)) == want, target
        # and playing on from there gives what playing from the start gives
        rest = b"".join(d for _, d in steps_from(player))
        assert screen_after(data + rest) == screen_after(b"".join(d for _, k, d in events if k == OUT))


def steps_from(player: Player) -> Iterator[tuple[float, bytes]]:
    while (step := player.next_step()) is not None:
        player.commit(step)
        yield step.delay, step.data


def test_seek_takes_little_time_anywhere_in_an_hour(tmp_path: Path) -> None:
    """An hour of output (one event every 50 ms, 720 keyframes): time the function that
    produces the bytes a seek writes. Design target 100 ms; bound generous for loaded CI."""
    term = Terminal(80, 24)
    term.feed(b"".join(b"\x1b[32m%05d\x1b[m some output \xe4\xb8\xad here\r\n" % i for i in range(30)))
    repaint = keyframes.render(term)  # one real repaint stands for every keyframe
    events = [(i * 0.05, OUT, b"\x1b[1m%07d\x1b[m output line of a busy session\r\n" % i)
              for i in range(72_000)]
    sid = make_store(tmp_path, events)
    db = recdb.connect(tmp_path)
    keyframes.ensure_schema(db)
    rec = Recording.load(tmp_path, db, sid)
    db.execute("BEGIN")
    for i in range(0, len(events), 100):  # every 5 s
        keyframes.store(db, sid, rec.times[i], i, rec.offsets[i], repaint)
    db.execute("COMMIT")
    rng = random.Random(1)
    worst = 0.0
    for target in [rng.uniform(0, 3600) for _ in range(200)] + [0.0, 3599.99, 3600.0, 1800.0]:
        began = time.perf_counter()
        data, _next = seek_bytes(rec, target, keyframes.nearest(db, sid, target))
        worst = max(worst, time.perf_counter() - began)
        assert data.startswith(repaint) or target < 0.05
        assert len(data) < len(repaint) + 110 * 60  # at most 5 s of output after it
    print(f"\nworst seek in a 1-hour session: {worst * 1000:.2f} ms")
    assert worst < 0.5


# ----- the terminal edge -----

HARNESS = """
import argparse, sys, termios
from tether.commands.main import UserError
from tether.commands import replay as replay_cli
p = argparse.ArgumentParser()
replay_cli.configure(p)
args = p.parse_args(sys.argv[1:])
rc = 1
try:
    rc = replay_cli.run(args)
except UserError as exc:
    print(f"tether replay: {exc}", file=sys.stderr)
    rc = 255
finally:
    if sys.stdin.isatty():
        echo = bool(termios.tcgetattr(0)[3] & termios.ECHO)
        print(f"\\r\\nHARNESS-DONE echo={int(echo)}", file=sys.stderr, flush=True)
sys.exit(rc)
"""


def run_plain(args: list[str], home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TETHER_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", HARNESS, *args], capture_output=True,
                          env=env, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


class PtyRun:
    """The replay CLI on a pseudo-terminal of its own, 80x24."""

    def __init__(self, args: list[str], home: Path) -> None:
        master, slave = open_pty(80, 24)
        env = {**os.environ, "TETHER_HOME": str(home), "TERM": "xterm"}
        self.proc = subprocess.Popen([sys.executable, "-c", HARNESS, *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def wait_for(self, needle: bytes, timeout: float = 20.0) -> float:
        """Read until `needle` shows up; the time it did."""
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got {self.output[-2000:]!r}")
            chunk = read_ready(self.master, left)
            if chunk is not None:
                if not chunk:
                    raise AssertionError(f"EOF before {needle!r}; got {self.output[-2000:]!r}")
                self.output += chunk
        return time.monotonic()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self) -> int:
        self.wait_for(b"HARNESS-DONE")
        rc = self.proc.wait(timeout=20)
        os.close(self.master)
        return rc


@pytest.fixture
def long_session(tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "recordings"
    events: list[Ev] = [(0.0, OUT, b"\x1b[1mSTART\x1b[m\r\n")]
    events += [(float(t), OUT, b"tick %d\r\n" % t) for t in range(1, 120)]
    events += [(60.5, OUT, b"NEEDLE-AT-60\r\n"), (120.0, OUT, b"THE-END\r\n")]
    events.sort(key=lambda e: e[0])
    sid = make_store(store, events, cols=100, rows=30)
    index_keyframes(store, sid)
    return store, sid


def test_plain_output_when_stdout_is_not_a_terminal(long_session: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    store, sid = long_session
    r = run_plain([sid[:6], "--store", str(store)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"\x1b[1mSTART") and r.stdout.endswith(b"THE-END\r\n")
    assert b"\x1bc" not in r.stdout  # exactly the recorded bytes, no repaint
    status = r.stderr.decode()
    assert f"replaying {sid} (alice@web1, " in status and "2m00s) from 0:00.0" in status
    r = run_plain([sid, "--store", str(store), "--at", "1:00"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(keyframes.RESET)  # a keyframe's repaint
    assert b"tick 59" in r.stdout and b"tick 60\r\n" in r.stdout and b"tick 20" not in r.stdout
    assert "from 1:00.0" in r.stderr.decode()
    r = run_plain(["ff", "--store", str(store)], tmp_path)
    assert r.returncode == 255 and b"no recorded session ff" in r.stderr


def test_interactive_keys_seek_and_quit_restore_the_terminal(long_session: tuple[Path, str],
                                                             tmp_path: Path) -> None:
    store, sid = long_session
    run = PtyRun([sid, "--store", str(store), "--at", "10"], tmp_path)
    run.wait_for(f"replaying {sid} (alice@web1,".encode())
    run.wait_for(b"space pause, \xe2\x86\x90/\xe2\x86\x92 seek, q quit")
    run.wait_for(b"the recording is 100x30, this terminal 80x24")
    run.wait_for(b"tick 10\r\n")
    run.send(b"\x1b[A")  # +60 s: the screen of 1:10 at once, through a keyframe
    run.wait_for(b"tick 70\r\n", timeout=5)
    run.send(b"q")
    assert run.finish() == 0
    assert b"HARNESS-DONE echo=1" in run.output  # raw mode undone
    assert b"THE-END" not in run.output and b"stopped at 1:1" in run.output


def test_sigterm_restores_the_terminal(long_session: tuple[Path, str], tmp_path: Path) -> None:
    store, sid = long_session
    run = PtyRun([sid, "--store", str(store)], tmp_path)
    run.wait_for(b"START")
    run.send(b" ")  # paused: it would otherwise sit there for two minutes
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 128 + signal.SIGTERM
    assert b"HARNESS-DONE echo=1" in run.output and b"\x1b[?25h" in run.output


def test_hit_lands_within_a_second_of_the_match(long_session: tuple[Path, str],
                                                tmp_path: Path) -> None:
    store, sid = long_session
    rec, _ = open_recording(store, sid)
    before = sum(len(d) for t, k, d in zip(rec.times, rec.kinds, rec.data, strict=True)
                 if k == OUT and t < 60.5)
    (tmp_path / "run").mkdir()
    hits = [{"n": 1, "sid": "cd" * 16, "t": 1.0, "wall": 0, "offset": 0},
            {"n": 2, "sid": sid, "t": 60.5, "wall": 1_700_000_060.5, "offset": before + 3}]
    (tmp_path / "run" / "last-search.json").write_text(json.dumps(hits))
    run = PtyRun(["--hit", "2", "--store", str(store)], tmp_path)
    shown = run.wait_for(b"from 1:00.0")  # half a second before the hit
    printed = run.wait_for(b"NEEDLE-AT-60")
    assert printed - shown < 0.5 + 0.8  # half a second of session time, and some slack
    assert b"tick 40\r\n" not in run.output  # it did not play the minute before
    run.send(b"q")
    assert run.finish() == 0
    r = run_plain(["--hit", "9", "--store", str(store)], tmp_path)
    assert r.returncode == 255 and b"no hit 9" in r.stderr
