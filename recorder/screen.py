"""Screen reconstruction on pyte, with pyte's silent losses fixed (pyte 0.8.2;
docs/sources.md#pyte-losses).

- Text after a zero-width character that is not "combining" (VS16 as in ❤️, ZWJ, ZWSP)
  was dropped: such characters now attach to the previous cell and drawing goes on.
- A wide character in the last column was drawn past the edge: it now wraps first.
- There was no alternate screen: 1049, 1047 and 47 now switch to a separate buffer, so
  vim, less and htop leave the shell screen as it was.
- DCS strings were drawn as text, and colon-form SGR (38:2::r:g:b) was printed as text:
  `SequenceFilter` (recorder/stream_filters.py) removes the former and rewrites the latter
  before pyte parses them, across chunk boundaries.

Speed (stock pyte reconstructs about 1 MB/s): runs of printable ASCII are drawn in bulk
from a cache of one Char per (attributes, character), and complete CSI sequences and the
common C0 controls are dispatched straight from a regex instead of one generator step per
character (`FastStream`, recorder/stream_filters.py). Whole lines arriving at the bottom
row (cat, seq, grep output) are kept as text until the screen is read or changed
otherwise, so the many that scroll away within a chunk or two never become cells. Screens are identical to the per-character path (tests
compare every cell, also between chunks).

Lines that scroll off the top of the main screen are reported to `on_scroll` from
`index()` (HistoryScreen keeps them too, but costs 3x).

We subclass and filter; pyte itself is not patched.
"""

from __future__ import annotations

import codecs
import operator
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyte
from pyte import charsets as cs
from pyte import modes as mo
from pyte.screens import Margins, StaticDefaultDict
from wcwidth import wcwidth

from tether.recorder.stream_filters import _SGR_ANY, FastStream, SafeStream, SequenceFilter

ALTERNATE_MODES = frozenset({1049, 1047, 47})
_RUNS = re.compile(r"[\x20-\x7e]+|[^\x20-\x7e]+")
_MAX_CACHED_ATTRS = 512
_data = operator.attrgetter("data")
# Whole lines of printable characters, tabs, SGR and CSI K, each ended by CR LF; and one
# such line's runs of printable characters, SGR, CSI K and tabs.
_BATCH = re.compile(r"(?:(?:[^\x00-\x08\x0a-\x1f\x7f-\x9f]++|\x1b\[[0-9;]*+m|\x1b\[0?K)*+\r\n)+")
_LINE_TOKENS = re.compile(r"([^\x00-\x1f\x7f-\x9f]+)|(\x1b\[[0-9;]*m)|(\x1b\[0?K)|\t")
_WIDTHS: dict[str, int] = {}
# An unfinished last line: printable characters, SGR and CSI K up to the end of the data.
_PARTIAL = re.compile(r"(?:[^\x00-\x1f\x7f-\x9f]++|\x1b\[[0-9;]*+m|\x1b\[0?K)++\Z")
_LINE_ESCAPES = re.compile(r"\x1b\[[0-9;]*m|\x1b\[0?K")
_DEFAULT_TABS: dict[int, frozenset[int]] = {}


def _text_width(text: str) -> int:
    """The columns `text` takes drawn from column 0 of an empty row, if its row's text is
    `text` itself: characters 1 or 2 wide, and zero-width ones that attach to the
    character before them (VS16, ZWJ, ZWSP; not the first). Else -1 (unprintable or
    combining characters: pyte normalises those into the cell before)."""
    widths = _WIDTHS
    try:
        ws = list(map(widths.__getitem__, text))
    except KeyError:
        for char in set(text):
            if char not in widths:
                widths[char] = wcwidth(char)
        ws = list(map(widths.__getitem__, text))
    if -1 in ws or (0 in ws and (ws[0] == 0 or any(
            w == 0 and unicodedata.combining(c) for c, w in zip(text, ws, strict=True)))):
        return -1
    return sum(ws)


def _default_tabs(columns: int) -> frozenset[int]:
    tabs = _DEFAULT_TABS.get(columns)
    if tabs is None:
        tabs = _DEFAULT_TABS[columns] = frozenset(range(8, columns, 8))
    return tabs


class _Raw(tuple[str, str, Any]):
    """A row batch_lines has not laid out: (its text, the line as received, the
    attributes at its start)."""

    __slots__ = ()

    def __new__(cls, text: str, raw: str, attrs: Any) -> _Raw:
        return tuple.__new__(cls, (text, raw, attrs))
_KEYS: dict[int, list[int]] = {}


def _cells_text(cells: list[Any]) -> str:
    """The text of a row given as a list of cells from column 0 (None: never written)."""
    if None in cells:
        return "".join(" " if cell is None else cell.data for cell in cells)
    return "".join(map(_data, cells))


class _Cells(dict[str, Any]):
    """One Char per character for one set of attributes, made on first use."""

    def __init__(self, attrs: Any) -> None:
        super().__init__()
        self.attrs = attrs
        self.after: dict[str, _Cells] = {}  # SGR token -> the cells for the attributes after

    def __missing__(self, char: str) -> Any:
        cell = self[char] = self.attrs._replace(data=char)
        return cell


class TerminalScreen(pyte.Screen):
    def __init__(self, columns: int, lines: int, *, fast: bool = True,
                 on_scroll: Callable[[str], None] | None = None) -> None:
        self._main: tuple[Any, Any] | None = None  # (buffer, saved cursor) while alternate
        self._lazy = False  # rows or a partial line wait in _rows / _partial (see buffer)
        self._rows: list[Any] | None = None
        self._partial: str | None = None
        self._partial_attrs: Any = None
        super().__init__(columns, lines)
        self.fast = fast
        self.on_scroll = on_scroll
        # Lines leaving the alternate screen's top (a full-screen program scrolling): they
        # were shown, so an indexer wants them, but they are not the shell's scrollback.
        self.on_alternate_scroll: Callable[[str], None] | None = None
        self._cells: dict[Any, _Cells] = {}
        self._sgr: dict[tuple[Any, str], Any] = {}  # (attributes, parameters) -> attributes

    def row_text(self, y: int) -> str:
        """The text of row y, without the blank cells after its last written one."""
        return self._line_text(self.buffer.get(y))

    def index(self) -> None:
        """pyte's index, with the scrolled-off line reported and the shift done in C."""
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if self.cursor.y != bottom:
            self.cursor_down()
            return
        buffer = self.buffer
        report = self.on_scroll if self._main is None else self.on_alternate_scroll
        if report is not None and top == 0:
            report(self.row_text(0).rstrip())
        self.dirty.update(range(self.lines))
        buffer.update(zip(range(top, bottom), map(buffer.__getitem__, range(top + 1, bottom + 1)), strict=True))
        buffer.pop(bottom, None)

    @property
    def alternate(self) -> bool:
        return self._main is not None

    # ----- text -----

    def draw(self, data: str) -> None:
        if not self.fast or mo.IRM in self.mode or (
                (self.g1_charset if self.charset else self.g0_charset) is not cs.LAT1_MAP):
            self._draw_chars(data)
        elif data.isascii() and data.isprintable():
            self._draw_ascii(data)
        else:
            for match in _RUNS.finditer(data):
                run = match.group()
                if run[0] < "\x7f" and run[0] >= " ":
                    self._draw_ascii(run)
                elif mo.DECAWM in self.mode:
                    self._draw_unicode(run)
                else:
                    self._draw_chars(run)

    def _draw_unicode(self, data: str) -> None:
        """_draw_chars for width-1 and width-2 characters without the per-run overhead;
        zero-width ones still go through it (they combine or attach)."""
        cursor = self.cursor
        cells = self._cells_for(cursor.attrs)
        columns = self.columns
        widths = _WIDTHS
        for char in data:
            w = widths.get(char)
            if w is None:
                w = widths[char] = wcwidth(char)
            if w == 1 or w == 2:
                x = cursor.x
                if x >= columns - w + 1:
                    if x > columns:
                        self._draw_chars(char)
                        continue
                    self.dirty.add(cursor.y)
                    self.carriage_return()
                    self.linefeed()
                    x = 0
                line = self.buffer[cursor.y]
                line[x] = cells[char]
                if w == 2:
                    line[x + 1] = cells[""]
                cursor.x = x + w
            elif w == 0:
                self._draw_chars(char)
        self.dirty.add(cursor.y)

    def _draw_ascii(self, data: str) -> None:
        """What pyte's draw does for width-1 characters, a line segment at a time."""
        cursor = self.cursor
        cells = self._cells_for(cursor.attrs)
        get = cells.__getitem__
        columns = self.columns
        wrap = mo.DECAWM in self.mode
        if cursor.x > columns:
            self._draw_chars(data)
            return
        i, n = 0, len(data)
        while i < n:
            if cursor.x == columns:
                if wrap:
                    self.dirty.add(cursor.y)
                    self.carriage_return()
                    self.linefeed()
                else:
                    cursor.x -= 1
            x = cursor.x
            k = min(n - i, columns - x)
            self.buffer[cursor.y].update(zip(range(x, x + k), map(get, data[i:i + k]), strict=True))
            cursor.x = x + k
            i += k
        self.dirty.add(cursor.y)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        if not self.fast or how not in (0, 1, 2):
            super().erase_in_line(how, private)
            return
        cursor = self.cursor
        self.dirty.add(cursor.y)
        cells = (range(cursor.x, self.columns) if how == 0
                 else range(cursor.x + 1) if how == 1 else range(self.columns))
        self.buffer[cursor.y].update(dict.fromkeys(cells, cursor.attrs))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if not self.fast or how not in (0, 1, 2, 3):
            super().erase_in_display(how, *args, **kwargs)
            return
        rows = (range(self.cursor.y + 1, self.lines) if how == 0
                else range(self.cursor.y) if how == 1 else range(self.lines))
        self.dirty.update(rows)
        attrs = self.cursor.attrs
        for y in rows:
            line = self.buffer[y]
            line.update(dict.fromkeys(line, attrs))
        if how == 0 or how == 1:
            self.erase_in_line(how)

    def _cells_for(self, attrs: Any) -> _Cells:
        cells = self._cells.get(attrs)
        if cells is None:
            if len(self._cells) >= _MAX_CACHED_ATTRS:
                self._cells.clear()
            cells = self._cells[attrs] = _Cells(attrs)
        return cells

    def sgr(self, attrs: Any, params: str) -> Any:
        """The attributes `CSI params m` makes of `attrs` (cached)."""
        key = (attrs, params)
        result = self._sgr.get(key)
        if result is None:
            cursor = self.cursor
            saved, cursor.attrs = cursor.attrs, attrs
            try:
                self.select_graphic_rendition(*[min(int(p or 0), 9999) for p in params.split(";")])
                result = cursor.attrs
            finally:
                cursor.attrs = saved
            if len(self._sgr) > 4096:
                self._sgr.clear()
            self._sgr[key] = result
        return result

    # ----- whole lines, laid out lazily -----
    #
    # batch_lines takes the lines of `cat`, `seq` and `grep --color` output, which mostly
    # scroll away within the next chunk or two. It keeps the rows it makes as cheap items
    # (`_rows`, and the unfinished last line as `_partial`) and only builds pyte's cell
    # dicts when anything else reads or changes the screen (`buffer` settles them first).
    # The cursor is always kept exact.

    @property
    def buffer(self) -> Any:
        if self._lazy:
            self._settle()
        return self._buffer

    @buffer.setter
    def buffer(self, value: Any) -> None:
        self._lazy = False
        self._rows = None
        self._partial = None
        self._buffer = value

    def batch_lines(self, data: str, pos: int) -> int:
        """Whole lines ended by CR LF, arriving at the bottom row of a full-screen scroll
        region with the cursor in column 0 of an empty bottom row (as `cat`, `seq` and
        `grep --color` output does), then an unfinished last line that fits on the row:
        take them in, reporting the rows that scroll off. A line may hold printable
        characters, tabs (not the unfinished one), SGR and CSI K. Returns where the data
        taken ends, or -1 if none is."""
        bottom = self.lines - 1
        cursor = self.cursor
        partial = self._partial
        if partial is None and (
                cursor.x != 0 or cursor.y != bottom or self._buffer.get(bottom)
                or mo.IRM in self.mode or mo.DECAWM not in self.mode
                or (self.margins is not None and self.margins != (0, bottom))
                or (self.g1_charset if self.charset else self.g0_charset) is not cs.LAT1_MAP):
            return -1
        m = _BATCH.match(data, pos)
        if m is None:
            end = self._take_partial(data, pos)
            return -1 if end == pos else end
        columns = self.columns
        cells = self._cells_for(cursor.attrs if partial is None else self._partial_attrs)
        rows: list[Any] = []
        end = pos
        texts = m.group().split("\r\n")
        texts.pop()
        if partial is not None:
            texts[0] = partial + texts[0]
            end -= len(partial)
        default_tabs = self.tabstops == _default_tabs(columns)
        for text in texts:
            if text.isascii() and text.isprintable():
                if len(text) <= columns:
                    rows.append((text, cells))
                else:
                    rows.extend((text[i:i + columns], cells) for i in range(0, len(text), columns))
                end += len(text) + 2
                continue
            shown = text
            after = cells
            if "\x1b" in text:
                shown = _LINE_ESCAPES.sub("", text)
                after = self._cells_after_sgr(cells, text)
            row: Any = None
            if shown.isascii():
                if "\t" in shown and default_tabs:
                    shown = shown.expandtabs(8)
                    if len(shown) <= columns - columns % 8 - (columns % 8 == 0) * 8:
                        row = _Raw(shown, text, cells.attrs)
                elif len(shown) <= columns and "\t" not in shown:
                    row = _Raw(shown, text, cells.attrs)
            elif "\t" not in shown and 0 <= _text_width(shown) <= columns:
                row = _Raw(shown, text, cells.attrs)
            if row is not None:
                rows.append(row)
            else:
                laid = self._layout(text, cells.attrs)
                if laid is None:
                    break
                rows.extend(laid)
            cells = after
            end += len(text) + 2
        if not rows:
            return -1
        k = len(rows)
        # The rows in order, the first k of which scroll off: the screen above the bottom
        # row, then the new rows, then the empty bottom row.
        seq = self._rows
        if seq is None:
            buffer = self._buffer
            seq = [buffer.get(y) for y in range(bottom)]
            buffer.pop(bottom, None)
        seq.extend(rows)
        report = self.on_scroll if self._main is None else self.on_alternate_scroll
        if report is not None:
            for item in seq[:k]:
                kind = type(item)
                if kind is tuple or kind is _Raw:
                    report(item[0].rstrip())
                elif kind is list:
                    report(_cells_text(item).rstrip())
                else:
                    report(self._line_text(item).rstrip())
        self._rows = seq[k:]
        self._partial = None
        self._lazy = True
        cursor.x = 0
        cursor.attrs = cells.attrs
        self.dirty.update(range(self.lines))
        return self._take_partial(data, end) if end < len(data) else end

    def _take_partial(self, data: str, pos: int) -> int:
        """Take the rest of `data` from `pos` as (more of) the unfinished bottom line, if
        it is characters 1 or 2 wide, SGR and CSI K that stay left of the last column;
        returns where the data taken ends."""
        m = _PARTIAL.match(data, pos)
        if m is None:
            return pos
        raw = m.group()
        partial = self._partial
        cursor = self.cursor
        if partial is None:
            self._partial_attrs = cursor.attrs
            partial = ""
        shown = raw
        cells = self._cells_for(cursor.attrs)
        if "\x1b" in raw:
            shown = _LINE_ESCAPES.sub("", raw)
            cells = self._cells_after_sgr(cells, raw)
        x = cursor.x + (len(shown) if shown.isascii() else _text_width(shown))
        if x >= self.columns or x < cursor.x:
            return pos
        self._partial = partial + raw
        self._lazy = True
        cursor.x = x
        cursor.attrs = cells.attrs
        self.dirty.add(cursor.y)
        return len(data)

    def _settle(self) -> None:
        """Build the cell dicts of the rows batch_lines kept as items."""
        placed: list[tuple[int, Any]] = list(enumerate(self._rows or ()))
        if self._partial is not None:  # laid out like a whole line's row
            placed.append((self.lines - 1, _Raw("", self._partial, self._partial_attrs)))
        self._lazy = False
        self._rows = None
        self._partial = None
        buffer = self._buffer
        default = self.default_char
        for y, item in placed:
            kind = type(item)
            if kind is _Raw:
                laid = self._layout(item[1], item[2])
                assert laid is not None and len(laid) == 1
                item, kind = laid[0], list
            if kind is tuple:
                line: Any = StaticDefaultDict(default)
                line.update(zip(range(len(item[0])), map(item[1].__getitem__, item[0]), strict=True))
                buffer[y] = line
            elif kind is list:
                line = StaticDefaultDict(default)
                if None in item:
                    line.update((x, cell) for x, cell in enumerate(item) if cell is not None)
                else:
                    line.update(enumerate(item))
                buffer[y] = line
            elif item is None:
                buffer.pop(y, None)
            else:
                buffer[y] = item

    def _cells_after(self, cells: _Cells, sgr: str) -> _Cells:
        """The cells for the attributes after the SGR token `sgr` (cached per cell set)."""
        after = cells.after.get(sgr)
        if after is None:
            if len(cells.after) >= 64:
                cells.after.clear()
            after = cells.after[sgr] = self._cells_for(self.sgr(cells.attrs, sgr[2:-1]))
        return after

    def _cells_after_sgr(self, cells: _Cells, text: str) -> _Cells:
        for sgr in _SGR_ANY.findall(text):
            cells = self._cells_after(cells, sgr)
        return cells

    def _layout(self, text: str, attrs: Any) -> list[Any] | None:
        """The rows one line of text (see batch_lines) makes from an empty row, each as a
        list of its cells from column 0 (None for a cell never written, which the row
        must not hold); None if it holds an unprintable character, a zero-width one
        with no cell of its own line before it, or a tab from the right edge."""
        columns = self.columns
        cells = self._cells_for(attrs)
        rows: list[Any] = []
        line: list[Any] = []  # the cursor is at len(line)
        # An erase (CSI K) fills the row from the cursor on with `tail`, but for the cells
        # written since; they are all left of the cursor, so it is applied when the row
        # ends, and to the cells a tab skips.
        tail: Any = None
        widths = _WIDTHS
        for run, sgr, erase in _LINE_TOKENS.findall(text):
            if run:
                if run.isascii():
                    room = columns - len(line)
                    if len(run) <= room:
                        line += map(cells.__getitem__, run)
                        continue
                    while run:
                        if room == 0:
                            if tail is not None:
                                line += [tail] * (columns - len(line))
                                tail = None
                            rows.append(line)
                            line = []
                            room = columns
                        line += map(cells.__getitem__, run[:room])
                        run = run[room:]
                        room = columns - len(line)
                    continue
                for char in run:
                    w = widths.get(char)
                    if w is None:
                        w = widths[char] = wcwidth(char)
                    if w == 1 or w == 2:
                        if len(line) > columns - w:
                            if tail is not None:
                                line += [tail] * (columns - len(line))
                                tail = None
                            rows.append(line)
                            line = []
                        line.append(cells[char])
                        if w == 2:
                            line.append(cells[""])
                    elif w == 0 and line and line[-1] is not None:
                        x = len(line) - 1
                        if unicodedata.combining(char):  # as pyte's draw, which wraps first
                            if len(line) == columns:
                                tail = None  # nothing of the row is left to erase
                                rows.append(line)
                                line = []
                                line_before = rows[-1]
                                line_before[x] = line_before[x]._replace(
                                    data=unicodedata.normalize("NFC", line_before[x].data + char))
                                continue
                            last = line[x]
                            line[x] = last._replace(data=unicodedata.normalize("NFC", last.data + char))
                        else:  # as _attach
                            if line[x].data == "" and x > 0:
                                x -= 1
                                if line[x] is None:
                                    return None
                            line[x] = line[x]._replace(data=line[x].data + char)
                    else:
                        return None
            elif sgr:
                cells = self._cells_after(cells, sgr)
            elif erase:
                tail = cells.attrs
            else:  # a tab
                x = len(line)
                stop = self._tab_stop(x)
                if stop < x:
                    return None
                line += [tail] * (stop - x)
        if tail is not None:
            line += [tail] * (columns - len(line))
        rows.append(line)
        return rows

    def _tab_stop(self, x: int) -> int:
        for stop in sorted(self.tabstops):
            if x < stop:
                return int(stop)
        return self.columns - 1

    def _line_text(self, line: Any) -> str:
        if not line:
            return ""
        n = len(line)
        if n <= self.columns:
            keys = _KEYS.get(n)
            if keys is None:
                keys = _KEYS[n] = list(range(n))
            if list(line) == keys:  # cells 0 to n-1, in order (as batch_lines makes them)
                return "".join(map(_data, line.values()))
        end = min(max(line) + 1, self.columns)
        return "".join(map(_data, map(line.__getitem__, range(end))))

    def _draw_chars(self, data: str) -> None:
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

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        super().resize(lines, columns)
        # pyte keeps tab stops past a shrunk right edge, and a tab then puts the cursor
        # outside the screen; a terminal never tabs past its last column.
        self.tabstops = {t for t in self.tabstops if t < self.columns}
        if self._main is not None and self._main[1] is not None:
            # The shell screen's saved cursor shrinks with the terminal, as a terminal's does.
            x, y, attrs = self._main[1]
            self._main = (self._main[0], (min(x, self.columns - 1), min(y, self.lines - 1), attrs))

    def _leave_alternate(self) -> None:
        if self._main is None:
            return
        self.buffer, cursor = self._main
        self._main = None
        if cursor is not None:
            self.cursor.x, self.cursor.y, self.cursor.attrs = cursor
        self.dirty.update(range(self.lines))


class Terminal:
    """Bytes in, screen out: a decoder, the filter and the fixed screen.

    `on_scroll(text)` gets each line (rstripped) that scrolls off the top of the main
    screen. `fast=False` keeps pyte's per-character paths (the reference in tests)."""

    def __init__(self, columns: int = 80, lines: int = 24,
                 on_scroll: Callable[[str], None] | None = None, *, fast: bool = True) -> None:
        self.screen = TerminalScreen(columns, lines, fast=fast, on_scroll=on_scroll)
        self.stream: pyte.Stream = FastStream(self.screen) if fast else SafeStream(self.screen)
        self.filter = SequenceFilter()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def ground(self) -> bool:
        """The parser is between sequences (and nothing is held back): a snapshot is safe."""
        return (bool(self.stream._taking_plain_text) and not self.filter._held
                and not self._decoder.getstate()[0])

    def feed(self, data: bytes) -> None:
        self.stream.feed(self.filter.feed(self._decoder.decode(data)))

    def resize(self, columns: int, lines: int) -> None:
        self.screen.resize(lines, columns)

    @property
    def display(self) -> list[str]:
        return list(self.screen.display)
