"""Screen reconstruction: each pyte loss (docs/sources.md#pyte-losses), on stock pyte and fixed."""

from __future__ import annotations

import random

import pyte
import pytest

from tether.recorder.screen import Terminal
from tether.recorder.stream_filters import SequenceFilter


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


@pytest.mark.parametrize("seed", range(40))
def test_filter_output_does_not_depend_on_where_chunks_split(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(["\x1b", "\x1bP", "\x90", "\x9c", "\x1b\\", "[", "3", ":", ";", "m",
                               "2", "x", "yz ", "\x1b[38:2::1:2:3m"]) for _ in range(300))
    whole = SequenceFilter()
    expected = whole.feed(text)
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    split = SequenceFilter()
    got = "".join(split.feed(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True))
    assert got == expected and split._held == whole._held


# ----- the fast path draws exactly what the per-character path draws -----

CELL_FIELDS = ("data", "fg", "bg", "bold", "italics", "underscore", "strikethrough",
               "reverse", "blink")


def cells(t: Terminal) -> list[list[tuple[object, ...]]]:
    s = t.screen
    return [[tuple(getattr(s.buffer[y][x], f) for f in CELL_FIELDS) for x in range(s.columns)]
            for y in range(s.lines)]


def replay(data: bytes, columns: int, lines: int, fast: bool, chunk: int) -> tuple[Terminal, list[str]]:
    scrolled: list[str] = []
    t = Terminal(columns, lines, on_scroll=scrolled.append, fast=fast)
    for i in range(0, len(data), chunk):
        t.feed(data[i:i + chunk])
    return t, scrolled


def assert_same_state(fast: Terminal, slow: Terminal) -> None:
    assert cells(fast) == cells(slow)
    assert (fast.screen.cursor.x, fast.screen.cursor.y) == (slow.screen.cursor.x, slow.screen.cursor.y)
    assert fast.screen.cursor.attrs == slow.screen.cursor.attrs
    assert fast.screen.alternate == slow.screen.alternate


def assert_same(data: bytes, columns: int = 80, lines: int = 24) -> tuple[Terminal, list[str]]:
    for chunk in (4096, 997, 61):
        fast, fast_scrolled = replay(data, columns, lines, True, chunk)
        slow, slow_scrolled = replay(data, columns, lines, False, chunk)
        assert_same_state(fast, slow)
        assert fast_scrolled == slow_scrolled
    # The fast path keeps rows unbuilt across chunks until the screen is read: read it
    # between chunks too, at irregular points.
    fast_scrolled, slow_scrolled = [], []
    fast_mid = Terminal(columns, lines, on_scroll=fast_scrolled.append)
    slow_mid = Terminal(columns, lines, on_scroll=slow_scrolled.append, fast=False)
    for n, i in enumerate(range(0, len(data), 509)):
        fast_mid.feed(data[i:i + 509])
        slow_mid.feed(data[i:i + 509])
        if n % 7 == 3 or i + 509 >= len(data):
            assert_same_state(fast_mid, slow_mid)
            assert fast_scrolled == slow_scrolled
    return fast, fast_scrolled


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    from bench.record_corpus import Capture, captures, run_pty

    made = captures()
    out = {name: b"".join(c for _, c in run_pty(made[name](), 80, 24))
           for name in ("ls", "vim", "top-batch", "cjk")}
    out["seq"] = b"".join(c for _, c in run_pty(Capture(["seq", "1", "20000"]), 80, 24))
    # grep --color (SGR and CSI K around every match) and cat of text with tabs, cut short:
    # the per-character path is slow.
    for name in ("grep", "cat"):
        out[name] = b"".join(c for _, c in run_pty(made[name](), 80, 24))[:150_000]
    return out


@pytest.mark.parametrize("name", ["ls", "vim", "top-batch", "cjk", "seq", "grep", "cat"])
def test_fast_path_matches_per_character_path_on_real_captures(corpus: dict[str, bytes], name: str) -> None:
    data = corpus[name]
    assert len(data) > 5000
    t, scrolled = assert_same(data)
    if name == "vim":  # vim left the alternate screen: the (empty) shell screen is back
        assert not t.screen.alternate and not "".join(t.display).strip()
    else:
        assert "".join(t.display).strip()
    if name == "seq":
        assert scrolled[:3] == ["1", "2", "3"] and scrolled[-1] == "19977"
        assert t.display[-2].rstrip() == "20000"


def test_fast_path_matches_stock_pyte_where_stock_is_right(corpus: dict[str, bytes]) -> None:
    for name in ("ls", "seq"):
        screen = pyte.Screen(80, 24)
        pyte.ByteStream(screen).feed(corpus[name])
        t, _ = replay(corpus[name], 80, 24, True, 4096)
        assert t.display == list(screen.display)
        assert [[screen.buffer[y][x] for x in range(80)] for y in range(24)] == \
            [[t.screen.buffer[y][x] for x in range(80)] for y in range(24)]


@pytest.mark.parametrize("data", [
    b"x" * 200 + b"\r\n" + b"y" * 80 + b"\r\n" + b"z" * 81 + b"\r\n",  # exact width, wrap
    b"\x1b[31mred\x1b[0m\r\n" * 50 + b"\x1b[5;10r" + b"in region\r\n" * 20,  # margins
    b"\x1b[4hinsert\x1b[4l" + b"a\tb\r\n" * 30,  # IRM, tabs
    b"\x1b(0lqqk\x1b(B" + b"line\r\n" * 30,  # DEC graphics charset
    ("\u4e2d\u6587" * 50 + "e\u0301\u2764\ufe0f!" * 30).encode(),
    b"\x1b[?7l" + b"n" * 100 + "\u4e2d".encode() * 50 + b"\x1b[?7h\r\n",  # no autowrap
    b"\x1b[3;5Hmid" + b"\r\n".join(b"%d" % i for i in range(100)) + b"\r\n",
    b"\x1b[?1;2m\x1b[1;32mafter\r\n",  # CSI ? m: stock pyte raises
    # whole lines at the bottom row: colours and erases (grep), tabs, wide characters,
    # wrapping, erases with colour left to the edge, zero-width characters mid-batch
    b"\r\n" * 8 + b"\x1b[35m\x1b[Kpath\x1b[m\x1b[K\x1b[36m\x1b[K:\x1b[m\x1b[Kthe \x1b[01;31m\x1b[Kmatch"
    b"\x1b[m\x1b[K end\r\n" * 12,
    b"\r\n" * 8 + b"a\tb\t\tc\r\n\t\t\t\tx\r\n" * 6 + b"x" * 19 + b"\tyz\r\n" + b"\tq" * 12 + b"\r\n",
    b"\r\n" * 8 + "\u4e2d\u6587 ab \uff21\r\n".encode() * 5 + "x\u4e2d".encode() * 15 + b"\r\n"
    + "a\u2764\ufe0fb\r\n\u4e2d\r\n".encode() * 3,
    b"\r\n" * 8 + b"\x1b[41m\x1b[Kred to the edge\r\n" + b"\x1b[42mgreen\x1b[K" + b"w" * 30
    + b"\x1b[K\x1b[0K\x1b[m\r\n" + b"\x1b[44m\x1b[Kab\x1b[45m\x1b[Kcd\x1b[m\x1b[K" * 8 + b"\r\n"
    + b"\x1b[1m" + b"y" * 45 + b"\x1b[0m\r\n",
    b"\r\n" * 8 + b"\x1b[38;5;300mbad\x1b[38;2;1;2;3;4mrgb\x1b[;1;;4mx\x1b[Ky\r\n" * 4,
    # zero-width characters in batched lines: at the edge (combining ones wrap first), at
    # the start of a line, after a wide character, after a tab, in the unfinished line
    b"\r\n" * 8 + ("x" * 20 + "\u0301y\r\n" + "x" * 20 + "\u200bz\r\n" + "\u200bs\r\n"
                    + "\u4e2d\u200bw\u4e2d\ufe0f\r\n" + "\tq\u0301\r\na\t\u0301\r\n" + "e\u0301" * 12
                    + "\r\n").encode() * 3 + "tail\u0301 and more".encode(),
    # the unfinished last line: growing over chunks to the edge, with colour, then cut
    b"\r\n" * 8 + b"ab\x1b[31mcd\x1b[m\r\n" * 9 + b"\x1b[1mpart" + b"ial" * 7 + b"\x1b[m\x1b[2D!\r\n",
])
def test_fast_path_matches_on_edge_cases(data: bytes) -> None:
    assert_same(data, 20, 6)


def test_scrolled_off_lines_are_reported_for_the_main_screen_only() -> None:
    scrolled: list[str] = []
    t = Terminal(20, 3, on_scroll=scrolled.append)
    t.feed(b"one   \r\ntwo\r\nthree\r\nfour\r\n")
    assert scrolled == ["one", "two"]
    t.feed(b"\x1b[?1049h" + b"vim\r\n" * 10 + b"\x1b[?1049l")
    assert scrolled == ["one", "two"]
    t.feed(b"five\r\n")
    assert scrolled == ["one", "two", "three"]


def random_stream(rng: random.Random) -> bytes:
    parts: list[str] = []
    for _ in range(rng.randint(20, 200)):
        k = rng.random()
        if k < 0.3:
            parts.append("".join(rng.choice("abc xyz-_=|") for _ in range(rng.randint(1, 30))))
        elif k < 0.45:
            params = ";".join(str(rng.choice([0, 1, 2, 3, 4, 5, 7, 10, 31, 38, 42, 99, 200]))
                              for _ in range(rng.randint(0, 3)))
            parts.append(f"\x1b[{rng.choice(['', '?'])}{params}{rng.choice('mHJKABCDGdfrhlLMPX@`Sn')}")
        elif k < 0.6:
            parts.append(rng.choice(["\r\n", "\n", "\r", "\t", "\b", "\x07", "\x1b7", "\x1b8",
                                     "\x1bM", "\x1bD", "\x1bE", "\x1b(0", "\x1b(B", "\x0e", "\x0f"]))
        elif k < 0.7:
            parts.append(rng.choice(["\u4e2d\u6587", "e\u0301", "\u2764\ufe0f", "\u200d", "\u00e9",
                                     "\U0001f468\u200d\U0001f469", "\uff21"]))
        elif k < 0.8:
            parts.append("".join(f"line {rng.randint(0, 999)}\r\n" for _ in range(rng.randint(1, 30))))
        elif k < 0.85:
            parts.append(rng.choice(["\x1b[?1049h", "\x1b[?1049l", "\x1b[?47h", "\x1b[?47l",
                                     "\x1b[?7l", "\x1b[?7h", "\x1b[4h", "\x1b[4l", "\x1b[20h",
                                     "\x1b[20l", "\x1b[?6h", "\x1b[?6l"]))
        elif k < 0.9:
            parts.append(rng.choice(["\x1bP1$r0m\x1b\\", "\x1b]0;title\x07", "\x1b]133;A\x07",
                                     "\x1b[38:2::1:2:3m", "\x1b[5K", "\x1b[9J", "\x1b[>c"]))
        else:
            parts.append("x" * rng.randint(1, 60))
    return "".join(parts).encode()


def random_lines(rng: random.Random) -> bytes:
    """Screens of whole lines (the batch path) with colours, erases, tabs and wide text."""
    parts: list[str] = ["\r\n" * rng.randint(0, 10)]
    for _ in range(rng.randint(5, 80)):
        for _ in range(rng.randint(0, 6)):
            k = rng.random()
            if k < 0.35:
                parts.append("".join(rng.choice("abc xyz-:") for _ in range(rng.randint(1, 40))))
            elif k < 0.55:
                parts.append(f"\x1b[{rng.choice(['', '0', '1', '01;31', '35', '42', '7', '38;5;9'])}m")
            elif k < 0.7:
                parts.append(rng.choice(["\x1b[K", "\x1b[0K"]))
            elif k < 0.8:
                parts.append("\t" * rng.randint(1, 3))
            elif k < 0.9:
                parts.append(rng.choice(["\u4e2d\u6587", "\uff21", "\u00e9", "\u2502", "e\u0301", "\u2764\ufe0f"]))
            elif k < 0.95:
                parts.append(rng.choice(["\x1b[H", "\x1b[2J", "\x1b[5;1H", "\x1b[?7l", "\x1b[?7h", "\x1b[4h",
                                         "\x1b[4l", "\x1b(0", "\x1b(B", "\x1b[2;5r", "\x1b[r", "\x1b[3g",
                                         "\x1bH"]))
            else:
                parts.append("w" * rng.randint(20, 90))
        parts.append(rng.choice(["\r\n"] * 8 + ["\n", "\r"]))
    return "".join(parts).encode()


@pytest.mark.parametrize("seed", range(100))
def test_fast_path_matches_on_random_lines(seed: int) -> None:
    rng = random.Random(seed)
    assert_same(random_lines(rng), rng.choice([10, 20, 33, 80]), rng.choice([3, 5, 8, 24]))


@pytest.mark.parametrize("seed", range(150))
def test_fast_path_matches_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    data = random_stream(rng)
    assert_same(data, rng.choice([10, 20, 33]), rng.choice([3, 5, 8]))
