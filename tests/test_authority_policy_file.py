"""The policy file as the authority reads it: its mode and size are checked on the
descriptor it is read from; a deny on commands bites an exec that names none."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tether.authority.policy import (
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    Request,
    UnsafePolicyFile,
    evaluate,
)

ALLOW = '[[statement]]\neffect = "allow"\nusers = ["alice"]\nagents = ["*"]\nactions = ["exec"]\nrun_as = ["u"]\n'
DENY_RM = '[[statement]]\neffect = "deny"\nusers = ["*"]\nagents = ["*"]\nactions = ["exec"]\ncommands = ["rm *"]\n'


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_writable_by_others_is_unsafe_and_says_how_to_fix(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "policy.toml", ALLOW, mode)
    with pytest.raises(UnsafePolicyFile) as caught:
        Policy.load(path)
    assert f"chmod 600 {path}" in str(caught.value)
    path.chmod(0o640)  # readable by the group is not a risk to the policy
    assert len(Policy.load(path).statements) == 1


def test_size_limit_exactly_and_one_past(tmp_path: Path) -> None:
    padding = MAX_POLICY_BYTES - len(ALLOW)
    path = _write(tmp_path / "policy.toml", ALLOW + "#" * (padding - 1) + "\n")
    assert path.stat().st_size == MAX_POLICY_BYTES
    assert len(Policy.load(path).statements) == 1
    _write(path, ALLOW + "#" * padding + "\n")
    with pytest.raises(PolicyError, match="larger than 1024 KiB"):
        Policy.load(path)


def _exec(policy: Policy, command: list[str] | None) -> bool:
    return evaluate(policy, Request(user="alice", agent="web1", action="exec", run_as="u",
                                    command=command, now=datetime.now(UTC))).allowed


def test_deny_commands_bites_an_exec_that_names_no_command() -> None:
    policy = Policy.parse(ALLOW + DENY_RM)
    assert _exec(policy, ["ls"])
    assert not _exec(policy, ["rm", "-rf", "/"])
    # The old rule let this through, and the agent then ran whatever the HELLO named.
    assert not _exec(policy, None)
    assert not _exec(policy, [])
