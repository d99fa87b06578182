"""Exporting a stored session: asciicast v2 (for asciinema) and a plain-text transcript."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator

from tether.display import safe_json
from tether.recevents import EventKind, resize_of
from tether.recorder.replay import Recording
from tether.recorder.screen import Terminal


def _decoder() -> codecs.IncrementalDecoder:
    # One per stream, so a character split across two events is joined, never replaced.
    return codecs.getincrementaldecoder("utf-8")("replace")


def _marker(kind: EventKind, data: bytes) -> str | None:
    if kind == EventKind.NOTICE:
        return data.decode("utf-8", "replace")
    try:
        info = json.loads(data) if data else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    if kind == EventKind.GAP:
        return f"recording gap: {info.get('lost_bytes', '?')} bytes lost"
    if kind == EventKind.REDACTION:
        return "input hidden (echo off)" if info.get("hidden") else "input recorded again"
    if kind == EventKind.EXIT:
        if info.get("signal") is not None:
            return f"exited on signal {info['signal']}"
        return f"exited with code {info.get('code')}"
    return None


def _line(value: object) -> str:
    # ASCII only: a cast printed or cat'ed to a terminal cannot carry raw C1 controls or
    # bidi overrides from the recording or the user and agent names into it.
    return safe_json(value) + "\n"


def asciicast(rec: Recording) -> Iterator[str]:
    """asciicast v2, line by line (each ending in a newline)."""
    info = rec.info
    header = {
        "version": 2,
        "width": info.cols,
        "height": info.rows,
        "timestamp": int(info.started),
        "duration": round(rec.duration, 6),
        "title": f"{info.user}@{info.agent} {info.sid}",
    }
    yield _line(header)
    streams = {EventKind.OUTPUT: _decoder(), EventKind.STDERR: _decoder(),
               EventKind.INPUT: _decoder()}
    t = 0.0
    for t, kind, data in zip(rec.times, rec.kinds, rec.data, strict=True):
        event: tuple[str, str] | None = None
        if kind in streams:
            text = streams[kind].decode(data)
            if text:
                event = ("i" if kind == EventKind.INPUT else "o", text)
        elif kind == EventKind.RESIZE and (size := resize_of(data)) is not None:
            event = ("r", f"{size[0]}x{size[1]}")
        else:
            label = _marker(kind, data)
            if label is not None:
                event = ("m", label)
        if event is not None:
            yield _line([round(t, 6), *event])
    for kind, decoder in streams.items():
        rest = decoder.decode(b"", final=True)
        if rest:
            code = "i" if kind == EventKind.INPUT else "o"
            yield _line([round(t, 6), code, rest])


def transcript(rec: Recording) -> str:
    """Every line that scrolled off the main screen, then the final main screen; trailing
    blank lines trimmed. What full-screen programs drew on the alternate screen is left out."""
    lines: list[str] = []
    term = Terminal(rec.info.cols, rec.info.rows, on_scroll=lines.append)
    for kind, data in zip(rec.kinds, rec.data, strict=True):
        if kind in (EventKind.OUTPUT, EventKind.STDERR):
            term.feed(data)
        elif kind == EventKind.RESIZE and (size := resize_of(data)) is not None:
            term.resize(*size)
    if term.screen.alternate:
        term.feed(b"\x1b[?1049l")  # back to the shell's screen
    lines += (row.rstrip() for row in term.display)
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)
