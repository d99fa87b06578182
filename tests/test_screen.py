"""Screen reconstruction: each pyte loss from FIELD-NOTES, shown on stock pyte and fixed."""

from __future__ import annotations

import pyte
import pytest

from tether.recorder.screen import SequenceFilter, Terminal


def stock(data: bytes, columns: int = 20, lines: int = 3) -> list[str]:
    screen = pyte.Screen(columns, lines)
    pyte.ByteStream(screen).feed(data)
    return list(screen.display)


def ours(data: bytes | list[bytes], columns: int = 20, lines: int = 3) -> Terminal:
    t = Terminal(columns, lines)
    for chunk in data if isinstance(data, list) else [data]:
        t.feed(chunk)
    return t


@pytest.mark.parametrize("joiner", ["\ufe0f", "\u200d", "\u200b"], ids=["VS16", "ZWJ", "ZWSP"])
def test_text_after_zero_width_characters_is_kept(joiner: str) -> None:
    data = f"a\u2764{joiner}after".encode()
    assert "after" not in stock(data)[0]  # the loss is real
    line = ours(data).display[0]
    assert line.startswith(f"a\u2764{joiner}after")


def test_dcs_strings_are_not_drawn() -> None:
    data = b"\x1bP1;2|secret-dcs\x1b\\visible"
    assert "secret-dcs" in stock(data)[0]
    assert ours(data).display[0].rstrip() == "visible"
    split = [b"\x1bP1;2|sec", b"ret-dcs\x1b", b"\\visible"]
    assert ours(split).display[0].rstrip() == "visible"


def test_colon_form_sgr_sets_colour_instead_of_printing() -> None:
    data = b"\x1b[38:2::255:0:0mred \x1b[48:5:4mblue-bg \x1b[4:3mcurly"
    assert "2::255" in stock(data, 60)[0]
    t = ours(data, 60)
    assert t.display[0].rstrip() == "red blue-bg curly"
    row = t.screen.buffer[0]
    assert row[0].fg == "ff0000" and row[4].bg != "default" and row[12].underscore
    split = ours([b"\x1b[38:2::0:2", b"55:0mg"])
    assert split.display[0].rstrip() == "g" and split.screen.buffer[0][0].fg == "00ff00"


def test_wide_character_in_the_last_column_wraps() -> None:
    data = "abcd\u4e2d".encode()
    assert stock(data, 5)[0] == "abcd\u4e2d"  # drawn past the 5-column edge
    t = ours(data, 5)
    assert t.display[0] == "abcd " and t.display[1].startswith("\u4e2d")


@pytest.mark.parametrize("mode", [1049, 1047, 47])
def test_alternate_screen_leaves_the_shell_screen_alone(mode: int) -> None:
    enter, leave = f"\x1b[?{mode}h".encode(), f"\x1b[?{mode}l".encode()
    t = ours([b"shell$ ls\r\nfile\r\n", enter, b"\x1b[2J\x1b[HVIM BUFFER", leave])
    assert "VIM BUFFER" not in "".join(t.display)
    assert t.display[0].startswith("shell$ ls") and t.display[1].startswith("file")
    assert not t.screen.alternate
    during = ours([b"shell$ ", enter, b"\x1b[2J\x1b[HVIM"])
    assert during.screen.alternate and during.display[0].startswith("VIM")
    assert "shell$" not in "".join(stock(b"shell$ " + enter + b"\x1b[2J\x1b[HVIM"))  # pyte loses it


def test_utf8_split_across_chunks() -> None:
    euro = "\u20ac".encode()
    assert ours([b"a" + euro[:1], euro[1:] + b"b"]).display[0].startswith("a\u20acb")


def test_filter_passes_ordinary_text_and_holds_only_unfinished_sequences() -> None:
    f = SequenceFilter()
    assert f.feed("plain text\r\n") == "plain text\r\n"
    assert f.feed("abc\x1b[3") == "abc"
    assert f.feed("1mred") == "\x1b[31mred"
