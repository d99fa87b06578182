"""The authority's audit trail: one signed, hash-chained JSON line per decision.

Each line carries the BLAKE2b hash of the line before it and the authority's signature
over itself, so a removed, reordered or edited line is detected by `tether audit`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tether.encoding import b64d, b64e, dumps, loads

GENESIS = "0" * 64


def _line_hash(line: bytes) -> str:
    return hashlib.blake2b(line.rstrip(b"\n"), digest_size=32, person=b"tether-audit").hexdigest()


def _signed_part(event: dict[str, Any]) -> bytes:
    return b"tether-audit\x00" + dumps({k: v for k, v in event.items() if k != "sig"})


def _last_line(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    block = 4096
    while True:
        start = max(0, size - block)
        data = os.pread(fd, size - start, start).rstrip(b"\n")
        cut = data.rfind(b"\n")
        if cut >= 0 or start == 0:
            return data[cut + 1 :]
        block *= 2


class AuditLog:
    """Appends events; each append is flushed and fsync'd before the decision is sent.

    The authority service and the admin commands both append, so every append takes an
    exclusive lock and chains to the line actually last in the file.
    """

    def __init__(self, path: Path, key: SigningKey) -> None:
        self.path = path
        self.key = key

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            record: dict[str, Any] = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "event": event,
                "prev": _line_hash(last) if last else GENESIS,
                **{k: v for k, v in fields.items() if v is not None},
            }
            record["sig"] = b64e(self.key.sign(_signed_part(record)).signature)
            os.write(fd, dumps(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        return record


@dataclass
class AuditEntry:
    line: int
    record: dict[str, Any]
    problem: str | None  # None: signature and chain verified

    @property
    def when(self) -> float:
        text = str(self.record.get("ts", ""))
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0


def read_audit(path: Path, authority_key: bytes) -> Iterator[AuditEntry]:
    """Every entry, each verified against the authority key and the chain."""
    verify = VerifyKey(authority_key)
    prev = GENESIS
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                record = loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                yield AuditEntry(number, {}, "not valid JSON")
                prev = _line_hash(raw)
                continue
            try:
                verify.verify(_signed_part(record), b64d(str(record.get("sig", ""))))
            except (BadSignatureError, ValueError):
                problem = "bad signature: this line was altered or not written by the authority"
            if problem is None and record.get("prev") != prev:
                problem = "chain broken: a line before this one was removed, reordered or altered"
            prev = _line_hash(raw)
            yield AuditEntry(number, record, problem)


def parse_since(text: str, now: float | None = None) -> float:
    """'90m', '2h', '7d' ago, or an ISO date/time."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
