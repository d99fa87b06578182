"""The agent's memory of what must never be accepted twice, kept on disk across restarts.

Two caches, each entry kept until it can no longer be used anyway: the `jti` of every
grant that passed the checks (until the grant expires) and the ephemeral key of every
HELLO the agent accepted (until its timestamp is too old to pass). Without the file, a
restarted agent would take a captured grant or HELLO again for as long as it is fresh.
Only grants the authority signed reach either cache, so their size follows the sessions
of the last few minutes, not what an attacker sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tether.edge.keys import KeyFileError, read_private_file, write_private_file
from tether.encoding import b64d, b64e, dumps, loads
from tether.errors import TetherError

VERSION = 1
K = TypeVar("K")


class ReplayStateError(TetherError):
    """The replay state file cannot be read or written; the message says what to do."""


def replay_state_file(identity_file: Path) -> Path:
    """Beside the agent's identity file: `agent.json` keeps `agent.replay.json`."""
    return identity_file.with_name(f"{identity_file.stem}.replay.json")


@dataclass
class ReplayState:
    path: Path | None  # None: kept in memory only
    grants: dict[str, float] = field(default_factory=dict)  # jti -> grant expiry
    hellos: dict[bytes, float] = field(default_factory=dict)  # HELLO ephemeral key -> forget after

    @classmethod
    def load(cls, path: Path | None, now: float) -> ReplayState:
        state = cls(path)
        if path is None or not path.exists():
            return state
        try:
            doc = loads(read_private_file(path))
            if doc.get("version") != VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            state.grants = {str(k): float(v) for k, v in doc["grants"].items()}
            state.hellos = {b64d(str(k)): float(v) for k, v in doc["hellos"].items()}
        except KeyFileError as exc:
            raise ReplayStateError(str(exc)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ReplayStateError(
                f"{path} is not a replay state file the agent can read ({exc}). It lists the "
                "grants and handshakes already used; move it aside to start with an empty "
                "one, and grants issued in the last 10 minutes could then be used once more"
            ) from None
        state.prune(now)
        return state

    def prune(self, now: float) -> None:
        _drop_expired(self.grants, now)
        _drop_expired(self.hellos, now)

    def save(self, now: float) -> None:
        """Durably, before the agent answers the HELLO that changed it."""
        if self.path is None:
            return
        self.prune(now)
        doc = {"version": VERSION, "grants": self.grants,
               "hellos": {b64e(k): v for k, v in self.hellos.items()}}
        try:
            write_private_file(self.path, dumps(doc))
        except OSError as exc:
            raise ReplayStateError(
                f"cannot write {self.path}: {exc.strerror or exc}; no session is started "
                "until the agent can record which grants were used") from None


def _drop_expired(cache: dict[K, float], now: float) -> None:
    for key in [k for k, until in cache.items() if until <= now]:
        del cache[key]


__all__ = ["ReplayState", "ReplayStateError", "replay_state_file"]
