"""A minimal allow-list policy: which users may open which sessions on which agents.

Statements are tried in order; the first that matches allows. Nothing matching denies.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.encoding import dumps, loads

DEFAULT_MAX_DURATION = 12 * 3600


class PolicyError(Exception):
    pass


@dataclass
class Statement:
    users: list[str]
    agents: list[str]
    actions: list[str]
    run_as: list[str]
    max_duration: int = DEFAULT_MAX_DURATION
    idle_timeout: int = 0

    def matches(self, user: str, agent: str, action: str) -> bool:
        return (
            any(fnmatch.fnmatchcase(user, u) for u in self.users)
            and any(fnmatch.fnmatchcase(agent, a) for a in self.agents)
            and action in self.actions
        )


@dataclass
class Decision:
    allowed: bool
    reason: str
    run_as: str = ""
    statement: int | None = None
    max_duration: int = DEFAULT_MAX_DURATION
    idle_timeout: int = 0


@dataclass
class Policy:
    statements: list[Statement] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            doc = loads(path.read_bytes())
            return cls([Statement(**s) for s in doc.get("statements", [])])
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"{path}: {exc}") from exc

    def save(self, path: Path) -> None:
        from tether.keys import write_private_file

        write_private_file(path, dumps({"statements": [s.__dict__ for s in self.statements]}))

    def evaluate(self, user: str, agent: str, action: str, run_as: str | None) -> Decision:
        matched = False
        for i, st in enumerate(self.statements):
            if not st.matches(user, agent, action):
                continue
            matched = True
            if run_as is None and st.run_as:
                run_as = st.run_as[0]
            if run_as is not None and run_as in st.run_as:
                return Decision(True, f"allowed by statement {i + 1}", run_as, i,
                                st.max_duration, st.idle_timeout)
        if matched:
            return Decision(False, f"user {user!r} may not run as {run_as!r} on {agent!r}")
        return Decision(False, f"no policy statement allows {user!r} to {action} on {agent!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"statements": [s.__dict__ for s in self.statements]}
