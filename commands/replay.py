"""`tether replay SID`: play a recorded session in this terminal."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, BinaryIO

from tether.commands.options import add_store_argument, open_store, store_dir

if TYPE_CHECKING:
    from tether.recorder.replay import Player

KEYS_HELP = "space pause, ←/→ seek, q quit"
SEEK_SMALL, SEEK_LARGE = 5.0, 60.0
HIT_LEAD = 0.5  # start this long before a search hit (well within 1 s of it)
# Leave the terminal usable whatever the recording left switched on: the alternate
# screen (only if it is in it), mouse reporting, bracketed paste, application keys.
RESTORE = (b"\x1b[0m\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l"
           b"\x1b[?1l\x1b>")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Play a recorded session at its real speed. Keys while playing: space pause/resume, "
        "→/← seek 5 s, ↑/↓ seek 60 s, + / - speed up / down (x2), q quit. Only the session's "
        "output is played (never its input); lost stretches of an optional recording show "
        "as [recording gap: N bytes lost]. When stdout is not a terminal the output bytes "
        "are written at once, with no pauses, unless --speed is given."
    )
    parser.add_argument("sid", nargs="?", help="the session id, or a unique prefix of it "
                        "(optional with --hit)")
    parser.add_argument("--speed", type=float, help="playback speed factor (default 1)")
    parser.add_argument("--idle-limit", type=float, metavar="S",
                        help="shorten pauses longer than S seconds to S (playback only)")
    parser.add_argument("--at", metavar="TIME", help="start at TIME: seconds, mm:ss or h:mm:ss")
    parser.add_argument("--hit", type=int, metavar="N",
                        help="start just before hit N of the last `tether search`")
    add_store_argument(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import sys
    from datetime import datetime

    from tether.commands.main import UserError
    from tether.display import safe
    from tether.edge.home import Home
    from tether.recorder import keyframes
    from tether.recorder.replay import (
        Player,
        Recording,
        ReplayError,
        format_duration,
        format_position,
        load_hit,
        parse_position,
        resolve_sid,
    )

    if args.speed is not None and not args.speed > 0:
        raise UserError("--speed must be more than 0")
    if args.idle_limit is not None and not args.idle_limit > 0:
        raise UserError("--idle-limit must be more than 0")
    home = Home.default()
    store = store_dir(args)
    db = open_store(store)
    try:
        at = 0.0
        hit_offset: int | None = None
        if args.hit is not None:
            hit = load_hit(home.run_dir / "last-search.json", args.hit)
            if args.sid and not hit.sid.startswith(args.sid.lower()):
                raise UserError(f"hit {args.hit} of the last search is in session {hit.sid}, "
                                f"not {args.sid}")
            sid, at, hit_offset = hit.sid, hit.t, hit.offset
        elif args.sid:
            sid = resolve_sid(db, args.sid)
        else:
            raise UserError("give a session id, or --hit N")
        if args.at is not None:
            try:
                at = parse_position(args.at)
            except ValueError as exc:
                raise UserError(str(exc)) from exc
        rec = Recording.load(store, db, sid)
    except ReplayError as exc:
        raise UserError(str(exc)) from exc
    if args.hit is not None and args.at is None:
        if hit_offset is not None:
            at = rec.time_of_output_offset(hit_offset) or at
        at = max(0.0, at - HIT_LEAD)

    out_tty = os.isatty(1)
    interactive = out_tty and os.isatty(0)
    player = Player(rec, lambda t: keyframes.nearest(db, sid, t),
                    speed=args.speed or 1.0, idle_limit=args.idle_limit,
                    timed=out_tty or args.speed is not None)
    info = rec.info
    started = datetime.fromtimestamp(info.started).strftime("%Y-%m-%d %H:%M:%S")
    keys = f" — {KEYS_HELP}" if interactive else ""
    print(f"replaying {sid} ({safe(info.user)}@{safe(info.agent)}, {started}, "
          f"{format_duration(rec.duration)}) from {format_position(at)}{keys}",
          file=sys.stderr, flush=True)
    view = _Viewer(out_tty)
    view.check_size(rec.info.cols, rec.info.rows)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # so the terminal is restored on the way out

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_hup = signal.signal(signal.SIGHUP, on_term)
    try:
        if interactive:
            _interactive(player, at, view)
        else:
            _plain(player, at, view)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGHUP, old_hup)
        db.close()
    return 0


class _Viewer:
    """Writes to stdout, and says once if the recording is bigger than this terminal."""

    def __init__(self, tty: bool) -> None:
        import re
        import sys

        self.out: BinaryIO = sys.stdout.buffer
        self.tty = tty
        self.warned = False
        self.alternate = False
        self._alt = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")

    def write(self, data: bytes) -> None:
        if not data:
            return
        for m in self._alt.finditer(data):
            self.alternate = m.group(1) == b"h"
        self.out.write(data)
        self.out.flush()

    def check_size(self, cols: int, rows: int) -> None:
        import os
        import sys

        if self.warned or not self.tty:
            return
        try:
            size = os.get_terminal_size(1)
        except OSError:
            return
        if size.columns < cols or size.lines < rows:
            self.warned = True
            print(f"\r\n[the recording is {cols}x{rows}, this terminal {size.columns}x"
                  f"{size.lines}: lines will wrap]\r", file=sys.stderr, flush=True)

    def restore(self) -> None:
        if self.tty:
            self.write(RESTORE + (b"\x1b[?1049l" if self.alternate else b"") + b"\r\n")


def _plain(player: Player, at: float, view: _Viewer) -> None:
    import time

    view.write((b"\x1b[H\x1b[2J" if view.tty else b"") + player.start(at))
    try:
        while (step := player.next_step()) is not None:
            if step.delay > 0:
                time.sleep(step.delay)
            view.write(step.data)
            if step.size is not None:
                view.check_size(*step.size)
            player.commit(step)
    finally:
        view.restore()


def parse_keys(data: bytes) -> list[str]:
    """Actions for the bytes of one read from a raw-mode terminal."""
    actions: list[str] = []
    arrows = {b"A": "up", b"B": "down", b"C": "right", b"D": "left"}
    i = 0
    while i < len(data):
        b = data[i:i + 1]
        if b == b"\x1b" and data[i + 1:i + 2] in (b"[", b"O") and data[i + 2:i + 3] in arrows:
            actions.append(arrows[data[i + 2:i + 3]])
            i += 3
            continue
        action = {b" ": "pause", b"q": "quit", b"Q": "quit", b"\x03": "quit", b"\x04": "quit",
                  b"+": "faster", b"=": "faster", b"-": "slower", b"_": "slower"}.get(b)
        if action:
            actions.append(action)
        i += 1
    return actions


def _interactive(player: Player, at: float, view: _Viewer) -> None:
    import os
    import select
    import sys
    import termios
    import time
    import tty

    fd = 0
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        view.write(b"\x1b[H\x1b[2J" + player.start(at))
        step = None
        while True:
            if step is None and not player.paused:
                step = player.next_step()
                if step is None:
                    break
            began = time.monotonic()
            timeout = None if player.paused or step is None else step.delay
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                assert step is not None
                view.write(step.data)
                if step.size is not None:
                    view.check_size(*step.size)
                player.commit(step)
                step = None
                continue
            data = os.read(fd, 1024)
            if not data:
                break  # the terminal went away
            if step is not None and not player.paused:
                player.waited(time.monotonic() - began, step)
            step = None
            for action in parse_keys(data):
                if action == "quit":
                    return
                if action == "pause":
                    player.paused = not player.paused
                elif action in ("left", "right", "up", "down"):
                    delta = SEEK_SMALL if action in ("left", "right") else SEEK_LARGE
                    sign = -1 if action in ("left", "down") else 1
                    view.write(player.seek(player.pos + sign * delta))
                elif action == "faster":
                    player.speed = min(64.0, player.speed * 2)
                elif action == "slower":
                    player.speed = max(1 / 16, player.speed / 2)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        view.restore()
        print(f"stopped at {_pos(player)}", file=sys.stderr, flush=True)


def _pos(player: Player) -> str:
    from tether.recorder.replay import format_position

    return f"{format_position(player.pos)} of {format_position(player.rec.duration)}"
