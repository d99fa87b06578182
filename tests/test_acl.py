"""tether.acl: the rule table, the acl_file renderer and the Mosquitto-semantics interpreter."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.acl import (
    ROLES,
    AclError,
    Action,
    Rule,
    filter_covers,
    parse_acl,
    permits,
    render_mosquitto_acl,
    role_rules,
    rules_for,
    universal_rules,
    valid_filter,
)

P = "tether/v1"
USERS = {
    "web1": "agent",
    "web2": "agent",
    "alice": "user",
    "bob": "user",
    "auth": "authority",
    "rec": "recorder",
    "root": "admin",
    "act-1": "enrol",
}
ACL = parse_acl(render_mosquitto_acl(USERS))

PUB, SUB, RECV = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE


# -- the rule table -----------------------------------------------------------------------


def test_universal_rules() -> None:
    assert universal_rules() == (
        Rule("read", f"{P}/a/+/presence/#"),
        Rule("write", f"{P}/authz/req/%u"),
        Rule("read", f"{P}/authz/rep/%u"),
        Rule("read", f"{P}/authz/bulletin"),
    )


def test_role_rules_table() -> None:
    assert role_rules("agent") == (Rule("readwrite", f"{P}/a/%u/#"),)
    assert role_rules("user")[:2] == (
        Rule("write", f"{P}/a/+/hs/%u"),
        Rule("readwrite", f"{P}/a/+/s/%u/#"),
    )
    assert set(role_rules("user")[2:]) == {
        Rule("deny", f"{P}/a/+/s/%u/+/rec"),
        Rule("deny", f"{P}/a/+/s/%u/+/rack"),
        Rule("write", f"{P}/rec/+/q/%u"),  # audit queries (docs/protocol.md §13)
        Rule("read", f"{P}/rec/+/r/%u"),
    }
    assert role_rules("authority") == (
        Rule("read", f"{P}/authz/req/+"),
        Rule("write", f"{P}/authz/rep/+"),
        Rule("write", f"{P}/authz/bulletin"),
        Rule("read", f"{P}/enrol/req/+"),
        Rule("write", f"{P}/enrol/rep/+"),
    )
    assert role_rules("enrol") == (
        Rule("write", f"{P}/enrol/req/%u"),
        Rule("read", f"{P}/enrol/rep/%u"),
    )
    assert role_rules("recorder") == (
        Rule("read", f"{P}/a/+/s/+/+/rec"),
        Rule("write", f"{P}/a/+/s/+/+/rack"),
        Rule("read", f"{P}/rec/%u/q/+"),
        Rule("write", f"{P}/rec/%u/r/+"),
    )
    assert role_rules("admin") == (Rule("readwrite", "#"),)


def test_rules_for_substitutes_name_and_prefix() -> None:
    rules = rules_for("web1", "agent", prefix="acme/t")
    assert Rule("readwrite", "acme/t/a/web1/#") in rules
    assert Rule("write", "acme/t/authz/req/web1") in rules
    assert all("%u" not in r.topic for r in rules)


@pytest.mark.parametrize(
    "name", ["a+b", "a#", "a/b", "", "-x", ".x", "all", "a b", "é", "a%u", "x" * 65]
)
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(AclError):
        render_mosquitto_acl({name: "user"})
    with pytest.raises(AclError):
        rules_for(name, "user")


@pytest.mark.parametrize("prefix", ["", "/x", "x/", "a/+/b", "a/#", "$SYS", "a//b", "a b", "%u"])
def test_bad_prefixes_refused(prefix: str) -> None:
    with pytest.raises(AclError):
        render_mosquitto_acl({"alice": "user"}, prefix)


def test_unknown_role_refused() -> None:
    with pytest.raises(AclError, match="unknown role"):
        render_mosquitto_acl({"alice": "superuser"})


def test_render_layout() -> None:
    text = render_mosquitto_acl({"bob": "user", "alice": "user", "web1": "agent"})
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    patterns = [line for line in lines if line.startswith("pattern ")]
    assert patterns == [f"pattern write {P}/authz/req/%u", f"pattern read {P}/authz/rep/%u"]
    users = [line for line in lines if line.startswith("user ")]
    assert users == ["user alice", "user bob", "user web1"]  # sorted, deterministic
    # Role rules are per user with the name substituted, never patterns.
    assert f"topic readwrite {P}/a/web1/#" in lines
    assert f"topic readwrite {P}/a/+/s/alice/#" in lines
    assert not any("%u" in line for line in lines if line.startswith("topic"))
    # Every patternless universal rule is in every user section.
    assert lines.count(f"topic read {P}/a/+/presence/#") == 3
    assert text == render_mosquitto_acl({"web1": "agent", "alice": "user", "bob": "user"})


# -- the interpreter on the rendered file -------------------------------------------------

CASES = [
    # agent web1
    ("web1", f"{P}/a/web1/presence", PUB, True),
    ("web1", f"{P}/a/web2/presence", PUB, False),
    ("web1", f"{P}/a/web2/presence", RECV, True),
    ("web1", f"{P}/a/web1/hs/alice", RECV, True),
    ("web1", f"{P}/a/web1/s/alice/s1/a2c", PUB, True),
    ("web1", f"{P}/a/web1/s/alice/s1/c2a", RECV, True),
    ("web1", f"{P}/a/web1/s/alice/s1/rec", PUB, True),
    ("web1", f"{P}/a/web1/s/alice/s1/rack", RECV, True),
    ("web1", f"{P}/a/web2/s/alice/s1/c2a", RECV, False),
    ("web1", f"{P}/authz/req/web1", PUB, True),
    ("web1", f"{P}/authz/req/web2", PUB, False),
    ("web1", f"{P}/authz/req/web1", RECV, False),
    ("web1", f"{P}/authz/rep/web1", RECV, True),
    ("web1", f"{P}/authz/rep/alice", RECV, False),
    ("web1", f"{P}/authz/bulletin", RECV, True),
    ("web1", f"{P}/authz/bulletin", PUB, False),
    # user alice
    ("alice", f"{P}/a/web1/hs/alice", PUB, True),
    ("alice", f"{P}/a/web1/hs/bob", PUB, False),
    ("alice", f"{P}/a/web1/hs/alice", RECV, False),
    ("alice", f"{P}/a/web1/s/alice/s1/c2a", PUB, True),
    ("alice", f"{P}/a/web1/s/alice/s1/a2c", RECV, True),
    ("alice", f"{P}/a/web1/s/bob/s1/a2c", RECV, False),
    ("alice", f"{P}/a/web1/s/bob/s1/c2a", PUB, False),
    ("alice", f"{P}/a/web1/s/alice/s1/rec", PUB, False),  # deny: only the agent writes rec
    ("alice", f"{P}/a/web1/s/alice/s1/rec", RECV, False),
    ("alice", f"{P}/a/web1/s/alice/s1/rack", PUB, False),
    ("alice", f"{P}/a/web1/presence", PUB, False),
    ("alice", f"{P}/a/web1/presence", RECV, True),
    ("alice", f"{P}/authz/req/alice", PUB, True),
    ("alice", f"{P}/authz/rep/alice", RECV, True),
    ("alice", f"{P}/authz/rep/bob", RECV, False),
    ("alice", f"{P}/authz/req/bob", RECV, False),
    # authority
    ("auth", f"{P}/authz/req/alice", RECV, True),
    ("auth", f"{P}/authz/req/alice", PUB, False),
    ("auth", f"{P}/authz/rep/alice", PUB, True),
    ("auth", f"{P}/authz/bulletin", PUB, True),
    ("auth", f"{P}/a/web1/s/alice/s1/a2c", RECV, False),
    # recorder
    ("rec", f"{P}/a/web1/s/alice/s1/rec", RECV, True),
    ("rec", f"{P}/a/web1/s/alice/s1/rack", PUB, True),
    ("rec", f"{P}/a/web1/s/alice/s1/rec", PUB, False),
    ("rec", f"{P}/a/web1/s/alice/s1/a2c", RECV, False),
    ("rec", f"{P}/a/web1/s/alice/s1/c2a", RECV, False),
    # admin
    ("root", f"{P}/a/web1/s/alice/s1/a2c", RECV, True),
    ("root", "anything/at/all", PUB, True),
    ("root", "$SYS/broker/uptime", PUB, False),
    ("root", "$SYS/broker/uptime", RECV, False),  # `#` never matches $ topics
    # principals the file does not know, and no username at all
    ("mallory", f"{P}/authz/req/mallory", PUB, True),  # patterns apply to every username
    ("mallory", f"{P}/a/web1/presence", RECV, False),
    (None, f"{P}/a/web1/presence", RECV, False),
    (None, f"{P}/authz/req/x", PUB, False),
]


@pytest.mark.parametrize(("user", "topic", "action", "expected"), CASES)
def test_permits(user: str | None, topic: str, action: Action, expected: bool) -> None:
    assert ACL.permits(user, topic, action) is expected
    assert permits(ACL, user, topic, action.value) is expected


SUBSCRIBE_CASES = [
    ("alice", f"{P}/a/+/presence", True),
    ("alice", f"{P}/a/web1/presence", True),
    ("alice", f"{P}/a/+/s/alice/#", True),
    ("alice", f"{P}/a/web1/s/alice/s1/+", True),
    ("alice", f"{P}/a/web1/s/alice/s1/rec", False),  # wholly inside a deny
    ("alice", f"{P}/a/+/s/+/#", False),
    ("alice", f"{P}/a/#", False),
    ("alice", f"{P}/#", False),
    ("alice", "#", False),
    ("alice", f"{P}/a/+/hs/alice", False),  # write-only
    ("alice", f"{P}/authz/rep/alice", True),
    ("alice", f"{P}/authz/rep/+", False),
    ("web1", f"{P}/a/web1/#", True),
    ("web1", f"{P}/a/web1", True),  # `a/web1/#` matches its parent level too
    ("web1", f"{P}/a/web1/hs/+", True),
    ("web1", f"{P}/a/+/hs/+", False),
    ("auth", f"{P}/authz/req/+", True),
    ("auth", f"{P}/authz/#", False),
    ("rec", f"{P}/a/+/s/+/+/rec", True),
    ("rec", f"{P}/a/+/s/+/+/+", False),
    ("rec", f"{P}/a/+/s/#", False),
    ("root", "#", True),
    ("root", "$SYS/#", False),
    ("alice", f"{P}/a/+/presence/#", True),
    ("alice", f"{P}/a/+/presence/x/#", True),
    ("alice", f"{P}/a/+/+", False),
    ("alice", "a/#/b", False),  # malformed filter
]


@pytest.mark.parametrize(("user", "topic_filter", "expected"), SUBSCRIBE_CASES)
def test_subscribe_needs_a_covering_read_rule(user: str, topic_filter: str, expected: bool) -> None:
    assert ACL.permits(user, topic_filter, SUB) is expected


def test_publish_to_wildcard_or_empty_topic_refused() -> None:
    for topic in ("", f"{P}/a/web1/+", f"{P}/a/web1/#", "a\x00b"):
        assert not ACL.permits("root", topic, PUB)


def test_permits_accepts_text() -> None:
    assert permits("user u\ntopic read a/b\n", "u", "a/b", "receive")
    assert not permits("user u\ntopic read a/b\n", "u", "a/b", "publish")


# -- Mosquitto acl_file semantics ---------------------------------------------------------


def test_topic_lines_before_any_user_are_for_anonymous_only() -> None:
    acl = parse_acl("topic read open/#\nuser u\ntopic read mine/#\n")
    assert acl.permits(None, "open/x", RECV)
    assert not acl.permits("u", "open/x", RECV)
    assert acl.permits("u", "mine/x", RECV)
    assert not acl.permits(None, "mine/x", RECV)


def test_deny_wins_whatever_its_position() -> None:
    acl = parse_acl("user u\ntopic readwrite a/#\ntopic deny a/secret\n")
    assert acl.permits("u", "a/open", PUB)
    assert not acl.permits("u", "a/secret", PUB)
    assert not acl.permits("u", "a/secret", RECV)


def test_user_entries_are_checked_before_patterns() -> None:
    acl = parse_acl("pattern readwrite x/%u\nuser u\ntopic deny x/u\n")
    assert not acl.permits("u", "x/u", PUB)
    assert acl.permits("v", "x/v", PUB)
    # A user entry that matches but grants the wrong access falls through to patterns.
    acl = parse_acl(
        "pattern deny y/%u\npattern readwrite z/%u\nuser u\ntopic read y/u\ntopic read z/u\n"
    )
    assert acl.permits("u", "y/u", RECV)
    assert not acl.permits("u", "y/u", PUB)
    assert acl.permits("u", "z/u", PUB)


def test_access_word_defaults_to_readwrite() -> None:
    acl = parse_acl("user u\ntopic a/b\ntopic read\n")
    assert acl.permits("u", "a/b", PUB) and acl.permits("u", "a/b", RECV)
    # Mosquitto's quirk: a lone word is the topic, not the access type.
    assert acl.permits("u", "read", PUB)


def test_client_id_pattern() -> None:
    acl = parse_acl("pattern readwrite c/%c/u/%u\n")
    assert acl.permits("u", "c/cid/u/u", PUB, client_id="cid")
    assert not acl.permits("u", "c/other/u/u", PUB, client_id="cid")
    assert acl.permits("u", "c/u/u/u", PUB)  # the client id defaults to the username


def test_dangerous_usernames_get_nothing() -> None:
    acl = parse_acl("pattern readwrite t/%u/#\nuser a+\ntopic readwrite #\n")
    for name in ("a+", "#", "a/b", "x\x00"):
        assert not acl.permits(name, "t/x", PUB)
    assert not acl.permits("u", "t/u/x", PUB, client_id="c#")


def test_comments_blank_lines_and_spacing() -> None:
    acl = parse_acl("# comment\n\n   \nuser   u  \n  topic   read   a/b c  \n")
    assert acl.permits("u", "a/b c", RECV)  # the topic is the rest of the line


@pytest.mark.parametrize(
    "text",
    [
        "topic read a/#/b\n",
        "topic read a/b+\n",
        "topic maybe a/b\n",
        "user\n",
        "bogus line\n",
        "  # an indented comment is not a comment to Mosquitto\n",
        "topic\n",
        "user u\ntopic\tread a\n",
    ],
)
def test_files_mosquitto_would_refuse(text: str) -> None:
    with pytest.raises(AclError):
        parse_acl(text)


def test_rendered_file_round_trips_through_the_parser() -> None:
    acl = parse_acl(render_mosquitto_acl(USERS))
    assert set(acl.users) == set(USERS)
    assert len(acl.patterns) == 2
    assert acl.anonymous == ()
    for role in ROLES:
        name = next(n for n, r in USERS.items() if r == role)
        for rule in rules_for(name, role):
            if rule.access == "deny":
                continue
            concrete = rule.topic.replace("+", "x").replace("#", "y")
            if concrete.startswith("y"):
                concrete = "any/topic"
            if "read" in rule.access:
                assert acl.permits(name, concrete, RECV), (name, rule)
            if "write" in rule.access:
                assert acl.permits(name, concrete, PUB), (name, rule)


# -- topic matching and the subset check ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "flt", "expected"),
    [
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a/", True),
        ("a/+", "a", False),
        ("a/+/#", "a", False),
        ("a/+/#", "a/#", False),
        ("a/#", "a/+/#", True),
        ("+/x", "$SYS/x", False),
        ("#", "$SYS/#", False),
        ("#", "#", True),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/+", False),
        ("a/+", "a/+", True),
        ("+/+", "a/#", False),
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_filter_covers(rule: str, flt: str, expected: bool) -> None:
    assert filter_covers(rule, flt) is expected


LEVEL = st.sampled_from(["a", "b", "", "$x"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "+"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "a"  # a zero-length filter is not a filter


@st.composite
def topics(draw: st.DrawFn) -> str:
    return "/".join(draw(st.lists(LEVEL, min_size=1, max_size=5))) or "a"


@settings(max_examples=400, deadline=None, database=None)
@given(filters(), topics())
def test_topic_matching_agrees_with_paho(flt: str, topic: str) -> None:
    assert valid_filter(flt)
    assert filter_covers(flt, topic) == paho.topic_matches_sub(flt, topic)


@settings(max_examples=300, deadline=None, database=None)
@given(filters(), filters(), st.lists(topics(), min_size=1, max_size=20))
def test_subset_check_is_sound(rule: str, flt: str, samples: list[str]) -> None:
    # If the rule covers the filter, every topic the filter matches is matched by the rule.
    if filter_covers(rule, flt):
        for topic in samples:
            if paho.topic_matches_sub(flt, topic):
                assert paho.topic_matches_sub(rule, topic), (rule, flt, topic)


def test_an_activation_principal_can_only_ask_to_enrol() -> None:
    assert ACL.permits("act-1", f"{P}/enrol/req/act-1", PUB)
    assert ACL.permits("act-1", f"{P}/enrol/rep/act-1", RECV)
    assert not ACL.permits("act-1", f"{P}/enrol/req/act-2", PUB)
    assert not ACL.permits("act-1", f"{P}/enrol/rep/act-2", RECV)
    assert not ACL.permits("act-1", f"{P}/a/web1/hs/act-1", PUB)
    assert not ACL.permits("act-1", f"{P}/a/web1/s/alice/x/a2c", RECV)
    assert ACL.permits("auth", f"{P}/enrol/req/act-1", RECV)
    assert not ACL.permits("alice", f"{P}/enrol/rep/act-1", RECV)
