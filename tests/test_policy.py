"""The access policy (authority/policy.py): parsing, validation with line numbers, the pure
evaluation function, and the `tether policy` command."""

from __future__ import annotations

import getpass
import os
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stack import TETHER

from tether.authority.policy import (
    ACTIONS,
    DEFAULT_MAX_DURATION,
    Decision,
    Policy,
    PolicyError,
    Request,
    Statement,
    TimeWindow,
    append_statement,
    evaluate,
    find_problems,
    format_duration,
    parse_duration,
    validate,
)
from tether.commands import policy as policy_cli

MONDAY_10 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)  # a Monday


def policy(text: str) -> Policy:
    return Policy.parse(textwrap.dedent(text))


def req(**kw: Any) -> Request:
    base: dict[str, Any] = {"user": "alice", "agent": "db1", "action": "shell", "now": MONDAY_10}
    base.update(kw)
    return Request(**base)


def decide(p: Policy, **kw: Any) -> Decision:
    return evaluate(p, req(**kw))


OPS = policy("""
    [[statement]]
    id = "ops"
    effect = "allow"
    users = ["alice"]
    agents = ["db*"]
    actions = ["shell", "exec"]
    run_as = ["ubuntu", "postgres"]
""")


# ------------------------------------------------------------------- basic matching


def test_empty_policy_denies_everything() -> None:
    d = evaluate(Policy(), req())
    assert not d.allowed and d.statement is None
    assert d.reason == "no policy statement allows 'alice' to shell on 'db1'"


def test_matching_allow_statement() -> None:
    d = decide(OPS)
    assert d.allowed and d.run_as == "ubuntu" and d.statement == 0 and d.statement_id == "ops"
    assert d.reason == "allowed by statement #1 'ops'" and d.statement_label == "#1 'ops'"
    assert d.max_duration == DEFAULT_MAX_DURATION and d.idle_timeout == 0
    assert d.recording == "optional" and not d.require_reason and d.max_sessions is None


@pytest.mark.parametrize(("kw", "allowed"), [
    ({}, True),
    ({"user": "bob"}, False),
    ({"user": "Alice"}, False),  # case-sensitive
    ({"agent": "web1"}, False),
    ({"agent": "DB1"}, False),
    ({"action": "forward"}, False),
    ({"action": "exec"}, True),
])
def test_user_agent_action_must_all_match(kw: dict[str, Any], allowed: bool) -> None:
    assert decide(OPS, **kw).allowed is allowed


def test_unknown_action_is_denied() -> None:
    d = decide(OPS, action="launch")
    assert not d.allowed and "unknown action 'launch'" in d.reason


def test_star_action_and_user_globs() -> None:
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["ops-*", "carol"]
        agents = ["*"]
        actions = ["*"]
        run_as = ["app"]
    """)
    for action in ACTIONS:
        assert decide(p, user="ops-dave", action=action).allowed
    assert decide(p, user="carol", agent="anything").allowed
    assert not decide(p, user="dave").allowed


@pytest.mark.parametrize(("pattern", "agent", "allowed"), [
    ("db*", "db1", True), ("db*", "db", True), ("db*", "adb1", False),
    ("db?", "db1", True), ("db?", "db12", False),
    ("[ab]*", "app", True), ("[ab]*", "cat", False),
    ("web-prod-*", "web-prod-eu-1", True), ("local", "local", True), ("local", "local2", False),
])
def test_agent_globs(pattern: str, agent: str, allowed: bool) -> None:
    p = Policy([Statement(users=["alice"], agents=[pattern], actions=["shell"], run_as=["u"])])
    assert decide(p, agent=agent).allowed is allowed


# --------------------------------------------------------------------- label selectors

LABELLED = policy("""
    [[statement]]
    effect = "allow"
    users = ["alice"]
    labels = { env = "prod", role = ["db", "cache"] }
    actions = ["shell"]
    run_as = ["ubuntu"]

    [[statement]]
    effect = "allow"
    users = ["bob"]
    labels = { team = "*" }
    actions = ["shell"]
    run_as = ["ubuntu"]

    [[statement]]
    effect = "allow"
    users = ["carol"]
    agents = ["web*"]
    labels = { env = "stag*" }
    actions = ["shell"]
    run_as = ["ubuntu"]
""")


@pytest.mark.parametrize(("user", "agent", "labels", "allowed"), [
    ("alice", "x", {"env": "prod", "role": "db"}, True),
    ("alice", "x", {"env": "prod", "role": "cache", "extra": "y"}, True),
    ("alice", "x", {"env": "prod", "role": "web"}, False),  # list: one of
    ("alice", "x", {"env": "staging", "role": "db"}, False),  # exact
    ("alice", "x", {"env": "prod"}, False),  # every key must match
    ("alice", "x", {}, False),
    ("alice", "x", {"env": "Prod", "role": "db"}, False),  # case-sensitive
    ("bob", "x", {"team": "payments"}, True),  # "*": any value
    ("bob", "x", {"team": ""}, True),
    ("bob", "x", {"env": "prod"}, False),  # ... but the key must exist
    ("carol", "web1", {"env": "staging"}, True),  # agents and labels both
    ("carol", "db1", {"env": "staging"}, False),
    ("carol", "web1", {"env": "prod"}, False),
])
def test_label_selectors(user: str, agent: str, labels: dict[str, str], allowed: bool) -> None:
    assert decide(LABELLED, user=user, agent=agent, agent_labels=labels).allowed is allowed


# ----------------------------------------------------------------------------- groups

GROUPED = policy("""
    [groups]
    ops = ["alice", "bob"]
    dba = ["carol"]

    [[statement]]
    effect = "allow"
    groups = ["ops"]
    agents = ["*"]
    actions = ["shell"]
    run_as = ["ubuntu"]

    [[statement]]
    effect = "allow"
    groups = ["team-*"]
    users = ["erin"]
    agents = ["db*"]
    actions = ["exec"]
    run_as = ["postgres"]
""")


@pytest.mark.parametrize(("user", "groups", "action", "allowed"), [
    ("alice", [], "shell", True),  # policy group
    ("bob", [], "shell", True),
    ("carol", [], "shell", False),  # in another group
    ("dave", [], "shell", False),
    ("dave", ["ops"], "shell", True),  # registry group
    ("dave", ["team-red"], "exec", True),  # group glob
    ("dave", ["team-red"], "shell", False),
    ("erin", [], "exec", True),  # users OR groups
    ("frank", ["OPS"], "shell", False),
])
def test_groups(user: str, groups: list[str], action: str, allowed: bool) -> None:
    assert decide(GROUPED, user=user, groups=groups, action=action).allowed is allowed


def test_groups_apply_to_deny_too() -> None:
    p = policy("""
        [groups]
        contractors = ["mallory"]

        [[statement]]
        effect = "allow"
        users = ["*"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu"]

        [[statement]]
        id = "no-contractors-on-db"
        effect = "deny"
        groups = ["contractors"]
        agents = ["db*"]
        actions = ["*"]
    """)
    assert decide(p, user="mallory", agent="web1").allowed
    assert not decide(p, user="mallory", agent="db1").allowed
    assert not decide(p, user="eve", groups=["contractors"], agent="db1").allowed
    assert decide(p, user="eve", agent="db1").allowed


# --------------------------------------------------------------------------- deny wins


def test_explicit_deny_wins_wherever_it_is() -> None:
    allow = """
        [[statement]]
        id = "all"
        effect = "allow"
        users = ["*"]
        agents = ["*"]
        actions = ["shell", "exec"]
        run_as = ["ubuntu"]
    """
    deny = """
        [[statement]]
        id = "no-prod"
        effect = "deny"
        users = ["alice"]
        labels = { env = "prod" }
        actions = ["shell"]
    """
    for text in (allow + deny, deny + allow):
        p = policy(text)
        d = decide(p, agent_labels={"env": "prod"})
        assert not d.allowed and d.statement_id == "no-prod"
        assert d.statement is not None
        assert d.reason == ("user 'alice' may not shell on 'db1' as 'ubuntu' "
                            f"(denied by statement #{d.statement + 1} 'no-prod')")
        assert decide(p, agent_labels={"env": "dev"}).allowed
        assert decide(p, agent_labels={"env": "prod"}, action="exec").allowed
        assert decide(p, user="bob", agent_labels={"env": "prod"}).allowed


def test_deny_without_id_names_its_index() -> None:
    p = Policy([
        Statement(users=["*"], agents=["*"], actions=["shell"], run_as=["u"]),
        Statement(users=["alice"], agents=["*"], actions=["shell"], effect="deny"),
    ])
    d = decide(p)
    assert not d.allowed and d.statement == 1 and d.reason.endswith("(denied by statement #2)")


def test_deny_run_as_glob_covers_root_and_deny_uses_the_default_run_as() -> None:
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["root", "ubuntu"]

        [[statement]]
        id = "no-root-on-prod"
        effect = "deny"
        users = ["*"]
        labels = { env = "prod" }
        actions = ["*"]
        run_as = ["r*"]
    """)
    prod = {"env": "prod"}
    assert not decide(p, agent_labels=prod).allowed  # default run_as is root: denied
    assert not decide(p, agent_labels=prod, run_as="root").allowed
    assert decide(p, agent_labels=prod, run_as="ubuntu").allowed
    assert decide(p, agent_labels={"env": "dev"}).run_as == "root"


def test_deny_commands_are_a_deny_list() -> None:
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell", "exec"]
        run_as = ["ubuntu"]

        [[statement]]
        effect = "deny"
        users = ["*"]
        agents = ["*"]
        actions = ["exec"]
        commands = ["rm *", "shutdown*"]
    """)
    assert decide(p, action="exec", command=["ls", "-l"]).allowed
    assert not decide(p, action="exec", command=["rm", "-rf", "/"]).allowed
    assert not decide(p, action="exec", command=["shutdown", "-h", "now"]).allowed
    assert decide(p, action="shell").allowed  # the deny is about exec commands only


def test_deny_time_window_bites_only_inside_it() -> None:
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu"]

        [[statement]]
        id = "change-freeze"
        effect = "deny"
        users = ["*"]
        agents = ["*"]
        actions = ["*"]
        time_window = { days = ["sat-sun"] }
    """)
    assert decide(p).allowed
    saturday = datetime(2024, 5, 11, 10, 0, tzinfo=UTC)
    d = decide(p, now=saturday)
    assert not d.allowed and d.statement_id == "change-freeze"


# ----------------------------------------------------------------------- time windows

WINDOWED = policy("""
    [[statement]]
    id = "office"
    effect = "allow"
    users = ["alice"]
    agents = ["*"]
    actions = ["shell"]
    run_as = ["ubuntu"]
    time_window = { days = ["mon-fri"], hours = "08:00-18:00", tz = "UTC" }
""")


def at(day: int, hour: int, minute: int = 0, tz: Any = UTC) -> datetime:
    """Day 6 = Monday 2024-05-06."""
    return datetime(2024, 5, day, hour, minute, tzinfo=tz)


@pytest.mark.parametrize(("when", "allowed"), [
    (at(6, 10), True),
    (at(6, 8, 0), True),  # start inclusive
    (at(6, 7, 59), False),
    (at(6, 17, 59), True),
    (at(6, 18, 0), False),  # end exclusive
    (at(10, 12), True),  # Friday
    (at(11, 12), False),  # Saturday
    (at(12, 12), False),  # Sunday
])
def test_time_window_inside_and_outside(when: datetime, allowed: bool) -> None:
    d = decide(WINDOWED, now=when)
    assert d.allowed is allowed
    if not allowed:
        assert d.reason == ("outside the allowed time window (mon-fri 08:00-18:00 UTC) "
                            "(statement #1 'office')")


def window(**kw: Any) -> Policy:
    return Policy([Statement(users=["alice"], agents=["*"], actions=["shell"], run_as=["u"],
                             time_window=TimeWindow(**kw))])


@pytest.mark.parametrize(("when", "allowed"), [
    (at(6, 23), True),  # Monday night
    (at(7, 5, 59), True),  # ... into Tuesday morning
    (at(7, 6, 0), False),
    (at(7, 12), False),
    (at(7, 22, 0), True),
    (at(6, 21, 59), False),
    (at(11, 2), True),  # Saturday 02:00 belongs to Friday night
    (at(11, 23), False),  # Saturday night does not start a window
    (at(6, 2), False),  # Monday 02:00 belongs to Sunday night
])
def test_overnight_hours_belong_to_the_day_they_start(when: datetime, allowed: bool) -> None:
    assert decide(window(days=("mon-fri",), hours=("22:00-06:00",)), now=when).allowed is allowed


@pytest.mark.parametrize(("days", "weekday_dates", "blocked"), [
    (("fri-mon",), [10, 11, 12, 13], [7, 8, 9]),  # wraps over the week end
    (("mon", "wed", "fri"), [6, 8, 10], [7, 9, 11, 12]),
    (("sat-sun",), [11, 12], [6, 10]),
    (("MON-tue",), [6, 7], [8]),
])
def test_day_lists_and_ranges(days: tuple[str, ...], weekday_dates: list[int], blocked: list[int]) -> None:
    p = window(days=days)
    for day in weekday_dates:
        assert decide(p, now=at(day, 12)).allowed, day
    for day in blocked:
        assert not decide(p, now=at(day, 12)).allowed, day


def test_hours_only_multiple_ranges_and_24_00() -> None:
    p = window(hours=("08:00-12:00", "13:00-24:00"))
    assert decide(p, now=at(11, 9)).allowed  # any day
    assert not decide(p, now=at(11, 12, 30)).allowed
    assert decide(p, now=at(11, 23, 59)).allowed
    assert not decide(p, now=at(11, 0, 30)).allowed


def test_time_zones() -> None:
    from zoneinfo import ZoneInfo

    tokyo = window(days=("mon-fri",), hours=("09:00-17:00",), tz="Asia/Tokyo")
    assert decide(tokyo, now=datetime(2024, 5, 6, 1, 0, tzinfo=UTC)).allowed  # 10:00 Mon Tokyo
    assert not decide(tokyo, now=datetime(2024, 5, 6, 10, 0, tzinfo=UTC)).allowed  # 19:00
    # Friday 23:30 UTC is already Saturday in Tokyo
    assert not decide(tokyo, now=datetime(2024, 5, 10, 23, 30, tzinfo=UTC)).allowed
    # Sunday 23:30 UTC is Monday 08:30 in Tokyo: still too early
    assert not decide(tokyo, now=datetime(2024, 5, 12, 23, 30, tzinfo=UTC)).allowed
    ny = window(hours=("09:00-17:00",), tz="America/New_York")
    # 13:30 UTC is 09:30 in New York in summer (EDT) but 08:30 in winter (EST)
    assert decide(ny, now=datetime(2024, 7, 1, 13, 30, tzinfo=UTC)).allowed
    assert not decide(ny, now=datetime(2024, 1, 8, 13, 30, tzinfo=UTC)).allowed
    # the request's own offset does not matter, only the instant
    paris = ZoneInfo("Europe/Paris")
    assert decide(ny, now=datetime(2024, 7, 1, 15, 30, tzinfo=paris)).allowed


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(OPS, req(now=datetime(2024, 5, 6, 10, 0)))


# ----------------------------------------------------------------------------- run-as

RUN_AS = policy("""
    [[statement]]
    effect = "allow"
    users = ["alice"]
    agents = ["web*"]
    actions = ["shell", "exec", "watch"]
    run_as = ["app-*", "*", "ubuntu"]

    [[statement]]
    effect = "allow"
    users = ["alice"]
    agents = ["db1"]
    actions = ["shell"]
    run_as = ["postgres", "root"]
""")


@pytest.mark.parametrize(("agent", "run_as", "allowed"), [
    ("web1", "ubuntu", True),
    ("web1", "app-api", True),
    ("web1", "anyone", True),  # "*"
    ("web1", "root", False),  # a glob never grants root
    ("db1", "root", True),  # listed literally
    ("db1", "postgres", True),
    ("db1", "ubuntu", False),
])
def test_run_as(agent: str, run_as: str, allowed: bool) -> None:
    d = decide(RUN_AS, agent=agent, run_as=run_as)
    assert d.allowed is allowed
    assert d.run_as == (run_as if allowed else "")
    if not allowed:
        assert f"user 'alice' may not run as {run_as!r} on {agent!r}" in d.reason


@pytest.mark.parametrize("pattern", ["*", "r*", "ro?t", "[r]oot", "*t", "root*"])
def test_no_glob_matches_root(pattern: str) -> None:
    p = Policy([Statement(users=["alice"], agents=["*"], actions=["shell"], run_as=[pattern])])
    assert not decide(p, run_as="root").allowed
    assert decide(p, run_as="rootless").allowed is (pattern in ("*", "r*", "root*"))


def test_default_run_as_is_the_first_literal_entry() -> None:
    assert decide(RUN_AS, agent="web1").run_as == "ubuntu"
    assert decide(RUN_AS, agent="db1").run_as == "postgres"


def test_no_literal_run_as_means_no_default() -> None:
    p = Policy([Statement(users=["alice"], agents=["*"], actions=["shell", "audit"], run_as=["app-*"])])
    d = decide(p)
    assert not d.allowed and "no run-as user was asked for" in d.reason
    assert decide(p, run_as="app-x").allowed
    audit = decide(p, action="audit")  # no process, no run-as needed
    assert audit.allowed and audit.run_as == ""


def test_empty_run_as_allows_no_process() -> None:
    p = Policy([Statement(users=["alice"], agents=["*"], actions=["shell", "audit"])])
    assert not decide(p).allowed
    assert not decide(p, run_as="alice").allowed
    assert decide(p, action="audit").allowed


# ---------------------------------------------------------- reasons, sessions, commands


@pytest.mark.parametrize(("reason", "allowed"), [
    (None, False), ("", False), ("   ", False), ("INC-42 disk full", True),
])
def test_required_reason(reason: str | None, allowed: bool) -> None:
    p = Policy([Statement(users=["alice"], agents=["*"], actions=["shell"], run_as=["u"],
                          require_reason=True)])
    d = decide(p, reason=reason)
    assert d.allowed is allowed
    if allowed:
        assert d.require_reason
    else:
        assert d.reason == "a reason is required (statement #1)"


@pytest.mark.parametrize(("active", "action", "allowed"), [
    (0, "shell", True), (1, "shell", True), (2, "shell", False), (5, "exec", False),
    (2, "audit", True),  # not a session
])
def test_max_sessions(active: int, action: str, allowed: bool) -> None:
    p = Policy([Statement(users=["alice"], agents=["*"], actions=["shell", "exec", "audit"],
                          run_as=["u"], max_sessions=2)])
    d = decide(p, active_sessions=active, action=action)
    assert d.allowed is allowed
    if allowed:
        assert d.max_sessions == 2
    else:
        assert d.reason == f"user 'alice' already has {active} of 2 sessions (statement #1)"


COMMANDS = policy("""
    [[statement]]
    id = "restart-only"
    effect = "allow"
    users = ["alice"]
    agents = ["db1"]
    actions = ["exec"]
    run_as = ["ubuntu"]
    commands = ["systemctl status *", "systemctl restart nginx", "echo 'a b'"]
""")


@pytest.mark.parametrize(("command", "allowed"), [
    (["systemctl", "status", "nginx"], True),
    (["systemctl", "status", "a", "b"], True),  # "*" spans arguments
    (["systemctl", "restart", "nginx"], True),
    (["systemctl", "restart", "nginx", "--now"], False),
    (["systemctl", "stop", "nginx"], False),
    (["echo", "a b"], True),  # matched against the shell-quoted line
    (["echo", "a", "b"], False),
    (["rm", "-rf", "/"], False),
])
def test_exec_commands_allow_list(command: list[str], allowed: bool) -> None:
    d = decide(COMMANDS, action="exec", command=command)
    assert d.allowed is allowed
    if command == ["rm", "-rf", "/"]:
        assert d.reason == "command 'rm -rf /' is not allowed on 'db1' (statement #1 'restart-only')"


def test_exec_without_command_under_an_allow_list_is_denied() -> None:
    commands: list[list[str] | None] = [None, []]
    for command in commands:
        d = decide(COMMANDS, action="exec", command=command)
        assert not d.allowed and "no command was given" in d.reason


# ------------------------------------------------------ first allow wins, failure reason


def test_first_matching_allow_supplies_the_limits() -> None:
    p = policy("""
        [[statement]]
        id = "short"
        effect = "allow"
        users = ["alice"]
        agents = ["db*"]
        actions = ["shell"]
        run_as = ["ubuntu"]
        max_duration = "30m"
        idle_timeout = 300
        recording = "required"

        [[statement]]
        id = "long"
        effect = "allow"
        users = ["*"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu", "root"]
        max_duration = "8h"
        idle_timeout = "1h"
    """)
    d = decide(p)
    assert (d.statement_id, d.max_duration, d.idle_timeout, d.recording) == ("short", 1800, 300, "required")
    # the first does not allow root, so the second decides with its own limits
    d = decide(p, run_as="root")
    assert (d.statement_id, d.max_duration, d.idle_timeout, d.recording) == ("long", 28800, 3600, "optional")
    assert decide(p, user="bob").statement_id == "long"


def test_a_failed_condition_lets_a_later_statement_decide() -> None:
    p = policy("""
        [[statement]]
        id = "office"
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu"]
        time_window = { hours = "08:00-18:00" }

        [[statement]]
        id = "on-call"
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu"]
        require_reason = true
        max_duration = "1h"
    """)
    assert decide(p).statement_id == "office"
    night = at(6, 23)
    assert decide(p, now=night, reason="paged").statement_id == "on-call"
    d = decide(p, now=night)
    assert not d.allowed
    # both failed; the one that got furthest (past its time window) explains
    assert d.reason == "a reason is required (statement #2 'on-call')" and d.statement == 1


def test_the_furthest_failure_is_reported() -> None:
    p = Policy([
        Statement(users=["alice"], agents=["*"], actions=["shell"], run_as=["ubuntu"], id="a"),
        Statement(users=["alice"], agents=["*"], actions=["shell"], run_as=["root"], id="b",
                  require_reason=True),
    ])
    d = decide(p, run_as="root")
    assert d.reason == "a reason is required (statement #2 'b')"
    d = decide(p, run_as="daemon")
    assert d.reason == "user 'alice' may not run as 'daemon' on 'db1' (statement #1 'a')"


def test_decide_shorthand() -> None:
    assert OPS.decide(req()).allowed


# -------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    (90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("8h", 28800), ("1h30m", 5400),
    ("1d", 86400), ("2d3h4m5s", 2 * 86400 + 3 * 3600 + 4 * 60 + 5), ("0", 0), (" 8H ", 28800),
])
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["8x", "", "h", "1.5h", "-5", -5, True, 1.5, "30m8h", None, [1]])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**8))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# ---------------------------------------------------------------- validation, lines

BAD = """\
# a comment on line 1
[groups]
ops = ["alice", 3]

[[statement]]
id = "one"
effect = "alow"
users = ["alice"]
agents = ["db*"]
actions = ["shel", "exec"]
run-as = ["x"]
max_duration = "8x"
time_window = { days = ["mon-fry"], hours = "08:00-18:00" }

[[statement]]
id = "one"
effect = "allow"
users = ["bob"]
agents = ["*"]
actions = ["exec"]
run_as = ["u"]
idle_timeout = -1
recording = "sometimes"
max_sessions = 0
require_reason = "yes"

[statement.time_window]
hours = "25:00-01:00"

[[statement]]
effect = "deny"
users = []
agents = ["*"]
actions = ["shell"]
max_duration = "1h"

[[statement]]
users = ["x"]
actions = ["audit"]
commands = ["ls"]
labels = { env = 3 }
colour = "blue"
"""


def test_validation_reports_every_problem_with_its_line() -> None:
    problems = find_problems(BAD)
    got = [(p.line, p.message.split(" (")[0].split(":")[0]) for p in problems]
    expected = [
        (3, "group 'ops' must be a list of user names, e.g. ops = [\"alice\", \"bob\"]"),
        (5, "statement #1 allows shell/exec but lists no run_as users; add e.g. run_as = [\"ubuntu\"]"),
        (7, "effect must be \"allow\" or \"deny\", not 'alow'"),
        (10, "unknown action 'shel'"),
        (11, "unknown key 'run-as' in statement #1"),
        (12, "max_duration '8x' is not a duration; use seconds or e.g. \"90s\", \"30m\", \"8h\", \"1h30m\", \"1d\""),
        (13, "bad day 'mon-fry'"),
        (16, "duplicate id 'one'"),
        (22, "idle_timeout must not be negative"),
        (23, "recording must be \"required\", \"optional\" or \"off\", not 'sometimes'"),
        (24, "max_sessions must be a whole number of at least 1"),
        (25, "require_reason must be true or false"),
        (27, "bad hours '25"),
        (32, "users is empty, so statement #3 can never match; remove it or add names"),
        (35, "max_duration has no meaning on a deny statement; it is a limit of an allow"),
        (37, "statement #4 has no effect; add effect = \"allow\" or effect = \"deny\""),
        (40, "commands only apply to exec"),
        (41, "label 'env' must be a string or a non-empty list of strings"),
        (42, "unknown key 'colour' in statement #4"),
    ]
    assert got == expected, "\n".join(str(p) for p in problems)
    assert validate(BAD) == [str(p) for p in problems]
    assert validate(BAD)[0].startswith("line 3: ")


def test_policy_load_raises_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(BAD)
    with pytest.raises(PolicyError) as exc:
        Policy.load(path)
    assert len(exc.value.problems) == 19
    assert str(exc.value).splitlines()[0] == (
        f"{path}:3: group 'ops' must be a list of user names, e.g. ops = [\"alice\", \"bob\"]")
    assert f"{path}:42: unknown key 'colour'" in str(exc.value)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("[[statement]]\neffect = \"allow\"\nusers = [\"a\"\n", 3, "TOML syntax: Unclosed array"),
    ("\n\n[[statement]]\nx = 1 1\n", 4, "TOML syntax"),
    ("[[statement]]\nid = 'a'\nid = 'b'\n", 3, "TOML syntax"),
    ("version = 2\n", 1, "unknown top-level key 'version'"),
    ("[[statment]]\neffect = 'allow'\n", 1, "unknown top-level key 'statment' (did you mean 'statement'?)"),
    ("groups = 3\n", 1, "groups must be a table"),
    ("statement = 3\n", 1, "statements must be [[statement]] tables"),
])
def test_syntax_and_shape_errors(text: str, line: int, fragment: str) -> None:
    problems = find_problems(text)
    assert problems and problems[0].line == line and fragment in problems[0].message, problems


def base_statement(**extra: str) -> str:
    lines = ['[[statement]]', 'effect = "allow"', 'users = ["alice"]', 'agents = ["*"]',
             'actions = ["shell"]', 'run_as = ["u"]'] + [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("time_window", '{ days = ["mon-fri"], tz = "Mars/Olympus" }', "unknown time zone 'Mars/Olympus'"),
    ("time_window", '{ hours = "08:00-08:00" }', "the window is empty"),
    ("time_window", '{ hours = "8am-6pm" }', "bad hours '8am-6pm'"),
    ("time_window", '{ hours = "08:00-24:30" }', "out of range"),
    ("time_window", '{ tz = "UTC" }', "time_window needs days, hours or both"),
    ("time_window", '{ day = ["mon"] }', "unknown key 'day' in time_window (did you mean 'days'?)"),
    ("time_window", '"weekdays"', "time_window must be a table"),
    ("time_window", '{ days = [1] }', "time_window.days must be a list"),
    ("max_duration", "0", "max_duration must be positive"),
    ("max_duration", "true", "max_duration must be seconds"),
    ("labels", "{}", "labels must be a non-empty table"),
    ("commands", '["ls"]', "commands only apply to exec"),
    ("actions", "[]", "actions must be a non-empty list"),
    ("actions", '"shell"', "actions must be a non-empty list"),
    ("effect", '"permit"', "effect must be"),
    ("id", '""', "id must be a non-empty string"),
    ("agents", '["db1", 2]', "agents must be a list of names"),
])
def test_semantic_errors(key: str, value: str, fragment: str) -> None:
    text = base_statement()
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join(lines) + f"\n\n# comment\n{key} = {value}\n"
    problems = find_problems(text)
    assert len(problems) == 1, problems
    line = text.splitlines().index(f"{key} = {value}") + 1
    assert problems[0].line == line and fragment in problems[0].message, problems


def test_shell_without_run_as_is_an_error_but_audit_is_not() -> None:
    no_run_as = '[[statement]]\neffect = "allow"\nusers = ["a"]\nagents = ["*"]\nactions = ["%s"]\n'
    assert "lists no run_as users" in validate(no_run_as % "shell")[0]
    assert validate(no_run_as % "audit") == []


def test_valid_policies_have_no_problems() -> None:
    assert validate("") == []
    assert validate(base_statement()) == []
    assert validate(Policy(OPS.statements, {"ops": ["alice"]}).dumps()) == []


def test_missing_file_is_the_empty_policy(tmp_path: Path) -> None:
    assert Policy.load(tmp_path / "nope.toml") == Policy()


def test_group_writable_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(base_statement())
    path.chmod(0o664)
    with pytest.raises(PolicyError, match="writable by group or others"):
        Policy.load(path)
    path.chmod(0o644)
    assert len(Policy.load(path).statements) == 1


def test_inline_statement_array_is_accepted() -> None:
    p = policy("""
        statement = [
          { effect = "allow", users = ["a"], agents = ["*"], actions = ["shell"], run_as = ["u"] },
        ]
    """)
    assert decide(p, user="a").allowed
    problems = find_problems('statement = [\n { effect = "deny", users = ["b"], agents = ["*"], actions = ["shel"] },\n]\n')
    assert problems[0].line == 1 and "unknown action 'shel'" in problems[0].message


# ------------------------------------------------------------------ writing the file

FULL = Policy(
    groups={"ops": ["alice", "bob"], "on call": ["carol"]},
    statements=[
        Statement(id="no-root-prod", effect="deny", users=["*"], labels={"env": ["prod"]},
                  actions=["*"], run_as=["root"]),
        Statement(id="ops", users=["alice"], groups=["ops", "on call"], agents=["db*", "web?"],
                  labels={"env": ["prod", "staging"], "team name": ["*"]},
                  actions=["shell", "exec"], run_as=["ubuntu", "app-*"],
                  time_window=TimeWindow(("mon-fri", "sun"), ("08:00-18:00", "22:00-02:00"), "Europe/Paris"),
                  max_duration=5400, idle_timeout=900, require_reason=True, recording="required",
                  max_sessions=3),
        Statement(users=["deploy"], agents=["*"], actions=["exec"], run_as=["app"],
                  commands=["systemctl restart *", 'echo "quoted" \\ back'],
                  time_window=TimeWindow(days=("sat",))),
    ],
)


def test_dumps_round_trips_and_save_is_private(tmp_path: Path) -> None:
    text = FULL.dumps()
    assert 'max_duration = "1h30m"' in text and 'idle_timeout = "15m"' in text
    assert '"team name" = "*"' in text and "# tether access policy" in text
    assert Policy.parse(text) == FULL
    path = tmp_path / "authority" / "policy.toml"
    FULL.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Policy.load(path) == FULL
    assert path.read_text() == text  # deterministic


def test_save_never_writes_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    with pytest.raises(PolicyError, match="unknown action 'sudo'"):
        Policy([Statement(users=["a"], agents=["*"], actions=["sudo"], run_as=["u"])]).save(path)
    assert not path.exists()


def test_append_statement_keeps_comments_and_makes_ids_unique(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    st1 = Statement(id="carol-allow", users=["carol"], agents=["local"], actions=["shell"], run_as=["carol"])
    append_statement(path, st1, comment="first")
    text = path.read_text()
    assert text.startswith("# tether access policy") and "# first\n[[statement]]" in text
    path.write_text(text + "\n# my own note, keep me\n")
    path.chmod(0o600)
    written = append_statement(path, st1)
    assert written.id == "carol-allow-2"
    assert append_statement(path, st1).id == "carol-allow-3"
    final = path.read_text()
    assert "# my own note, keep me" in final
    loaded = Policy.load(path)
    assert [s.id for s in loaded.statements] == ["carol-allow", "carol-allow-2", "carol-allow-3"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_append_statement_refuses_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[[statement]]\nbogus = 1\n")
    with pytest.raises(PolicyError):
        append_statement(path, Statement(users=["a"], agents=["*"], actions=["shell"], run_as=["u"]))
    assert path.read_text() == "[[statement]]\nbogus = 1\n"


def test_legacy_json_policy(tmp_path: Path) -> None:
    legacy = tmp_path / "policy.json"
    legacy.write_text('{"statements": [{"users": ["me"], "agents": ["local"], "actions": ["shell", '
                      '"exec"], "run_as": ["me"], "max_duration": 600, "idle_timeout": 0}]}')
    p = Policy.from_legacy_json(legacy)
    assert p.statements == [Statement(users=["me"], agents=["local"], actions=["shell", "exec"],
                                      run_as=["me"], max_duration=600)]
    legacy.write_text("[]")
    with pytest.raises(PolicyError):
        Policy.from_legacy_json(legacy)


def test_local_setup_writes_a_working_policy(tmp_path: Path) -> None:
    from tether.authority.provision import ensure_local_setup
    from tether.edge.home import Home

    home = Home(tmp_path / "home")
    legacy = home.root / "authority" / "policy.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"statements": [{"users": ["old"], "agents": ["*"], "actions": ["shell"], '
                      '"run_as": ["old"]}]}')
    setup = ensure_local_setup(home, "127.0.0.1", 1883)
    assert home.policy.name == "policy.toml"
    p = Policy.load(home.policy)
    assert decide(p, user="old", agent="x").allowed  # migrated
    d = decide(p, user=setup.user.name, agent="local")
    assert d.allowed and d.run_as == getpass.getuser() and d.statement_id == f"{setup.user.name}-local"
    assert decide(p, user=setup.user.name, agent="local", action="exec").allowed
    assert not decide(p, user=setup.user.name, agent="other").allowed


# ---------------------------------------------------------------- property: deny wins

NAMES = st.sampled_from(["alice", "bob", "*", "a*"])
AGENTS = st.sampled_from(["db1", "web1", "*", "db*"])
RUN_AS_NAMES = st.sampled_from(["ubuntu", "root", "*", "r*", "app"])


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    effect = draw(st.sampled_from(["allow", "deny"]))
    s = Statement(
        effect=effect,
        users=draw(st.lists(NAMES, min_size=1, max_size=2)),
        agents=draw(st.lists(AGENTS, min_size=1, max_size=2)),
        actions=draw(st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=3)),
        run_as=draw(st.lists(RUN_AS_NAMES, max_size=3)),
        labels=draw(st.sampled_from([{}, {"env": ["prod"]}, {"env": ["*"]}])),
    )
    if effect == "allow":
        s.require_reason = draw(st.booleans())
        s.max_sessions = draw(st.sampled_from([None, 1, 2]))
    return s


@st.composite
def requests(draw: st.DrawFn) -> Request:
    return Request(
        user=draw(st.sampled_from(["alice", "bob", "carol"])),
        agent=draw(st.sampled_from(["db1", "web1", "x"])),
        action=draw(st.sampled_from(ACTIONS)),
        run_as=draw(st.sampled_from([None, "ubuntu", "root", "app", "other"])),
        agent_labels=draw(st.sampled_from([{}, {"env": "prod"}, {"env": "dev"}])),
        reason=draw(st.sampled_from([None, "why"])),
        active_sessions=draw(st.integers(0, 3)),
        now=MONDAY_10 + timedelta(minutes=draw(st.integers(0, 10080))),
    )


@settings(max_examples=300)
@given(st.lists(statements(), max_size=6), requests(), st.data())
def test_property_a_matching_deny_always_wins(stmts: list[Statement], request: Request,
                                              data: st.DataObject) -> None:
    deny = Statement(effect="deny", users=[request.user], agents=[request.agent],
                     actions=[request.action])
    position = data.draw(st.integers(0, len(stmts)))
    p = Policy([*stmts[:position], deny, *stmts[position:]])
    d = evaluate(p, request)
    assert not d.allowed
    assert d.statement is not None and p.statements[d.statement].effect == "deny"


@settings(max_examples=300)
@given(st.lists(statements(), max_size=6), requests())
def test_property_allow_comes_from_an_allow_and_root_only_when_listed(
        stmts: list[Statement], request: Request) -> None:
    p = Policy(stmts)
    d = evaluate(p, request)
    assert evaluate(p, request) == d  # pure: same input, same output
    if d.allowed:
        assert d.statement is not None
        st_ = p.statements[d.statement]
        assert st_.effect == "allow"
        if d.run_as == "root":
            assert "root" in st_.run_as
        if request.run_as is not None:
            assert d.run_as == request.run_as
        if st_.require_reason:
            assert request.reason
        if st_.max_sessions is not None and request.action in ("shell", "exec", "forward", "watch"):
            assert request.active_sessions < st_.max_sessions
    if not any("root" in s.run_as for s in stmts if s.effect == "allow"):
        assert not (d.allowed and d.run_as == "root")


TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(str.strip)


@st.composite
def writable_statements(draw: st.DrawFn) -> Statement:
    effect = draw(st.sampled_from(["allow", "deny"]))
    exec_only = draw(st.booleans())
    s = Statement(
        id=draw(st.none() | TEXT), effect=effect,
        users=draw(st.lists(TEXT, min_size=1, max_size=3)),
        groups=draw(st.lists(TEXT, max_size=2)),
        agents=draw(st.lists(TEXT, min_size=1, max_size=3)),
        labels=draw(st.dictionaries(TEXT, st.lists(st.text(max_size=5), min_size=1, max_size=3),
                                    max_size=2)),
        actions=["exec"] if exec_only else draw(st.lists(st.sampled_from(ACTIONS), min_size=1)),
        run_as=draw(st.lists(TEXT, min_size=1, max_size=3)),
        commands=draw(st.lists(TEXT, min_size=1, max_size=3)) if exec_only else None,
    )
    if effect == "allow":
        s.max_duration = draw(st.integers(1, 10**6))
        s.idle_timeout = draw(st.integers(0, 10**5))
        s.require_reason = draw(st.booleans())
        s.recording = draw(st.sampled_from(["required", "optional"]))
        s.max_sessions = draw(st.none() | st.integers(1, 50))
    return s


@settings(max_examples=200)
@given(st.lists(writable_statements(), max_size=4, unique_by=lambda s: s.id or object()),
       st.dictionaries(TEXT, st.lists(TEXT, max_size=3), max_size=3))
def test_property_dumps_parses_back_to_the_same_policy(stmts: list[Statement],
                                                       groups: dict[str, list[str]]) -> None:
    p = Policy(stmts, groups)
    assert Policy.parse(p.dumps()) == p


# --------------------------------------------------------------------------------- CLI


def test_cli_actions_match_the_engine() -> None:
    assert policy_cli.ACTIONS == ACTIONS


CLI_POLICY = """\
[groups]
ops = ["alice"]

# never root on production
[[statement]]
id = "no-root-prod"
effect = "deny"
users = ["*"]
labels = { env = "prod" }
actions = ["*"]
run_as = ["root"]

[[statement]]
id = "ops"
effect = "allow"
groups = ["ops", "dba"]
agents = ["db*"]
actions = ["shell", "exec"]
run_as = ["ubuntu", "root"]
max_duration = "8h"
idle_timeout = "15m"
recording = "required"

[[statement]]
id = "restart"
effect = "allow"
users = ["bob"]
agents = ["*"]
actions = ["exec"]
run_as = ["app"]
commands = ["systemctl restart *"]
require_reason = true
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "authority").mkdir(parents=True)
    (root / "authority" / "policy.toml").write_text(CLI_POLICY)
    return root


def tether(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TETHER_HOME=str(home))
    return subprocess.run([TETHER, *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=home.parent)


def test_cli_check_allow(home: Path) -> None:
    r = tether(home, "policy", "check", "alice", "db1", "--action", "shell")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "ALLOW alice shell on db1 as ubuntu"
    assert "allowed by statement #2 'ops'" in lines[1]
    assert lines[2].endswith(f"#2 'ops' at {home / 'authority' / 'policy.toml'}:13")
    assert "max_duration 8h, idle_timeout 15m, recording required" in lines[3]
    assert "no registry" in r.stderr


def test_cli_check_deny(home: Path) -> None:
    r = tether(home, "policy", "check", "alice", "db1", "--as", "root", "--labels", "env=prod")
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("DENY  alice shell on db1 as root\n")
    assert "(denied by statement #1 'no-root-prod')" in r.stdout and ":5" in r.stdout
    r = tether(home, "policy", "check", "mallory", "db1")
    assert r.returncode == 1
    assert "no policy statement allows 'mallory' to shell on 'db1'" in r.stdout
    assert "none applies (default deny)" in r.stdout
    # as root without the prod label: allowed
    assert tether(home, "policy", "check", "alice", "db1", "--as", "root").returncode == 0
    # --groups adds groups
    assert tether(home, "policy", "check", "dave", "db1", "--groups", "dba").returncode == 0


def test_cli_check_commands_and_reason(home: Path) -> None:
    r = tether(home, "policy", "check", "bob", "web1", "--command", "systemctl restart nginx")
    assert r.returncode == 1 and "a reason is required" in r.stdout
    r = tether(home, "policy", "check", "bob", "web1", "--command", "systemctl restart nginx",
               "--reason", "INC-1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ALLOW bob exec on web1 as app: systemctl restart nginx")
    r = tether(home, "policy", "check", "bob", "web1", "--command", "rm -rf /", "--reason", "x")
    assert r.returncode == 1
    assert "command 'rm -rf /' is not allowed on 'web1' (statement #3 'restart')" in r.stdout


def test_cli_check_reads_groups_and_labels_from_the_registry(home: Path) -> None:
    from tether.authority.registry import Principal, Registry

    reg = Registry(home / "authority" / "registry.json")
    reg.add(Principal("dave", "user", "k", "h", groups=["ops"]))
    reg.add(Principal("db7", "agent", "k", "h", labels={"env": "prod"}))
    reg.save()
    r = tether(home, "policy", "check", "dave", "db7")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    r = tether(home, "policy", "check", "dave", "db7", "--as", "root")
    assert r.returncode == 1 and "no-root-prod" in r.stdout  # labels from the registry
    r = tether(home, "policy", "check", "dave", "db7", "--as", "root", "--labels", "env=dev")
    assert r.returncode == 0  # --labels replaces them
    r = tether(home, "policy", "check", "dave", "db8")
    assert "'db8' is not a registered agent" in r.stderr


def test_cli_check_at_a_time(home: Path) -> None:
    path = home / "authority" / "policy.toml"
    path.write_text(base_statement(time_window='{ days = ["mon-fri"], hours = "09:00-17:00", tz = "Europe/Paris" }'))
    r = tether(home, "policy", "check", "alice", "db1", "--at", "2024-05-06T08:30+00:00")
    assert r.returncode == 0, r.stdout + r.stderr
    r = tether(home, "policy", "check", "alice", "db1", "--at", "2024-05-06T16:30+00:00")
    assert r.returncode == 1
    assert "outside the allowed time window (mon-fri 09:00-17:00 Europe/Paris)" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--labels", "envprod"], "label 'envprod' is not KEY=VALUE"),
    (["--at", "yesterday"], "not an ISO 8601 time"),
    (["--action", "shell", "--command", "ls"], "--command only applies to --action exec"),
    (["--command", "'unclosed"], "--command:"),
    (["--file", "/nonexistent/policy.toml"], "no policy file at /nonexistent/policy.toml"),
])
def test_cli_check_user_errors(home: Path, args: list[str], message: str) -> None:
    r = tether(home, "policy", "check", "alice", "db1", *args)
    assert r.returncode == 255 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_check_with_a_broken_policy(home: Path) -> None:
    (home / "authority" / "policy.toml").write_text(BAD)
    r = tether(home, "policy", "check", "alice", "db1")
    assert r.returncode == 255 and "Traceback" not in r.stderr
    assert f"{home / 'authority' / 'policy.toml'}:7: effect must be" in r.stderr


def test_cli_validate(home: Path, tmp_path: Path) -> None:
    r = tether(home, "policy", "validate")
    assert (r.returncode, r.stdout) == (0, "ok: 3 statements, 1 group\n"), r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    r = tether(home, "policy", "validate", str(bad))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert len(lines) == 19
    assert lines[0].startswith(f"{bad}:3: group 'ops'")
    assert lines[-1] == f"{bad}:42: unknown key 'colour' in statement #4"
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[[statement]]\neffect = allow\n")
    r = tether(home, "policy", "validate", str(syntax))
    assert r.returncode == 1 and r.stdout.startswith(f"{syntax}:2: TOML syntax")
    r = tether(home, "policy", "validate", str(tmp_path / "missing.toml"))
    assert r.returncode == 255 and "no policy file at" in r.stderr
    bad.write_text(base_statement())
    bad.chmod(0o666)
    r = tether(home, "policy", "validate", str(bad))
    assert r.returncode == 1 and "writable by group or others" in r.stdout


def test_cli_show(home: Path, tmp_path: Path) -> None:
    r = tether(home, "policy", "show")
    assert r.returncode == 0
    assert r.stdout == f"# {home / 'authority' / 'policy.toml'}\n{CLI_POLICY}"
    r = tether(tmp_path / "empty-home", "policy", "show")
    assert r.returncode == 0 and "everything is denied" in r.stdout


def test_cli_help() -> None:
    r = subprocess.run([TETHER, "policy", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "check" in r.stdout and "validate" in r.stdout
    r = subprocess.run([TETHER, "policy", "check", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "examples:" in r.stdout and "--as OSUSER" in r.stdout
    r = subprocess.run([TETHER, "--help"], capture_output=True, text=True, timeout=60)
    assert "policy" in r.stdout


def test_cli_user_add_appends_to_the_policy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert tether_init(home).returncode == 0
    path = home / "authority" / "policy.toml"
    path.write_text(path.read_text() + "\n# hand-written note\n")
    path.chmod(0o600)
    r = tether(home, "authority", "user", "add", "carol", "--allow", "web*", "--run-as", "deploy",
               "--out", str(tmp_path / "carol.json"))
    assert r.returncode == 0, r.stderr
    assert "# hand-written note" in path.read_text()
    r = tether(home, "policy", "check", "carol", "web1", "--labels", "")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as deploy" in r.stdout and "'carol-allow'" in r.stdout


def tether_init(home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return tether(home, "init", "--broker", "127.0.0.1:1883")


def test_the_examples_in_docs_policy_md_are_valid() -> None:
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S)
              if "[[statement]]" in b or "[groups]" in b]
    assert len(blocks) >= 6
    for block in blocks:
        assert validate(block) == [], block
    full = Policy.parse(blocks[0])
    prod_db = {"env": "prod", "role": "db"}
    assert not evaluate(full, req(run_as="root", agent_labels=prod_db)).allowed
    d = evaluate(full, req(user="carol", agent_labels=prod_db))
    assert d.allowed and d.run_as == "postgres" and d.statement_id == "dba"


# --------------------------------------------------------- run-as choices (consoles)


def test_access_lists_the_literal_run_as_users_allowed_now_default_first() -> None:
    from tether.authority.policy import access
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["db*"]
        actions = ["shell"]
        run_as = ["ubuntu", "postgres", "root", "svc-*"]

        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["db*"]
        actions = ["shell"]
        run_as = ["deploy"]
        require_reason = true

        [[statement]]
        effect = "deny"
        users = ["alice"]
        agents = ["db1"]
        actions = ["shell"]
        run_as = ["postgres"]
    """)
    a = access(p, req(run_as="ignored", reason="ignored"))
    assert a.allowed and a.default == "ubuntu" and a.other
    assert [(c.name, c.reason_required) for c in a.run_as] == [
        ("ubuntu", False), ("root", False), ("deploy", True)]  # postgres is denied on db1
    assert [c.name for c in access(p, req(agent="db2")).run_as] == ["ubuntu", "postgres", "root", "deploy"]
    none = access(p, req(agent="web1"))
    assert not none.allowed and not none.run_as and "no policy statement allows" in none.why_not
    assert none.to_json() == {"allowed": False, "why": none.why_not, "default": "", "run_as": [], "other": False}


def test_access_outside_a_time_window_offers_nothing() -> None:
    from tether.authority.policy import access
    p = policy("""
        [[statement]]
        effect = "allow"
        users = ["alice"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["ubuntu"]
        time_window = { days = ["sat-sun"] }
    """)
    a = access(p, req())
    assert not a.allowed and "time window" in a.why_not
