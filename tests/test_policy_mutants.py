"""Policy evaluation at its edges (found by mutation testing, tools/mutation/run.py):
overnight windows across the week's end, which failing statement explains a refusal, what
the console is offered, and a command-limited deny. Pure; no CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest
from test_policy import MONDAY_10, policy, req

from tether.authority.policy import Policy, Statement, TimeWindow, access, evaluate


def at(day: int, hour: int) -> datetime:
    """2024-05-06 is a Monday (day 0)."""
    return datetime(2024, 5, 6 + day, hour, 0, tzinfo=UTC)


@pytest.mark.parametrize(("days", "when", "inside"), [
    (("fri",), at(5, 1), True),  # Saturday 01:00 belongs to Friday's night
    (("sat",), at(5, 1), False),  # ... not to Saturday's, which starts at 22:00 that day
    (("sun",), at(0, 1), True),  # Monday 01:00 belongs to Sunday's night: across the week's end
    (("mon",), at(0, 1), False),
    (("sat",), at(5, 23), True),
])
def test_an_overnight_window_belongs_to_the_day_it_starts(days: tuple[str, ...], when: datetime,
                                                          inside: bool) -> None:
    assert TimeWindow(days=days, hours=("22:00-02:00",)).contains(when) is inside


# Statements that fail one request (exec of ["ls"] as ubuntu, Monday 10:00, no reason, one
# session open) at each depth: 1 run-as, 2 command, 3 time window, 4 reason, 5 sessions.
BASE: dict[str, Any] = {"users": ["alice"], "agents": ["*"], "actions": ["exec"]}
FAILS = {
    1: Statement(**BASE, run_as=["nobody"], id="d1"),
    2: Statement(**BASE, run_as=["ubuntu"], commands=["rm *"], id="d2"),
    3: Statement(**BASE, run_as=["ubuntu"], time_window=TimeWindow(days=("sat",)), id="d3"),
    4: Statement(**BASE, run_as=["ubuntu"], require_reason=True, id="d4"),
    5: Statement(**BASE, run_as=["ubuntu"], max_sessions=1, id="d5"),
}
REQUEST: dict[str, Any] = {"action": "exec", "command": ["ls"], "run_as": "ubuntu",
                           "active_sessions": 1}


@pytest.mark.parametrize("low", [1, 2, 3, 4])
def test_the_statement_that_got_further_explains_the_refusal(low: int) -> None:
    high = low + 1
    for order in ([FAILS[low], FAILS[high]], [FAILS[high], FAILS[low]]):
        d = evaluate(Policy(order), req(**REQUEST))
        assert not d.allowed and d.statement_id == f"d{high}", (low, d.reason)


def test_without_a_run_as_a_statement_with_no_literal_default_got_least_far() -> None:
    p = Policy([Statement(**BASE, run_as=["svc-*"], id="glob"),
                Statement(**BASE, run_as=["ubuntu"], commands=["rm *"], id="cmd")])
    d = evaluate(p, req(action="exec", command=["ls"]))
    assert d.statement_id == "cmd" and "command 'ls' is not allowed" in d.reason


def test_a_deny_limited_to_commands_does_not_bite_a_shell() -> None:
    """The parser refuses commands on a statement that is not exec-only; a Policy built in
    code can still hold one, and evaluation must not widen it to every action."""
    both = {**BASE, "actions": ["shell", "exec"]}
    p = Policy([Statement(**both, run_as=["ubuntu"]),
                Statement(**both, effect="deny", commands=["rm *"])])
    assert evaluate(p, req()).allowed
    assert not evaluate(p, req(action="exec", command=["rm", "-rf", "/"])).allowed


@pytest.mark.parametrize("where", ["policy", "registry"])
def test_access_counts_groups_from_the_policy_and_from_the_registry(where: str) -> None:
    p = policy(("""
        [groups]
        ops = ["alice"]
        """ if where == "policy" else "") + """
        [[statement]]
        effect = "allow"
        groups = ["ops"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu", "postgres"]
    """)
    a = access(p, req(groups=["ops"] if where == "registry" else []))
    assert a.allowed and [c.name for c in a.run_as] == ["ubuntu", "postgres"]


def test_access_puts_the_default_first_even_when_a_statement_before_names_another() -> None:
    p = Policy([
        Statement(**{**BASE, "actions": ["shell"]}, run_as=["night"],
                  time_window=TimeWindow(days=("sat",))),
        Statement(**{**BASE, "actions": ["shell"]}, run_as=["day", "night"]),
    ])
    a = access(p, req())
    assert a.default == "day"
    assert [c.name for c in a.run_as] == ["day", "night"]


def test_access_is_offered_when_only_a_named_or_a_glob_run_as_is_allowed() -> None:
    named = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["a", "b"]

        [[statement]]
        effect = "deny"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["a"]
    """)
    a = access(named, req())
    assert a.default == "" and [c.name for c in a.run_as] == ["b"] and a.allowed
    glob = Policy([Statement(**{**BASE, "actions": ["shell"]}, run_as=["svc-*"])])
    g = access(glob, req())
    assert g.other and not g.run_as and g.default == "" and g.allowed
    assert MONDAY_10.weekday() == 0


def test_an_exec_without_a_command_fails_at_the_command_depth() -> None:
    only_ls = Statement(**BASE, run_as=["ubuntu"], commands=["ls"], id="d2")
    no_command = {**REQUEST, "command": None}
    for low, high in ((FAILS[1], only_ls), (only_ls, FAILS[3])):
        for order in ([low, high], [high, low]):
            d = evaluate(Policy(order), req(**no_command))
            assert d.statement_id == high.id, d.reason
    d = evaluate(Policy([only_ls]), req(**no_command))
    assert d.reason.startswith("only listed commands may run on 'db1', and no command was given")


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize("now", [datetime(2024, 5, 6, 10), datetime(2024, 5, 6, 10, tzinfo=_NoOffset())])
def test_a_time_without_an_offset_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(Policy(), req(now=now))


def test_a_deny_names_the_run_as_it_refused() -> None:
    p = Policy([Statement(**{**BASE, "actions": ["shell"]}, run_as=["ubuntu"]),
                Statement(**{**BASE, "actions": ["shell"]}, effect="deny", run_as=["ubuntu"])])
    d = evaluate(p, req())
    assert not d.allowed and d.run_as == "ubuntu" and d.statement == 1


def test_a_statement_naming_no_agents_and_no_labels_applies_to_nothing() -> None:
    p = Policy([Statement(users=["alice"], actions=["shell"], run_as=["ubuntu"])])
    assert not evaluate(p, req()).allowed
