"""Screen reconstruction on pyte, with pyte's silent losses fixed (FIELD-NOTES, pyte 0.8.2).

- Text after a zero-width character that is not "combining" (VS16 as in ❤️, ZWJ, ZWSP)
  was dropped: such characters now attach to the previous cell and drawing goes on.
- A wide character in the last column was drawn past the edge: it now wraps first.
- There was no alternate screen: 1049, 1047 and 47 now switch to a separate buffer, so
  vim, less and htop leave the shell screen as it was.
- DCS strings were drawn as text, and colon-form SGR (38:2::r:g:b) was printed as text:
  `SequenceFilter` removes the former and rewrites the latter before pyte parses them,
  across chunk boundaries.

We subclass and filter; pyte itself is not patched.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any

import pyte
from pyte import modes as mo
from pyte.screens import StaticDefaultDict
from wcwidth import wcwidth

ALTERNATE_MODES = frozenset({1049, 1047, 47})


class TerminalScreen(pyte.Screen):
    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self._main: tuple[Any, Any] | None = None  # (buffer, saved cursor) while alternate

    @property
    def alternate(self) -> bool:
        return self._main is not None

    # ----- text -----

    def draw(self, data: str) -> None:
        run: list[str] = []
        for char in data:
            width = wcwidth(char)
            if width == 0 and not unicodedata.combining(char):
                self._flush(run)
                self._attach(char)
            elif width == 2:
                self._flush(run)  # the cursor must be where this character will go
                if self.cursor.x == self.columns - 1 and mo.DECAWM in self.mode:
                    self.dirty.add(self.cursor.y)
                    self.carriage_return()
                    self.linefeed()
                super().draw(char)
            elif width < 0:
                continue  # unprintable: skip it, keep drawing what follows
            else:
                run.append(char)
        self._flush(run)

    def _flush(self, run: list[str]) -> None:
        if run:
            super().draw("".join(run))
            run.clear()

    def _attach(self, char: str) -> None:
        """Keep a zero-width character with the character before it (emoji sequences)."""
        x, y = self.cursor.x, self.cursor.y
        if x > 0:
            line = self.buffer[y]
            x -= 1
            if line[x].data == "" and x > 0:  # the stub after a wide character
                x -= 1
        elif y > 0:
            line = self.buffer[y - 1]
            x = self.columns - 1
        else:
            return
        line[x] = line[x]._replace(data=line[x].data + char)

    # ----- alternate screen -----

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALTERNATE_MODES.intersection(modes):
            self._enter_alternate(save_cursor=1049 in modes)
            modes = tuple(m for m in modes if m not in ALTERNATE_MODES)
        if modes:
            super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALTERNATE_MODES.intersection(modes):
            self._leave_alternate()
            modes = tuple(m for m in modes if m not in ALTERNATE_MODES)
        if modes:
            super().reset_mode(*modes, **kwargs)

    def _fresh_buffer(self) -> Any:
        return defaultdict(lambda: StaticDefaultDict(self.default_char))

    def _enter_alternate(self, save_cursor: bool) -> None:
        if self._main is not None:
            return
        cursor = (self.cursor.x, self.cursor.y, self.cursor.attrs) if save_cursor else None
        self._main = (self.buffer, cursor)
        self.buffer = self._fresh_buffer()
        self.dirty.update(range(self.lines))

    def _leave_alternate(self) -> None:
        if self._main is None:
            return
        self.buffer, cursor = self._main
        self._main = None
        if cursor is not None:
            self.cursor.x, self.cursor.y, self.cursor.attrs = cursor
        self.dirty.update(range(self.lines))


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
        tail = _INCOMPLETE.search(text)
        if tail is not None:
            self._held, text = text[tail.start():], text[: tail.start()]
        return _SGR.sub(_sgr_semicolons, _DCS.sub("", text))


class Terminal:
    """Bytes in, screen out: a decoder, the filter and the fixed screen."""

    def __init__(self, columns: int = 80, lines: int = 24) -> None:
        self.screen = TerminalScreen(columns, lines)
        self.stream = pyte.Stream(self.screen)
        self.filter = SequenceFilter()
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        self.stream.feed(self.filter.feed(self._decoder.decode(data)))

    def resize(self, columns: int, lines: int) -> None:
        self.screen.resize(lines, columns)

    @property
    def display(self) -> list[str]:
        return list(self.screen.display)
