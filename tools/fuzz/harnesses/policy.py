"""The policy TOML (authority/policy.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tether.authority.policy import Policy, PolicyError, Request, Statement, TimeWindow
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed

_WHEN = datetime.fromtimestamp(fx.NOW, UTC)
_REQUESTS = (
    Request(user="alice", agent="db1", action="shell", now=_WHEN, groups=("ops",), agent_labels={"env": "prod"}),
    Request(user="bob", agent="web1", action="exec", now=_WHEN, run_as="root", command=("rm", "-rf", "/"),
            reason="INC-1", active_sessions=2),
)


def _policy(data: bytes) -> None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return  # Policy.load refuses it with a PolicyError before parsing
    policy = Policy.parse(text)
    for request in _REQUESTS:
        policy.decide(request)
    again = Policy.parse(policy.dumps())
    assert again == policy, "a policy does not survive being saved and loaded again"


def _policy_seeds() -> list[bytes]:
    docs = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
    blocks = docs.read_text().split("```toml\n")[1:] if docs.exists() else []
    written = Policy([
        Statement(users=["alice"], agents=["db*"], actions=["exec"], run_as=["ubuntu"], id="ops",
                  labels={"env": ["prod", "stag*"]}, commands=["systemctl status *"], require_reason=True,
                  time_window=TimeWindow(days=("mon-fri",), hours=("22:00-06:00",), tz="Europe/Paris"),
                  max_duration=5400, idle_timeout=600, recording="required", max_sessions=2),
        Statement(effect="deny", groups=["contractors"], agents=["*"], actions=["*"]),
    ], groups={"ops": ["alice", "bob"]})
    return [seed(0, written.dumps().encode())] + [seed(0, b.split("```")[0].encode()) for b in blocks]


POLICY = Harness("policy", "authority/policy.py Policy.parse (the policy TOML), decide, dumps",
                 (PolicyError,), (_policy,), _policy_seeds)


HARNESSES = {h.name: h for h in (POLICY,)}
