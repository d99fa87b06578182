"""OSC 133 shell-integration marks, read from raw output bytes across chunk boundaries.

    ESC ] 133 ; A ST                 prompt start
    ESC ] 133 ; B ST                 prompt end, command input starts
    ESC ] 133 ; C [; cmdline_url=X] ST   the command executes (X percent-encoded)
    ESC ] 133 ; D [; exit code] ST   the command finished

ST is BEL or ESC \\. pyte misreads these as icon-name changes, so we find them ourselves.
The marks come from the session's output, which the program controls: anything derived
from them is advisory (a program can print a forged mark).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

INTRO = b"\x1b]133;"
MAX_MARK = 64 * 1024  # a longer unterminated mark is dropped, not held forever


@dataclass(frozen=True)
class Mark:
    kind: str  # A | B | C | D
    params: tuple[str, ...]
    end: int  # position in the chunk just after the mark's terminator

    @property
    def cmdline(self) -> str | None:
        for p in self.params:
            if p.startswith("cmdline_url="):
                return unquote(p[len("cmdline_url="):], errors="replace")
            if p.startswith("cmdline="):
                return p[len("cmdline="):]
        return None

    @property
    def exit_code(self) -> int | None:
        if self.params:
            try:
                return int(self.params[0])
            except ValueError:
                return None
        return None


class MarkParser:
    """Feed output chunks; get the complete marks in each, with their end positions."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> list[Mark]:
        held = self._held
        buf = held + data if held else data
        base = len(held)
        self._held = b""
        marks: list[Mark] = []
        pos = 0
        while True:
            i = buf.find(INTRO, pos)
            if i < 0:
                self._hold_prefix(buf, max(pos, len(buf) - len(INTRO) + 1))
                break
            body_start = i + len(INTRO)
            j = body_start
            end = -1
            while True:
                bel = buf.find(b"\x07", j)
                esc = buf.find(b"\x1b", j)
                if esc >= 0 and (bel < 0 or esc < bel):
                    if esc + 1 >= len(buf):
                        break  # ESC at the end: ST may follow in the next chunk
                    if buf[esc + 1:esc + 2] == b"\\":
                        end, term = esc, 2
                    else:
                        end, term = -2, 0  # another sequence cancels the OSC
                    break
                if bel >= 0:
                    end, term = bel, 1
                break
            if end == -1:
                if len(buf) - i <= MAX_MARK:
                    self._held = bytes(buf[i:])
                break
            if end == -2:
                pos = body_start
                continue
            body = buf[body_start:end].decode("utf-8", "replace")
            kind, _, rest = body.partition(";")
            params = tuple(rest.split(";")) if rest else ()
            if kind in ("A", "B", "C", "D"):
                marks.append(Mark(kind, params, end + term - base))
            pos = end + term
        return marks

    def _hold_prefix(self, buf: bytes, start: int) -> None:
        """Keep a tail that could be the start of the next mark's introducer."""
        for k in range(max(start, 0), len(buf)):
            if INTRO.startswith(buf[k:]):
                self._held = bytes(buf[k:])
                return
