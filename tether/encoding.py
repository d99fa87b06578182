"""Small, shared encodings: unpadded base64url and canonical JSON."""

from __future__ import annotations

import base64
from typing import Any

import orjson


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise ValueError("expected unpadded base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dumps(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, so signatures over it are reproducible."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
