"""What a fuzz harness is, and the small helpers the harnesses share.

A harness's first input byte picks a layer (its value modulo the number of layers); the
rest is the fuzzed input. Layer 0 always feeds the raw bytes to the decoder as they
would arrive from the broker. The other layers wrap the fuzzed bytes in a validly sealed
and/or signed envelope made with the fixed keys of `fixtures`, so the fuzzer reaches the
parsing behind the MAC or signature.

`Harness.run` lets through only the decoder's documented error types, those its callers
catch. Any other exception, or a failed assertion about what the decoder returned, is a
crash. Decoders whose callers catch nothing (they answer None or False) allow nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Layer = Callable[[bytes], None]


@dataclass(frozen=True)
class Harness:
    name: str
    decoders: str  # what it fuzzes, as the docs name it
    errors: tuple[type[BaseException], ...]  # the decoder's documented error types
    layers: tuple[Layer, ...]
    seeds: Callable[[], list[bytes]]  # whole inputs, layer byte included

    def run(self, data: bytes) -> None:
        if not data:
            return
        with contextlib.suppress(*self.errors):
            self.layers[data[0] % len(self.layers)](data[1:])


def seed(layer: int, payload: bytes) -> bytes:
    return bytes([layer]) + payload


def text(data: bytes) -> str:
    """Any bytes as a str, lone surrogates included, as argv and some decoders make them."""
    return data.decode("utf-8", "surrogateescape")


def expect_types(obj: Any, types: dict[str, tuple[type, ...]]) -> None:
    """Each named attribute of `obj` has one of its types (a bool is not an int here)."""
    for name, allowed in types.items():
        value = getattr(obj, name)
        assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (
            f"{type(obj).__name__}.{name} is {type(value).__name__} {value!r:.80}, "
            f"not {' | '.join(t.__name__ for t in allowed)}")
