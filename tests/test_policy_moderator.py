"""The policy's half of watch and join (issue 11 item 5): the `join` action, `watch`/`join`
statements choosing sessions by their run-as user (root only when listed), the
`require_moderator` key (allow statements that allow shell; parse errors with lines; carried
by the deciding statement's decision; written back by dumps) and `deciding_allow`, which
finds the statement whose limits a session has, deny statements aside."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from tether.authority.policy import (
    ACTIONS,
    SESSION_ACTIONS,
    Policy,
    Request,
    deciding_allow,
    evaluate,
    find_problems,
    validate,
)

NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)  # a Monday


def _decide(policy: Policy, action: str, run_as: str | None, user: str = "bob",
            agent: str = "web1") -> tuple[bool, str]:
    d = evaluate(policy, Request(user=user, agent=agent, action=action, run_as=run_as, now=NOW))
    return d.allowed, d.reason


def test_join_is_an_action_and_a_session_action() -> None:
    assert ACTIONS.index("join") == ACTIONS.index("watch") + 1
    assert "join" in SESSION_ACTIONS and "watch" in SESSION_ACTIONS
    assert validate('[[statement]]\neffect = "allow"\nusers = ["bob"]\nagents = ["*"]\n'
                    'actions = ["join"]\nrun_as = ["app"]\n') == []
    assert validate('[[statement]]\neffect = "allow"\nusers = ["bob"]\nagents = ["*"]\n'
                    'actions = ["jion"]\nrun_as = ["app"]\n') == [
        "line 5: unknown action 'jion' (did you mean 'join'?); expected shell, exec, forward, "
        "watch, join, audit, admin or \"*\""]


WATCHERS = Policy.parse(textwrap.dedent("""\
    [[statement]]
    id = "no-root-joins"
    effect = "deny"
    users = ["*"]
    agents = ["*"]
    actions = ["join"]
    run_as = ["root"]

    [[statement]]
    id = "watch-web"
    effect = "allow"
    users = ["bob"]
    agents = ["web*"]
    actions = ["watch", "join"]
    run_as = ["app-*", "root"]

    [[statement]]
    id = "watch-any"
    effect = "allow"
    users = ["carol"]
    agents = ["*"]
    actions = ["watch"]
    run_as = ["*"]
    """))


@pytest.mark.parametrize(("user", "action", "run_as", "agent", "allowed", "reason"), [
    ("bob", "watch", "app-1", "web1", True, "allowed by statement #2 'watch-web'"),
    ("bob", "join", "app-1", "web1", True, "allowed by statement #2 'watch-web'"),
    ("bob", "watch", "root", "web1", True, "allowed by statement #2 'watch-web'"),
    ("bob", "join", "root", "web1", False,
     "user 'bob' may not join on 'web1' as 'root' (denied by statement #1 'no-root-joins')"),
    ("bob", "watch", "postgres", "web1", False,
     "user 'bob' may not watch sessions running as 'postgres' on 'web1' (statement #2 'watch-web')"),
    ("bob", "watch", "app-1", "db1", False, "no policy statement allows 'bob' to watch on 'db1'"),
    ("carol", "watch", "postgres", "db1", True, "allowed by statement #3 'watch-any'"),
    # "*" never matches root, for watching as for running
    ("carol", "watch", "root", "db1", False,
     "user 'carol' may not watch sessions running as 'root' on 'db1' (statement #3 'watch-any')"),
    ("carol", "join", "postgres", "db1", False, "no policy statement allows 'carol' to join on 'db1'"),
])
def test_watch_and_join_choose_sessions_by_their_run_as_user(
        user: str, action: str, run_as: str, agent: str, allowed: bool, reason: str) -> None:
    assert _decide(WATCHERS, action, run_as, user, agent) == (allowed, reason)


def _shell(extra: str = "", sid: str = "contractors", actions: str = '["shell"]') -> str:
    return textwrap.dedent(f"""\
        [[statement]]
        id = "{sid}"
        effect = "allow"
        users = ["ann"]
        agents = ["*"]
        actions = {actions}
        run_as = ["atlas"]
        """) + extra


def test_require_moderator_is_carried_by_the_deciding_statement_and_written_back() -> None:
    text = (_shell('require_moderator = ["ops-leads", "sec-*"]\n',
                   actions='["shell", "exec"]') + "\n" + _shell(sid="later"))
    policy = Policy.parse(text)
    assert policy.statements[0].require_moderator == ["ops-leads", "sec-*"]
    assert policy.statements[1].require_moderator == []
    d = evaluate(policy, Request(user="ann", agent="db1", action="shell", now=NOW))
    assert d.allowed and d.statement_id == "contractors"
    assert d.require_moderator == ["ops-leads", "sec-*"]
    assert Policy.parse(policy.dumps()) == policy
    assert 'require_moderator = ["ops-leads", "sec-*"]' in policy.dumps()
    # a statement without it decides nothing about moderators
    assert evaluate(Policy.parse(_shell()), Request(user="ann", agent="db1", action="shell",
                                                    now=NOW)).require_moderator == []


@pytest.mark.parametrize(("extra", "actions", "problem"), [
    ('require_moderator = "ops-leads"\n', '["shell"]',
     'line 8: require_moderator must be a list of group names or globs, e.g. '
     'require_moderator = ["ops-leads"]'),
    ('require_moderator = ["ops", " "]\n', '["shell"]',
     'line 8: require_moderator must be a list of group names or globs, e.g. '
     'require_moderator = ["ops-leads"]'),
    ("require_moderator = []\n", '["shell"]',
     "line 8: require_moderator is empty, so it requires no one; remove it or name the "
     "moderators' groups"),
    ('require_moderator = ["ops-leads"]\n', '["exec"]',
     "line 8: require_moderator only applies to shell sessions, and statement #1 does not allow "
     'shell; add "shell" to its actions or move it to the statement that allows the shells'),
    ('require_moderator = ["ops-leads"]\nrequire_modrator = true\n', '["shell"]',
     "line 9: unknown key 'require_modrator' in statement #1 (did you mean 'require_moderator'?)"),
])
def test_require_moderator_problems_have_lines(extra: str, actions: str, problem: str) -> None:
    assert validate(_shell(extra, actions=actions)) == [problem]


def test_require_moderator_is_allowed_with_every_action_and_refused_on_a_deny() -> None:
    assert Policy.parse(_shell('require_moderator = ["x"]\n', actions='["*"]')
                        ).statements[0].require_moderator == ["x"]
    deny = _shell('require_moderator = ["x"]\n').replace('effect = "allow"', 'effect = "deny"')
    assert validate(deny) == [
        "line 8: require_moderator has no meaning on a deny statement; it is a limit of an allow"]


def test_watch_or_join_without_run_as_is_an_error_once() -> None:
    text = ('[[statement]]\neffect = "allow"\nusers = ["sec"]\nagents = ["*"]\n'
            'actions = ["audit", "watch"]\n')
    assert validate(text) == [
        'line 1: statement #1 allows watch/join but lists no run_as users, so it lets no one watch '
        'or join any session; add the run-as users whose sessions may be watched, e.g. '
        'run_as = ["*"] (every session but root\'s)']
    # shell and watch without run_as: the one shell/exec message, not two
    both = [p.message for p in find_problems(text.replace('"audit", "watch"', '"shell", "join"'))]
    assert both == ['statement #1 allows shell/exec but lists no run_as users; add e.g. '
                    'run_as = ["ubuntu"]']
    # audit alone needs none; a deny with watch needs none (it narrows by run_as if given)
    assert validate(text.replace('"audit", "watch"', '"audit"')) == []
    assert validate(text.replace('"allow"', '"deny"')) == []


def test_deciding_allow_ignores_denies_and_follows_conditions() -> None:
    text = textwrap.dedent("""\
        [[statement]]
        id = "freeze"
        effect = "deny"
        users = ["*"]
        agents = ["*"]
        actions = ["*"]

        [[statement]]
        id = "office"
        effect = "allow"
        users = ["ann"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["atlas"]
        time_window = { days = ["mon-fri"], hours = "08:00-18:00" }
        require_reason = true
        require_moderator = ["leads"]

        [[statement]]
        id = "evening"
        effect = "allow"
        users = ["ann"]
        agents = ["*"]
        actions = ["shell"]
        run_as = ["atlas"]
        require_moderator = ["night-leads"]
        """)
    policy = Policy.parse(text)

    def statement(now: datetime, reason: str | None = "(given)", run_as: str = "atlas") -> str | None:
        d = deciding_allow(policy, Request(user="ann", agent="db1", action="shell", run_as=run_as,
                                           reason=reason, now=now))
        return None if d is None else d.statement_id

    assert not evaluate(policy, Request(user="ann", agent="db1", action="shell", now=NOW)).allowed
    assert statement(NOW) == "office"
    assert statement(NOW.replace(hour=20)) == "evening"
    assert statement(NOW, reason=None) == "evening"  # the reason is a condition of "office"
    assert statement(NOW, run_as="root") is None
    with pytest.raises(ValueError, match="timezone-aware"):
        deciding_allow(policy, Request(user="ann", agent="db1", action="shell",
                                       now=datetime(2024, 5, 6, 10, 0)))
