"""The HELLO's optional `max_frame` and `window` (docs/protocol.md §8): what the agent
takes from a client (the web console asks for 3 KiB frames and a 64 KiB window)."""

from __future__ import annotations

from tether.agent.request import MIN_FRAME, MIN_WINDOW, max_frame, window_bytes
from tether.channel import DEFAULT_WINDOW_BYTES
from tether.frames import MAX_PAYLOAD


def test_max_frame_is_clamped_and_defaults_to_the_largest() -> None:
    assert max_frame({}) == MAX_PAYLOAD
    assert max_frame({"max_frame": 3072}) == 3072
    assert max_frame({"max_frame": 1}) == MIN_FRAME == 1024
    assert max_frame({"max_frame": 10**9}) == MAX_PAYLOAD
    for bad in ("3072", 3072.0, True, None, [3072]):
        assert max_frame({"max_frame": bad}) == MAX_PAYLOAD


def test_window_is_clamped_and_defaults_to_one_mebibyte() -> None:
    assert window_bytes({}) == DEFAULT_WINDOW_BYTES == 1 << 20
    assert window_bytes({"window": 65536}) == 65536
    assert window_bytes({"window": 0}) == MIN_WINDOW == 65536
    assert window_bytes({"window": 1 << 30}) == DEFAULT_WINDOW_BYTES
    for bad in ("65536", 65536.5, False, None):
        assert window_bytes({"window": bad}) == DEFAULT_WINDOW_BYTES
