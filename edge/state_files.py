"""Small private state files: one JSON object holding a list of dataclass records,
written atomically 0600 and refused when exposed (tether.edge.keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from tether.edge.keys import read_private_file, write_private_file
from tether.encoding import dumps, loads

T = TypeVar("T")


def load_records(path: Path, key: str, make: Callable[..., T]) -> list[T]:
    if not path.exists():
        return []
    return [make(**item) for item in loads(read_private_file(path)).get(key, [])]


def save_records(path: Path, key: str, records: Iterable[Any]) -> None:
    write_private_file(path, dumps({key: [asdict(r) for r in records]}))
