"""The policy's `detach_timeout` (issue 11 item 4, reattach): parsed like idle_timeout,
allow statements only, 600 s by default, carried by the deciding statement's decision and
written back out by `Policy.dumps`."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from tether.authority.policy import (
    DEFAULT_DETACH_TIMEOUT,
    Policy,
    PolicyError,
    Request,
    evaluate,
    find_problems,
)

NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


def _allow(extra: str = "", sid: str = "ops", agents: str = '["*"]') -> str:
    return textwrap.dedent(f"""\
        [[statement]]
        id = "{sid}"
        effect = "allow"
        users = ["alice"]
        agents = {agents}
        actions = ["shell", "exec"]
        run_as = ["u"]
        """) + extra


def _decide(policy: Policy, agent: str = "web1", action: str = "shell") -> int:
    d = evaluate(policy, Request(user="alice", agent=agent, action=action, now=NOW,
                                 command=["true"] if action == "exec" else None))
    assert d.allowed, d.reason
    return d.detach_timeout


def test_the_default_is_ten_minutes() -> None:
    assert DEFAULT_DETACH_TIMEOUT == 600
    policy = Policy.parse(_allow())
    assert policy.statements[0].detach_timeout == 600
    assert _decide(policy) == 600 and _decide(policy, action="exec") == 600


@pytest.mark.parametrize(("value", "seconds"), [("0", 0), ("90", 90), ('"30m"', 1800),
                                                ('"1h30m"', 5400), ('"0s"', 0), ('"2d"', 172800)])
def test_seconds_or_a_duration_string(value: str, seconds: int) -> None:
    policy = Policy.parse(_allow(f"detach_timeout = {value}\n"))
    assert policy.statements[0].detach_timeout == seconds
    assert _decide(policy) == seconds


def test_the_deciding_statement_supplies_it() -> None:
    text = (_allow('detach_timeout = "1m"\n', sid="db", agents='["db*"]') + "\n"
            + _allow("detach_timeout = 0\n", sid="rest"))
    policy = Policy.parse(text)
    assert _decide(policy, agent="db1") == 60
    assert _decide(policy, agent="web1") == 0


@pytest.mark.parametrize(("value", "message"), [
    ("-5", "detach_timeout must not be negative"),
    ("1.5", "detach_timeout must be seconds (an integer)"),
    ("true", "detach_timeout must be seconds (an integer)"),
    ('"soon"', "detach_timeout 'soon' is not a duration"),
    ('"-1m"', "detach_timeout '-1m' is not a duration"),
    ("[600]", "detach_timeout must be seconds (an integer)"),
])
def test_bad_values_are_errors_on_their_line(value: str, message: str) -> None:
    text = _allow(f"detach_timeout = {value}\n")
    line = text.splitlines().index(f"detach_timeout = {value}") + 1
    problems = find_problems(text)
    assert [p.line for p in problems] == [line], problems
    assert problems[0].message.startswith(message), problems
    with pytest.raises(PolicyError) as caught:
        Policy.parse(text, "policy.toml")
    assert f"policy.toml:{line}: {message}" in str(caught.value)


def test_it_has_no_meaning_on_a_deny_statement() -> None:
    text = textwrap.dedent("""\
        [[statement]]
        effect = "deny"
        users = ["*"]
        agents = ["*"]
        actions = ["shell"]
        detach_timeout = "5m"
        """)
    problems = find_problems(text)
    assert [(p.line, p.message) for p in problems] == [
        (6, "detach_timeout has no meaning on a deny statement; it is a limit of an allow")]


def test_a_misspelling_is_caught() -> None:
    problems = find_problems(_allow("detach_timout = 60\n"))
    assert len(problems) == 1 and "did you mean 'detach_timeout'?" in problems[0].message


@pytest.mark.parametrize("seconds", [0, 59, 600, 5400])
def test_dumps_keeps_it(seconds: int) -> None:
    policy = Policy.parse(_allow(f"detach_timeout = {seconds}\n"))
    text = policy.dumps()
    assert ("detach_timeout" in text) is (seconds != 600), text  # the default is left out
    again = Policy.parse(text)
    assert again.statements[0].detach_timeout == seconds
    assert again == policy
