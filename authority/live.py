"""The live-session table: what each agent last said about its live sessions (sans-IO).

Agents report their whole list (a `live` request, authority/requests.py checks it) 1 s
after any change and every 60 s. The authority keeps only the newest list per agent, in
memory: it answers a user's `sessions` question and finds the session an attach, watch
or join grant names. A list not refreshed for `TTL` seconds is dropped (the agent is gone or cut off),
and one from an older boot of the agent than the newest seen is ignored (a process of an
earlier start still running, or a report delayed past its successor's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TTL = 180.0  # three missed periodic reports
MAX_LISTED = 100  # sessions in one answer to `sessions`


@dataclass(frozen=True)
class LiveSession:
    sid: str
    user: str
    mode: str
    run_as: str
    command: str | None  # a display string (exec); never used in a grant
    started: float
    attached: bool
    detached_at: float | None
    detach_timeout: int
    awaiting_moderator: bool = False  # a moderated shell that waits for a moderator to watch

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> LiveSession:
        """From an entry authority.requests has checked."""
        return cls(sid=entry["sid"], user=entry["user"], mode=entry["mode"], run_as=entry["run_as"],
                   command=entry["command"], started=float(entry["started"]),
                   attached=entry["attached"],
                   detached_at=None if entry["detached_at"] is None else float(entry["detached_at"]),
                   detach_timeout=entry["detach_timeout"],
                   awaiting_moderator=entry.get("awaiting_moderator", False))

    def to_json(self) -> dict[str, Any]:
        return {"sid": self.sid, "user": self.user, "mode": self.mode, "run_as": self.run_as,
                "command": self.command, "started": self.started, "attached": self.attached,
                "detached_at": self.detached_at, "detach_timeout": self.detach_timeout,
                **({"awaiting_moderator": True} if self.awaiting_moderator else {})}


@dataclass
class AgentReport:
    boot: float
    received: float  # by the authority's clock
    sessions: dict[str, LiveSession]  # by sid


class LiveTable:
    """One report per agent. Memory: at most one list (256 sessions, bounded by the request
    checks) per agent that has reported, and agents are registered principals."""

    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._agents: dict[str, AgentReport] = {}
        # The newest boot seen per agent, kept after its list is dropped so a late report
        # of an older boot is still recognised.
        self._boots: dict[str, float] = {}

    def report(self, agent: str, boot: float, sessions: list[LiveSession], now: float) -> bool:
        """Replace `agent`'s list. False (and nothing changes) if `boot` is older than the
        newest boot seen from it."""
        if boot < self._boots.get(agent, boot):
            return False
        self._boots[agent] = boot
        self._agents[agent] = AgentReport(boot, now, {s.sid: s for s in sessions})
        return True

    def forget(self, agent: str) -> None:
        """Drop an agent's list (e.g. it was revoked or removed)."""
        self._agents.pop(agent, None)

    def _report(self, agent: str, now: float) -> AgentReport | None:
        report = self._agents.get(agent)
        if report is not None and now - report.received > self.ttl:
            del self._agents[agent]
            return None
        return report

    def find(self, agent: str, sid: str, now: float) -> LiveSession | None:
        report = self._report(agent, now)
        return report.sessions.get(sid) if report is not None else None

    def sessions_of(self, agent: str, now: float) -> list[LiveSession]:
        report = self._report(agent, now)
        return list(report.sessions.values()) if report is not None else []

    def agents(self, now: float) -> list[str]:
        """The agents whose lists are current."""
        return [a for a in list(self._agents) if self._report(a, now) is not None]

    def on_agents(self, agents: Iterable[str], now: float) -> list[tuple[str, LiveSession]]:
        """Every live session on `agents` as (agent, session), newest first."""
        found = [(name, s) for name in agents for s in self.sessions_of(name, now)]
        found.sort(key=lambda pair: (-pair[1].started, pair[0], pair[1].sid))
        return found

    def of_user(self, user: str, agents: Iterable[str], now: float) -> list[tuple[str, LiveSession]]:
        """`user`'s live sessions on `agents` as (agent, session), newest first."""
        return [(name, s) for name, s in self.on_agents(agents, now) if s.user == user]
