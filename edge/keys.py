"""Identities: key material on disk, created 0600, written atomically, refused if exposed."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether.encoding import b64d, b64e, dumps, loads
from tether.errors import TetherError


class KeyFileError(TetherError):
    """A key or identity file that is missing, unreadable, malformed or too exposed."""


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file's name) durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_file(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path} does not exist") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it. Fix with: chmod 600 {path}"
        )
    return path.read_bytes()


@dataclass
class Identity:
    """One principal's keys, broker credentials and trust anchors."""

    name: str
    kind: str  # user | agent | authority | recorder | admin
    signing_seed: bytes
    x25519_secret: bytes | None = None
    broker: dict[str, Any] = field(default_factory=dict)  # host, port, password, tls...
    authority: dict[str, str] = field(default_factory=dict)  # ed25519, x25519 (b64)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def generate(cls, name: str, kind: str, *, with_x25519: bool = False) -> Identity:
        x = bytes(PrivateKey.generate()) if with_x25519 else None
        return cls(name=name, kind=kind, signing_seed=bytes(SigningKey.generate()), x25519_secret=x)

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.signing_seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def x25519_public(self) -> bytes:
        if self.x25519_secret is None:
            raise KeyFileError(f"identity {self.name!r} has no X25519 key")
        return bytes(PrivateKey(self.x25519_secret).public_key)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "ed25519_seed": b64e(self.signing_seed),
            "broker": self.broker,
            "authority": self.authority,
            "labels": self.labels,
        }
        if self.x25519_secret is not None:
            doc["x25519_secret"] = b64e(self.x25519_secret)
        return dumps(doc)

    def save(self, path: Path) -> None:
        write_private_file(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Identity:
        raw = read_private_file(path)
        try:
            doc = loads(raw)
            if not isinstance(doc, dict):
                raise TypeError("expected a JSON object")
            x = doc.get("x25519_secret")
            return cls(
                name=doc["name"],
                kind=doc["kind"],
                signing_seed=b64d(doc["ed25519_seed"]),
                x25519_secret=b64d(x) if x else None,
                broker=dict(doc.get("broker") or {}),
                authority=dict(doc.get("authority") or {}),
                labels=dict(doc.get("labels") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a valid tether identity file: {exc}") from exc
