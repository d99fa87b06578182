"""What an auditor does with recordings, end to end on both brokers: search, replay at a
hit, per-command records, screen fidelity (vim, CJK, emoji), and asciicast export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from stack import PtyClient, Stack, wait_for

from tether.recevents import EventKind, iter_log

PROMPT = rb"\[tp\]\$ "




def _search(stack: Stack, text: str, *extra: str) -> list[dict[str, Any]]:
    r = stack.tether("search", text, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def _wait_hit(stack: Stack, text: str, sid: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        hits = [h for h in _search(stack, text) if h["sid"] == sid]
        return hits[0] if hits else None
    return dict(wait_for(found, timeout=30, what=f"{text!r} searchable"))


def _event_time(stack: Stack, sid: str, needle: bytes) -> float:
    for rec in iter_log(stack.log_bytes(sid)):
        if rec.event.kind == EventKind.OUTPUT and needle in rec.event.data:
            return rec.event.t
    raise AssertionError(f"{needle!r} not in the recording")


def test_search_finds_a_scrolled_off_line_and_replay_lands_on_it(stack: Stack) -> None:
    token = os.urandom(4).hex()
    canary = f"canary-42-{token}"
    # No pause between the canary and seq: it is never on a quiet screen, only scrolled off.
    row = stack.recorded_shell(b"sleep 1.5; echo canary-$((6*7))-" + token.encode()
                   + b"; seq 1 100000; sleep 1")
    sid = row["sid"]
    hit = _wait_hit(stack, canary, sid)
    printed = _event_time(stack, sid, canary.encode())
    # It scrolled away under 100000 lines of seq: indexed as it left the screen, or by the
    # periodic snapshot of continuous output that caught it first.
    assert hit["kind"] in ("scroll", "screen"), hit
    assert abs(hit["t"] - printed) < 0.5, (hit, printed)
    assert canary in hit["snippet"]
    # `tether replay --hit 1` starts at the hit of the last search (saved by it).
    assert _search(stack, canary)[0]["sid"] == sid
    r = stack.tether("replay", "--hit", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(rb"from (\d+):(\d+\.\d)", r.stderr)
    assert m, r.stderr
    start = int(m.group(1)) * 60 + float(m.group(2))
    assert 0 <= printed - start <= 1.0, (start, printed)
    assert canary.encode() in r.stdout
    # Filters narrow the search; a short query is a clear error.
    assert _search(stack, canary, "--agent", "nope") == []
    assert _search(stack, canary, "--since", "1h")
    short = stack.tether("search", "ab")
    assert short.returncode == 255 and b"3" in short.stderr and b"Traceback" not in short.stderr


def test_commands_have_exit_codes_and_durations(stack: Stack) -> None:
    row = stack.recorded_shell(b"false", b"sleep 1", b"echo done-$((1+1))")
    sid = row["sid"]

    def listed() -> list[dict[str, Any]] | None:
        r = stack.tether("commands", sid, "--json")
        assert r.returncode == 0, r.stderr
        cmds = list(json.loads(r.stdout)["commands"])
        return cmds if any(c["command"].startswith("echo done") for c in cmds) else None
    commands = wait_for(listed, timeout=30, what="commands indexed")
    by_name = {c["command"]: c for c in commands}
    assert by_name["false"]["exit_code"] == 1, commands
    assert by_name["sleep 1"]["exit_code"] == 0
    assert 0.9 <= by_name["sleep 1"]["duration"] <= 2.5, by_name["sleep 1"]
    assert by_name["false"]["source"] == "osc133"
    text = stack.tether("commands", sid[:10]).stdout.decode()
    assert "sleep 1" in text and "exit   1" in text


def test_vim_leaves_no_trace_on_the_shell_screen(stack: Stack) -> None:
    path = stack.root / "vim-target.txt"
    path.unlink(missing_ok=True)
    start = time.time()
    client = PtyClient(stack, "shell", "local")
    try:
        client.send(b"export PS1='[t''p]$ '\r")
        client.expect(PROMPT)
        client.send(f"vim -u NONE -N {path}\r".encode())
        client.expect(rb"\x1b\[\?1049h", timeout=30)  # vim entered the alternate screen
        client.send(b"iinside-vim-zq\x1b")
        client.expect(rb"inside-vim-zq")
        client.send(b":wq\r")
        client.expect(PROMPT, timeout=30)
        client.send(b"echo after-$((1+1))\r")
        client.expect(rb"after-2")
        client.expect(PROMPT)
        client.send(b"exit\r")
        assert client.drain_until_exit(timeout=30) == 0
    finally:
        client.close()
    assert path.read_text().strip() == "inside-vim-zq"
    sid = stack.wait_recorded("closed", after=start)["sid"]
    text = stack.tether("export", sid, "--format", "text").stdout.decode()
    assert "after-2" in text
    assert "inside-vim-zq" not in text, text
    # What vim showed is still searchable: it was indexed before vim left its screen.
    assert _wait_hit(stack, "inside-vim-zq", sid)


def test_cjk_emoji_and_zwj_text_is_kept(stack: Stack) -> None:
    token = os.urandom(3).hex()
    lines = [f"漢字テスト-{token}", f"heart ❤️ vs16-tail-{token}", f"coder 👩‍💻 zwj-tail-{token}",
             f"space\u200bzwsp-tail-{token}"]
    script = "; ".join(f"printf '%s\\n' '{line}'" for line in lines)
    row = stack.recorded_shell(script.encode())
    sid = row["sid"]
    for needle in (f"漢字テスト-{token}", f"vs16-tail-{token}", f"zwj-tail-{token}",
                   f"zwsp-tail-{token}"):
        assert _wait_hit(stack, needle, sid)
    text = stack.tether("export", sid, "--format", "text").stdout.decode()
    for line in lines:
        assert line in text, (line, text)


def test_asciicast_export_plays_in_asciinema(stack: Stack) -> None:
    row = stack.recorded_shell(b"printf 'cast-%s\\n' $((40+2))", b"tput cols")
    cast = stack.root / "session.cast"
    r = stack.tether("export", row["sid"], "--format", "asciicast", "-o", str(cast))
    assert r.returncode == 0, r.stderr
    header = json.loads(cast.read_text().splitlines()[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    asciinema = [sys.executable, "-m", "asciinema"]
    played = subprocess.run([*asciinema, "cat", str(cast)], capture_output=True, timeout=60)
    assert played.returncode == 0, played.stderr
    assert b"cast-42" in played.stdout
