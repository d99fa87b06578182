"""Where tether keeps its state: $TETHER_HOME, default ~/.local/state/tether."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("TETHER_HOME")
    if env:
        return Path(env).expanduser()
    return Path("~/.local/state/tether").expanduser()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def default(cls) -> Home:
        return cls(default_home())

    @property
    def authority_identity(self) -> Path:
        return self.root / "authority" / "identity.json"

    @property
    def registry(self) -> Path:
        return self.root / "authority" / "registry.json"

    @property
    def policy(self) -> Path:
        return self.root / "authority" / "policy.toml"

    @property
    def revocations(self) -> Path:
        return self.root / "authority" / "revocations.json"

    @property
    def activations(self) -> Path:
        return self.root / "authority" / "activations.json"

    @property
    def pending_enrolments(self) -> Path:
        return self.root / "authority" / "pending.json"

    @property
    def broker_files(self) -> Path:
        return self.root / "broker"

    @property
    def user_identity(self) -> Path:
        """The identity `tether shell/run/ls` use unless told otherwise."""
        return self.root / "user.json"

    def agent_identity(self, name: str) -> Path:
        return self.root / "agents" / f"{name}.json"

    def identity_file(self, name: str) -> Path:
        return self.root / "identities" / f"{name}.json"

    @property
    def recordings(self) -> Path:
        """The recorder's store: index.db (SQLite) and logs/{sid}.log."""
        return self.root / "recordings"

    def recorder_identity(self, name: str = "recorder") -> Path:
        return self.root / "recorders" / f"{name}.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir.mkdir(exist_ok=True, mode=0o700)
