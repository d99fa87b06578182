"""What stands between the decoded text and the pyte screen (recorder/screen.py):
`SequenceFilter` removes DCS strings and rewrites colon-form SGR before pyte parses them,
across chunk boundaries; `SafeStream` drops alone a sequence a handler cannot take;
`FastStream` dispatches complete CSI sequences, the common C0 controls and whole lines
without stepping pyte's per-character parser."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import pyte
from pyte import modes as mo

if TYPE_CHECKING:
    from tether.recorder.screen import TerminalScreen


# DCS (ESC P or 0x90) up to ST (ESC \ or 0x9c); and CSI ... m with colon sub-parameters.
_DCS = re.compile(r"(?:\x1bP|\x90)[^\x1b\x9c]*(?:\x1b\\|\x9c)", re.S)
_SGR = re.compile(r"\x1b\[([0-9:;]*:[0-9:;]*)m")
_INCOMPLETE = re.compile(r"(?:\x1bP|\x90)[^\x1b\x9c]*\x1b?$|\x1b(?:\[[0-9:;?]*)?$", re.S)


def _sgr_semicolons(match: re.Match[str]) -> str:
    out: list[str] = []
    for param in match.group(1).split(";"):
        parts = param.split(":")
        if len(parts) == 1:
            out.append(param)
        elif parts[0] in ("38", "48", "58") and len(parts) >= 3 and parts[1] == "2":
            rgb = [p or "0" for p in parts[-3:]]  # 38:2::r:g:b or 38:2:r:g:b
            out.append(";".join([parts[0], "2", *rgb]))
        elif parts[0] in ("38", "48", "58") and len(parts) >= 3 and parts[1] == "5":
            out.append(";".join([parts[0], "5", parts[2] or "0"]))
        else:
            out.append(parts[0])  # e.g. 4:3 (curly underline) -> 4
    return "\x1b[" + ";".join(out) + "m"


class SequenceFilter:
    """Removes DCS strings and rewrites colon-form SGR, holding back an unfinished escape
    sequence at the end of a chunk until the next one completes it."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        # An unfinished sequence holds no ESC but its first and maybe its last character,
        # so it starts at the last ESC before the final character, if there is one.
        n = len(text)
        start = text.rfind("\x1b", 0, n - 1)
        if start < 0:
            start = text.find("\x90")
            if start < 0:
                start = n - 1 if text.endswith("\x1b") else n
        tail = _INCOMPLETE.search(text, start) if start < n else None
        if tail is not None:
            self._held, text = text[tail.start():], text[: tail.start()]
        if "\x1bP" in text or "\x90" in text:
            text = _DCS.sub("", text)
        return _SGR.sub(_sgr_semicolons, text)


_CSI = re.compile(r"\x1b\[(\??)([0-9;]*)([@-~])")
# After CSI K: printable ASCII and SGR up to the next CSI K on the same line.
_UNTIL_EL = re.compile(r"(?:[\x20-\x7e]|\x1b\[[0-9;]*m)*\x1b\[0?K")
_SGR_ANY = re.compile(r"\x1b\[[0-9;]*m")
_FAST_BASIC = frozenset("\r\n\x08\x07\t\x0b\x0c")


class SafeStream(pyte.Stream):
    """pyte's Stream, except that a sequence a handler cannot take is dropped alone (stock
    pyte raises, losing the rest of the chunk: TypeError for CSI ? ... m from vim,
    UnboundLocalError for CSI 5 K)."""

    def _send_to_parser(self, data: str) -> bool | None:
        try:
            return super()._send_to_parser(data)
        except Exception:  # pyte has already reset its parser to the ground state
            return True


class FastStream(SafeStream):
    """pyte's Stream, with complete CSI sequences and the common C0 controls dispatched
    without stepping the per-character parser (it still handles everything else)."""

    def __init__(self, screen: pyte.Screen) -> None:
        super().__init__(screen)
        debug = screen.debug
        self._csi_handlers: defaultdict[str, Callable[..., None]] = defaultdict(
            lambda: debug, {k: getattr(screen, v) for k, v in self.csi.items()})
        self._basic_handlers = {k: getattr(screen, self.basic[k]) for k in _FAST_BASIC}

    def _dispatch_csi(self, private: str, params: str, final: str) -> None:
        screen = cast("TerminalScreen", self.listener)  # FastStream serves only TerminalScreen
        if final == "m" and not private:
            screen.cursor.attrs = screen.sgr(screen.cursor.attrs, params)
            return
        args = [min(int(p or 0), 9999) for p in params.split(";")]
        try:
            if private:
                self._csi_handlers[final](*args, private=True)
            else:
                self._csi_handlers[final](*args)
        except Exception:  # as SafeStream: e.g. CSI ? ... m, which pyte's handlers do not take
            pass

    def _erase_overwritten(self, data: str, pos: int) -> bool:
        """An erase to the end of the line (CSI K at `pos`) whose every cell is written
        again before anything else happens: the ASCII text and SGR that follow it fit on
        the line up to another CSI K, which erases the rest (grep colours every match
        as CSI m CSI K text CSI m CSI K). Then it can be skipped."""
        screen = cast("TerminalScreen", self.listener)  # FastStream serves only TerminalScreen
        columns = screen.columns
        m = _UNTIL_EL.match(data, pos, pos + 8 * columns)
        if m is None or mo.IRM in screen.mode:
            return False
        text = m.group()
        written = len(_SGR_ANY.sub("", text)) - (len(text) - text.rindex("\x1b"))
        cursor = screen.cursor
        if cursor.x + written > columns:
            return False
        screen.dirty.add(cursor.y)
        return True

    def feed(self, data: str) -> None:
        assert self.listener is not None
        draw = self.listener.draw
        send = self._send_to_parser
        match_text = self._text_pattern.match
        match_csi = _CSI.match
        dispatch_csi = self._dispatch_csi
        basic = self._basic_handlers
        screen = cast("TerminalScreen", self.listener)  # FastStream serves only TerminalScreen
        fast = screen.fast
        bulk = screen.batch_lines if fast else None
        ground = self._taking_plain_text
        pos, n = 0, len(data)
        while pos < n:
            if ground:
                if bulk is not None and (screen.cursor.x == 0 or screen._partial is not None):
                    end = bulk(data, pos)  # (DECRC replaces the cursor: no local for it)
                    if end > 0:
                        pos = end
                        continue
                if screen._lazy:
                    screen._settle()
                m = match_text(data, pos)
                if m is not None:
                    pos = m.end()
                    draw(m.group())
                    continue
                char = data[pos]
                if char in basic:
                    basic[char]()
                    pos += 1
                    continue
                if char == "\x1b":
                    m = match_csi(data, pos)
                    if m is not None:
                        pos = m.end()
                        private, params, final = m.groups()
                        if (final == "K" and not private and (params == "" or params == "0")
                                and fast and self._erase_overwritten(data, pos)):
                            continue
                        dispatch_csi(private, params, final)
                        continue
            if screen._lazy:
                screen._settle()
            ground = bool(send(data[pos]))
            pos += 1
        self._taking_plain_text = ground
