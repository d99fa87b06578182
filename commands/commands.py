"""`tether commands SID`: the commands a recorded session ran (advisory: see `source`)."""

from __future__ import annotations

import argparse

from tether.commands.options import add_store_argument, store_dir


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the commands of a recorded session: from the shell's OSC 133 marks when the "
        "agent's shell integration is on (source osc133), else guessed from the line where "
        "Enter was pressed (source enter). Advisory: a program can print forged marks."
    )
    parser.add_argument("sid", help="the session id, or a unique prefix of it")
    add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the commands as JSON")


def run(args: argparse.Namespace) -> int:
    import time

    from tether.commands.main import UserError
    from tether.commands.search import open_index
    from tether.display import safe, safe_json

    store = store_dir(args)
    prefix = args.sid.strip().lower()
    if not prefix:
        raise UserError("give a session id")
    db = open_index(store)
    try:
        sids = [r[0] for r in db.execute(
            "SELECT sid FROM sessions WHERE sid LIKE ? ORDER BY sid LIMIT 2",
            (prefix.replace("%", "").replace("_", "") + "%",))]
        if not sids:
            raise UserError(f"no recorded session {args.sid}")
        if len(sids) > 1:
            raise UserError(f"{args.sid} matches more than one session; give more digits")
        sid = sids[0]
        rows = db.execute(
            "SELECT seq, t, wall, offset, duration, exit_code, command, output, source "
            "FROM commands WHERE sid = ? ORDER BY seq", (sid,)).fetchall()
    finally:
        db.close()
    if args.json:
        print(safe_json({"sid": sid, "commands": [
            {"seq": r[0], "t": r[1], "wall": r[2], "offset": r[3], "duration": r[4],
             "exit_code": r[5], "command": r[6], "output": r[7], "source": r[8]} for r in rows]}))
        return 0
    print(f"session {safe(sid)}: {len(rows)} commands")
    for _, _, wall, _, duration, code, command, _, source in rows:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
        took = "-" if duration is None else f"{duration:.2f}s"
        status = "-" if code is None else safe(code)
        print(f"{start}  {took:>9}  exit {status:>3}  [{safe(source)}]  {safe(command)}")
    return 0
