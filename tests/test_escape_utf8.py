"""Tests for the client's ssh-style escape filter and the agent's UTF-8 cutting helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.client.escape import HELP, EscapeFilter, EscapeResult
from tether.session_core import utf8_cut, utf8_tail_incomplete

# ----- escape filter -----


def feed_all(f: EscapeFilter, pieces: list[bytes]) -> tuple[bytes, bool, int]:
    """Feed pieces until a disconnect; return (data passed, disconnected, help count)."""
    out = b""
    helps = 0
    for piece in pieces:
        r = f.feed(piece)
        out += r.data
        helps += r.help
        if r.disconnect:
            return out, True, helps
    return out, False, helps


def test_tilde_dot_at_start_disconnects() -> None:
    r = EscapeFilter().feed(b"~.")
    assert r == EscapeResult(b"", disconnect=True, help=False)


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_tilde_dot_after_newline_disconnects(newline: bytes) -> None:
    r = EscapeFilter().feed(b"ls -l" + newline + b"~.rest is dropped")
    assert r.disconnect
    assert r.data == b"ls -l" + newline


@pytest.mark.parametrize("data", [b"a~.", b"echo ~.\n", b"x ~.", b" ~.", b"\x1b~."])
def test_tilde_dot_mid_line_is_just_data(data: bytes) -> None:
    r = EscapeFilter().feed(data)
    assert not r.disconnect
    assert r.data == data


def test_tilde_tilde_sends_one_tilde() -> None:
    f = EscapeFilter()
    r = f.feed(b"~~")
    assert r.data == b"~" and not r.disconnect
    # ... and what follows is mid-line, so "." is plain data.
    r = f.feed(b".")
    assert r.data == b"." and not r.disconnect
    assert EscapeFilter().feed(b"cd\n~~/src\n").data == b"cd\n~/src\n"


def test_tilde_question_mark_asks_for_help() -> None:
    f = EscapeFilter()
    r = f.feed(b"\n~?")
    assert r.help and not r.disconnect
    assert r.data == b"\n"
    assert "~." in HELP and "~~" in HELP and "~?" in HELP
    r = f.feed(b"more")
    assert not r.help and r.data == b"more"


def test_other_char_after_tilde_is_sent_with_the_tilde() -> None:
    assert EscapeFilter().feed(b"~x").data == b"~x"
    assert EscapeFilter().feed(b"\n~/bin\n").data == b"\n~/bin\n"
    f = EscapeFilter()
    # "~" then newline: both are sent, and the newline starts a new line again.
    r = f.feed(b"~\n~.")
    assert r.data == b"~\n" and r.disconnect


def test_escape_split_across_feeds() -> None:
    f = EscapeFilter()
    assert f.feed(b"make\n") == EscapeResult(b"make\n")
    assert f.feed(b"~") == EscapeResult(b"")  # held back: might be an escape
    r = f.feed(b".")
    assert r.disconnect and r.data == b""

    f = EscapeFilter()
    assert f.feed(b"ok\n").data == b"ok\n"
    assert f.feed(b"~").data == b""
    assert f.feed(b"~").data == b"~"
    f = EscapeFilter()
    f.feed(b"\n~")
    r = f.feed(b"?")
    assert r.help and r.data == b""
    f = EscapeFilter()
    f.feed(b"x\r")
    f.feed(b"~")
    assert f.feed(b"vim\n").data == b"~vim\n"


def test_newline_split_from_escape() -> None:
    f = EscapeFilter()
    f.feed(b"abc\n")
    assert f.feed(b"~.").disconnect
    f = EscapeFilter()
    f.feed(b"abc")
    assert not f.feed(b"~.").disconnect


def test_disabled_escape_passes_everything() -> None:
    data = b"~.\n~.~~~?\r~.\x00\xff"
    for f in (EscapeFilter(None), EscapeFilter("")):
        r = f.feed(data)
        assert r == EscapeResult(data)
        assert f.feed(b"~").data == b"~"


def test_custom_escape_character() -> None:
    f = EscapeFilter("%")
    assert f.feed(b"~.\n").data == b"~.\n"
    r = f.feed(b"%.")
    assert r.disconnect
    assert EscapeFilter("%").feed(b"%%").data == b"%"


ALPHABET = st.sampled_from([b"~", b".", b"?", b"\n", b"\r", b"a", b"~~", b"\xc3\xa9"])


@given(
    parts=st.lists(ALPHABET, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
@settings(max_examples=300, deadline=None)
def test_chunking_never_changes_the_outcome(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    whole = feed_all(EscapeFilter(), [data])
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(EscapeFilter(), pieces) == whole
    # Byte by byte, too.
    assert feed_all(EscapeFilter(), [bytes([b]) for b in data]) == whole


@given(st.binary(max_size=200).filter(lambda d: b"~" not in d))
def test_data_without_the_escape_char_is_untouched(data: bytes) -> None:
    r = EscapeFilter().feed(data)
    assert r == EscapeResult(data)


@given(st.lists(ALPHABET, max_size=40))
@settings(max_examples=300, deadline=None)
def test_tildes_not_at_a_line_start_are_never_touched(parts: list[bytes]) -> None:
    data = b"x" + b"".join(parts)
    while b"\n~" in data or b"\r~" in data:
        data = data.replace(b"\n~", b"\n").replace(b"\r~", b"\r")
    assert not data.startswith(b"~") and b"\n~" not in data and b"\r~" not in data
    assert EscapeFilter().feed(data) == EscapeResult(data)


def test_help_keeps_the_line_start_like_openssh() -> None:
    f = EscapeFilter()
    assert f.feed(b"~?").help
    assert f.feed(b"~.").disconnect
    # In one read (a paste), the help request is not lost to the disconnect.
    r = EscapeFilter().feed(b"~?~.")
    assert r.help and r.disconnect and r.data == b""


# ----- UTF-8 cutting -----

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]),  # no lone surrogates: not encodable
    max_size=60,
)


def boundaries(data: bytes) -> set[int]:
    return {i for i in range(len(data) + 1) if i == len(data) or (data[i] & 0xC0) != 0x80}


@given(text=TEXT, end=st.integers(min_value=0, max_value=300))
@settings(max_examples=400, deadline=None)
def test_utf8_cut_never_splits_a_character(text: str, end: int) -> None:
    data = text.encode()
    cut = utf8_cut(data, end)
    if end >= len(data):
        assert cut == end
        return
    assert cut <= end
    assert cut in boundaries(data)
    data[:cut].decode()
    data[cut:].decode()
    # The largest such cut.
    assert not any(b for b in boundaries(data) if cut < b <= end)


@pytest.mark.parametrize(("data", "end"), [("€x".encode(), 1), ("€x".encode(), 2), ("😀".encode(), 3)])
def test_utf8_cut_inside_the_first_character(data: bytes, end: int) -> None:
    assert utf8_cut(data, end) == 0


def test_utf8_cut_examples() -> None:
    euro = "€".encode()  # 3 bytes
    data = b"ab" + euro + b"cd"
    assert [utf8_cut(data, e) for e in range(len(data) + 1)] == [0, 1, 2, 2, 2, 5, 6, 7]
    assert utf8_cut(data, 100) == 100
    assert utf8_cut(bytearray(data), 4) == 2
    smiley = "😀".encode()  # 4 bytes
    data = b"x" + smiley
    assert [utf8_cut(data, e) for e in range(1, 5)] == [1, 1, 1, 1]


@given(text=TEXT, k=st.integers(min_value=0, max_value=300))
@settings(max_examples=400, deadline=None)
def test_utf8_tail_incomplete_property(text: str, k: int) -> None:
    data = text.encode()
    k = min(k, len(data))
    prefix = data[:k]
    n = utf8_tail_incomplete(prefix)
    assert 0 <= n <= 3
    assert (k - n) in boundaries(data)
    prefix[: k - n].decode()
    # Zero exactly when the prefix ends on a character boundary.
    assert (n == 0) == (k in boundaries(data))


def test_utf8_tail_incomplete_examples() -> None:
    assert utf8_tail_incomplete(b"") == 0
    assert utf8_tail_incomplete(b"abc") == 0
    assert utf8_tail_incomplete(b"a\xc3") == 1
    assert utf8_tail_incomplete(b"a\xe2\x82") == 2
    assert utf8_tail_incomplete(b"\xf0\x9f\x98") == 3
    assert utf8_tail_incomplete("😀".encode()) == 0
    assert utf8_tail_incomplete(bytearray("é".encode())) == 0
    # Garbage is not held back forever: stray continuation bytes are complete "as is".
    assert utf8_tail_incomplete(b"\x80\x80\x80\x80") == 0


def stream(data: bytes, chunks: list[int], rooms: list[int]) -> list[bytes]:
    """The agent's output loop: buffer reads, send what fits, hold back only an incomplete
    character at the end (until EOF), cut only at character boundaries."""
    pieces: list[bytes] = []
    buf = bytearray()
    pos = 0
    i = 0
    while True:
        eof = pos >= len(data)
        if not eof:
            n = max(1, chunks[i % len(chunks)])
            buf += data[pos : pos + n]
            pos += n
            eof = pos >= len(data)
        stalled = False
        while buf:
            # Credit comes back over time: after a stall the window has room for a character.
            room = max(4 if stalled else 1, rooms[i % len(rooms)])
            i += 1
            end = min(room, len(buf))
            if end == len(buf) and not eof:
                end -= utf8_tail_incomplete(buf)
            elif end < len(buf):
                end = utf8_cut(buf, end)
            if end <= 0:
                if room >= len(buf):
                    break  # waiting for the rest of a character from the program
                stalled = True  # waiting for credit
                continue
            stalled = False
            pieces.append(bytes(buf[:end]))
            del buf[:end]
        if eof and not buf:
            return pieces
        i += 1


@given(
    data=st.binary(max_size=400),
    chunks=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=8),
    rooms=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_binary_garbage_passes_through_without_loss(data: bytes, chunks: list[int], rooms: list[int]) -> None:
    pieces = stream(data, chunks, rooms)
    assert b"".join(pieces) == data
    assert all(pieces)


@given(
    text=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=120),
    chunks=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=8),
    rooms=st.lists(st.integers(min_value=4, max_value=50), min_size=1, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_text_stream_pieces_are_each_valid_utf8(text: str, chunks: list[int], rooms: list[int]) -> None:
    data = text.encode()
    pieces = stream(data, chunks, rooms)
    assert b"".join(pieces) == data
    for piece in pieces:
        piece.decode()  # never a partial character in a frame


@given(text=TEXT, junk=st.binary(max_size=20), cut_at=st.integers(min_value=0, max_value=200))
def test_mixed_text_and_garbage_concatenates_losslessly(text: str, junk: bytes, cut_at: int) -> None:
    data = text.encode() + junk + text.encode()
    pieces = []
    rest = data
    room = max(4, cut_at % 17)  # room for the longest character: there is always progress
    while rest:
        end = utf8_cut(rest, min(room, len(rest))) if room < len(rest) else len(rest)
        assert end > 0  # always progress
        pieces.append(rest[:end])
        rest = rest[end:]
    assert b"".join(pieces) == data
