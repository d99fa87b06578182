"""Watch and join, the authority's half (issue 11 item 5; docs/protocol.md §6): grant
requests that watch or join another user's live session, the `moderator` claim of watch
grants, `require_moderator` on shell grants, and the `sessions` answer listing others'
sessions the policy lets the caller watch or join. As in test_authority_live.py, each
request is built, signed and sealed as a client builds it and goes through the real
AuthorityService (registry, policy, nonce journal, audit trail in a temporary
$TETHER_HOME); each reply is opened and its signature checked as the requester does."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_authority_live import SID, Authority, live

from tether import grants
from tether.authority.live import LiveSession
from tether.authority.provision import commit, new_principal
from tether.authority.registry import Registry
from tether.edge.keys import write_private_file
from tether.edge.mqtt import MAX_PAYLOAD

APP = "app"  # the run-as user of the sessions (the authority never resolves it)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

POLICY = """\
[groups]
leads = ["carol"]
auditors = ["dave"]

# alice's shells on web1 wait for a moderator: a lead, or anyone in an audit* group
[[statement]]
id = "moderated"
effect = "allow"
users = ["alice"]
agents = ["web1"]
actions = ["shell"]
run_as = ["app", "root"]
require_moderator = ["leads", "audit*"]
{window}
[[statement]]
id = "people"
effect = "allow"
users = ["alice", "bob", "boss", "carol", "dave", "erin"]
agents = ["*"]
actions = ["shell", "exec"]
run_as = ["app", "root"]

[[statement]]
id = "bob-watches"
effect = "allow"
users = ["bob"]
agents = ["*"]
actions = ["watch"]
run_as = ["app"]

[[statement]]
id = "boss-local"
effect = "allow"
users = ["boss"]
agents = ["local"]
actions = ["watch"]
run_as = ["app"]

[[statement]]
id = "leads"
effect = "allow"
groups = ["leads"]
agents = ["*"]
actions = ["watch", "join"]
run_as = ["*"]
"""


class Watchers(Authority):
    """test_authority_live's authority plus carol (a lead by the policy's [groups]), dave
    (an auditor: in a moderator group, with no watch statement) and erin (a lead by her
    registry groups)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        registry = Registry.load(self.home.registry)
        for name, groups in (("carol", []), ("dave", []), ("erin", ["leads"])):
            self.ids[name] = new_principal(self.home, registry, self.identity, name, "user",
                                           host="127.0.0.1", port=1883, groups=groups)
        commit(self.home, registry)
        self.policy()

    def policy(self, window: str = "") -> None:
        write_private_file(self.home.policy, POLICY.format(window=window).encode())


@pytest.fixture
def auth(tmp_path: Path) -> Watchers:
    return Watchers(tmp_path)


def session(sid: str, user: str = "alice", run_as: str = APP, **changes: Any) -> dict[str, Any]:
    return live(sid, user=user, run_as=run_as, **changes)


def request(mode: str, agent: str, sid: str | None, **changes: Any) -> dict[str, Any]:
    return dict({"type": "grant", "agent": agent, "mode": mode, "attach": sid, "reason": None,
                 "run_as": None, "command": None}, **changes)


def granted(auth: Authority, who: str, body: dict[str, Any]) -> grants.Grant:
    reply = auth.ask(who, body)
    assert reply["ok"] is True, reply
    return grants.decode(auth.identity.public_key, reply["grant"])


def listed(auth: Authority, who: str, agent: str | None = None) -> list[tuple[str, str, list[str]]]:
    reply = auth.ask(who, {"type": "sessions", "agent": agent})
    assert reply["ok"] is True and "more" not in reply, reply
    return [(s["agent"], s["sid"], s["actions"]) for s in reply["sessions"]]


# ----- watch and join grants ---------------------------------------------------------------

def test_a_lead_watches_and_joins_as_the_sessions_run_as_and_is_audited(auth: Watchers) -> None:
    assert auth.report("web1", [session(SID[0])])["ok"]
    g = granted(auth, "carol", request("watch", "web1", SID[0], reason="pairing"))
    assert (g.user, g.agent, g.mode, g.attach, g.run_as, g.command) == (
        "carol", "web1", "watch", SID[0], APP, None)
    assert g.moderator is True and g.require_moderator is False and g.moderators is None
    assert g.detach_timeout == 0 and g.reason == "pairing"
    entry = auth.audit()[-1]
    assert {k: entry.get(k) for k in ("event", "user", "agent", "mode", "sid", "session_user",
                                      "run_as", "moderator", "jti")} == {
        "event": "grant-issued", "user": "carol", "agent": "web1", "mode": "watch", "sid": SID[0],
        "session_user": "alice", "run_as": APP, "moderator": True, "jti": g.jti}
    j = granted(auth, "carol", request("join", "web1", SID[0], run_as=APP))
    assert (j.mode, j.attach, j.run_as, j.moderator) == ("join", SID[0], APP, False)
    entry = auth.audit()[-1]
    assert (entry["event"], entry["mode"], entry["sid"], entry["session_user"]) == (
        "grant-issued", "join", SID[0], "alice")
    assert "moderator" not in entry


def test_moderator_only_for_the_groups_of_the_statement_that_allowed_the_session(auth: Watchers) -> None:
    assert auth.report("web1", [session(SID[0]), session(SID[1], mode="exec"),
                                session(SID[2], user="bob")])["ok"]
    assert auth.report("local", [session(SID[3])])["ok"]
    # erin is a lead by her registry groups
    assert granted(auth, "erin", request("watch", "web1", SID[0])).moderator is True
    # bob may watch, and is in no moderator group
    assert granted(auth, "bob", request("watch", "web1", SID[0])).moderator is False
    # alice's exec session and bob's shell on web1, alice's shell on local: allowed by
    # "people", which needs no moderator: carol watches them as herself
    for agent, sid in (("web1", SID[1]), ("web1", SID[2]), ("local", SID[3])):
        assert granted(auth, "carol", request("watch", agent, sid)).moderator is False, sid
    assert "moderator" not in auth.audit()[-1]


def test_no_one_moderates_their_own_session(auth: Watchers) -> None:
    # carol's shell on web1, allowed by a statement that requires a lead; carol is a lead
    write_private_file(auth.home.policy, POLICY.format(window="").replace(
        'users = ["alice"]\nagents = ["web1"]', 'users = ["alice", "carol"]\nagents = ["web1"]').encode())
    assert granted(auth, "carol", request("shell", "web1", None, run_as=APP)).require_moderator
    assert auth.report("web1", [session(SID[0], user="carol"), session(SID[1])])["ok"]
    assert granted(auth, "carol", request("watch", "web1", SID[0])).moderator is False
    assert granted(auth, "erin", request("watch", "web1", SID[0])).moderator is True
    assert granted(auth, "carol", request("watch", "web1", SID[1])).moderator is True


def test_grants_carry_the_moderator_claims_only_where_they_mean_something(auth: Watchers) -> None:
    from tether import paseto
    from tether.encoding import dumps

    def token(**claims: Any) -> str:
        base = grants.Grant(user="carol", agent="web1", agent_key="k", client_key="c",
                            mqtt_name="carol.1", mode="watch", run_as=APP, command=None,
                            max_duration=60, idle_timeout=0, recording="off", recorder=None,
                            reason=None, jti="j", expires=time.time() + 60, attach=SID[0])
        return paseto.sign(auth.identity.signing_seed, dumps(dict(base.claims(time.time()), **claims)),
                           implicit=grants.IMPLICIT)

    def decode(**claims: Any) -> grants.Grant:
        return grants.decode(auth.identity.public_key, token(**claims))

    plain = decode()
    assert (plain.moderator, plain.require_moderator, plain.moderators) == (False, False, None)
    assert "moderator" not in grants.Grant.claims(plain, time.time())  # written only when set
    assert decode(moderator=True).moderator is True
    g = decode(mode="shell", attach=None, require_moderator=True, moderators=["leads"])
    assert (g.require_moderator, g.moderators) == (True, ["leads"])
    for claims, why in (({"moderator": 1}, "moderator is not true or false"),
                        ({"moderator": True, "mode": "join"}, "moderator is only for watch grants"),
                        ({"require_moderator": "yes"}, "require_moderator is not true or false"),
                        ({"require_moderator": True}, "require_moderator is only for shell grants"),
                        ({"moderators": "leads"}, "moderators is not a list of group names"),
                        ({"moderators": [1]}, "moderators is not a list of group names")):
        with pytest.raises(grants.GrantError, match=f"^grant is malformed: {why}$"):
            decode(**claims)


def test_the_moderated_statement_is_found_at_the_sessions_start_time(auth: Watchers) -> None:
    # "moderated" only applies on a day that is not today: at the session's start (that
    # day) it allowed the shell; now the owner's shell would fall to "people".
    today = datetime.now(UTC)
    other = today + timedelta(days=3)
    auth.policy(window=f'time_window = {{ days = ["{DAYS[other.weekday()]}"] }}\n')
    assert auth.report("web1", [session(SID[0], started=other.timestamp()),
                                session(SID[1], started=today.timestamp())])["ok"]
    assert granted(auth, "carol", request("watch", "web1", SID[0])).moderator is True
    assert granted(auth, "carol", request("watch", "web1", SID[1])).moderator is False
    # a start time past any calendar is taken as now, not an error
    huge = LiveSession.from_json(session(SID[2], started=1e300))
    assert auth.service.live.report("web1", 1000.0, [huge], time.time())
    assert granted(auth, "carol", request("watch", "web1", SID[2])).moderator is False


def test_watch_and_join_refusals_say_why_and_are_audited_with_the_sid(auth: Watchers) -> None:
    assert auth.report("web1", [session(SID[0]), session(SID[1], run_as="root"),
                                session(SID[2], mode="exec")])["ok"]
    assert auth.report("local", [session(SID[2]), session(SID[3], run_as="postgres")])["ok"]
    cases = [
        ("carol", request("watch", "web1", SID[7]),
         f"no live session {SID[7]} on agent web1: it ended, or the agent has not reported it yet"),
        ("carol", request("join", "local", SID[0]),  # the right sid, another agent
         f"no live session {SID[0]} on agent local: it ended, or the agent has not reported it yet"),
        ("carol", request("watch", "web1", SID[0], run_as="nobody"),
         f"session {SID[0]} on web1 runs as 'app', not 'nobody'"),
        ("carol", request("join", "web1", SID[2]),
         f"only shell sessions can be joined; session {SID[2]} on web1 runs a command (watch it instead)"),
        # root only when listed literally: the leads' "*" does not cover it
        ("carol", request("watch", "web1", SID[1]),
         "denied: user 'carol' may not watch sessions running as 'root' on 'web1' (statement #5 'leads')"),
        ("bob", request("watch", "local", SID[3]),
         "denied: user 'bob' may not watch sessions running as 'postgres' on 'local' "
         "(statement #3 'bob-watches')"),
        # bob may watch, not join; boss may watch on local only
        ("bob", request("join", "web1", SID[0]), "denied: no policy statement allows 'bob' to join on 'web1'"),
        ("boss", request("watch", "web1", SID[0]), "denied: no policy statement allows 'boss' to watch on 'web1'"),
        # dave is in a moderator group (audit*) but no statement lets him watch
        ("dave", request("watch", "web1", SID[0]), "denied: no policy statement allows 'dave' to watch on 'web1'"),
        # alice owns it: watching it from a second device needs a statement like anyone's
        ("alice", request("watch", "web1", SID[0]), "denied: no policy statement allows 'alice' to watch on 'web1'"),
    ]
    for who, body, error in cases:
        assert auth.ask(who, body) == {"ok": False, "error": error}, (who, body)
    denied = [e for e in auth.audit() if e["event"] == "grant-denied"]
    assert [(e["user"], e["mode"], e["sid"], e["why"]) for e in denied] == [
        (who, body["mode"], body["attach"], error) for who, body, error in cases]
    # whose session it was, when the table knew it
    assert [e.get("session_user") for e in denied] == [None, None] + ["alice"] * 8
    assert granted(auth, "boss", request("watch", "local", SID[2])).attach == SID[2]
    assert granted(auth, "carol", request("watch", "web1", SID[2])).attach == SID[2]


def test_a_watch_or_join_must_name_a_session(auth: Watchers) -> None:
    trail = len(auth.audit())
    for mode in ("watch", "join"):
        assert auth.ask("carol", request(mode, "web1", None)) == {
            "ok": False, "error": f"refused: a {mode} request names the session (attach): the "
                                  "32-digit hex id `tether sessions` shows"}
    assert auth.ask("carol", request("watch", "web1", "x" * 32)) == {
        "ok": False, "error": "refused: the session to attach to is not valid: use the 32-digit "
                              "hex id `tether sessions` shows"}
    assert auth.ask("carol", request("forward", "web1", SID[0])) == {
        "ok": False, "error": "refused: only shell sessions can be attached"}
    assert [e["event"] for e in auth.audit()[trail:]] == ["request-refused"] * 4


def test_the_policy_decides_a_watch_as_it_is_now(auth: Watchers) -> None:
    assert auth.report("web1", [session(SID[0])])["ok"]
    assert granted(auth, "carol", request("watch", "web1", SID[0])).moderator is True
    write_private_file(auth.home.policy, POLICY.format(window="").replace(
        'actions = ["watch", "join"]', 'actions = ["join"]').encode())
    assert auth.ask("carol", request("watch", "web1", SID[0])) == {
        "ok": False, "error": "denied: no policy statement allows 'carol' to watch on 'web1'"}
    assert granted(auth, "carol", request("join", "web1", SID[0])).mode == "join"


# ----- require_moderator on shell grants ---------------------------------------------------

def test_new_shells_from_a_moderated_statement_require_a_moderator(auth: Watchers) -> None:
    shell = request("shell", "web1", None, run_as=APP)
    g = granted(auth, "alice", shell)
    assert (g.require_moderator, g.moderators, g.moderator) == (True, ["leads", "audit*"], False)
    entry = auth.audit()[-1]
    assert (entry["event"], entry["require_moderator"]) == ("grant-issued", ["leads", "audit*"])
    # the same user elsewhere, another user there, and exec: "people" decides, no moderator
    for who, body in (("alice", dict(shell, agent="local")), ("bob", shell),
                      ("alice", dict(shell, mode="exec", command=["true"]))):
        g = granted(auth, who, body)
        assert (g.require_moderator, g.moderators) == (False, None), (who, body)
        assert "require_moderator" not in auth.audit()[-1]
    # taking over one's own running moderated shell does not wait again
    assert auth.report("web1", [session(SID[0])])["ok"]
    g = granted(auth, "alice", request("shell", "web1", SID[0]))
    assert (g.attach, g.require_moderator, g.moderators) == (SID[0], False, None)


# ----- the sessions answer -----------------------------------------------------------------

def test_sessions_lists_others_sessions_only_where_the_policy_allows(auth: Watchers) -> None:
    trail = auth.audit()
    assert auth.report("web1", [session(SID[0], started=10.0),
                                session(SID[1], run_as="root", started=20.0),
                                session(SID[2], user="bob", mode="exec", started=30.0),
                                session(SID[3], user="carol", started=40.0)])["ok"]
    assert auth.report("local", [session(SID[4], started=15.0),
                                 session(SID[5], run_as="postgres", started=25.0)])["ok"]
    both = ["watch", "join"]
    # carol: every session but root's, watch and join (a command's only watch); her own
    # can also be attached
    assert listed(auth, "carol") == [
        ("web1", SID[3], ["attach", *both]), ("web1", SID[2], ["watch"]), ("local", SID[5], both),
        ("local", SID[4], both), ("web1", SID[0], both)]
    # bob: his own exec (nothing to do with it but show it), others' app sessions to watch
    assert listed(auth, "bob") == [
        ("web1", SID[3], ["watch"]), ("web1", SID[2], ["watch"]), ("local", SID[4], ["watch"]),
        ("web1", SID[0], ["watch"])]
    # boss: watch on local only
    assert listed(auth, "boss") == [("local", SID[4], ["watch"])]
    assert listed(auth, "boss", "web1") == []
    # alice: her own shells, to attach (no statement lets her watch them too)
    assert listed(auth, "alice") == [("local", SID[5], ["attach"]), ("web1", SID[1], ["attach"]),
                                     ("local", SID[4], ["attach"]), ("web1", SID[0], ["attach"])]
    # dave: in a moderator group, may watch nothing
    assert listed(auth, "dave") == []
    assert auth.audit() == trail


def test_the_sessions_cap_counts_only_what_is_listed(auth: Watchers) -> None:
    # the 60 newest are root's (not for carol), then 90 she may watch: all 90 are listed
    root = [session(SID[i], run_as="root", started=1000.0 + i) for i in range(60)]
    app = [session(SID[60 + i], started=float(i)) for i in range(90)]
    assert auth.report("web1", root + app)["ok"]
    reply = auth.ask("carol", {"type": "sessions", "agent": None})
    assert "more" not in reply
    assert [s["started"] for s in reply["sessions"]] == [float(i) for i in range(89, -1, -1)]
    # 30 more she may watch, on another agent: 120 in all, the newest 100 listed
    assert auth.report("local", [session(SID[200 + i], started=500.0 + i) for i in range(30)])["ok"]
    reply = auth.ask("carol", {"type": "sessions", "agent": None})
    assert reply["more"] is True
    assert [s["started"] for s in reply["sessions"]] == (
        [500.0 + i for i in range(29, -1, -1)] + [float(i) for i in range(89, 19, -1)])


def test_others_sessions_stay_under_the_packet_cap(auth: Watchers) -> None:
    huge = [LiveSession.from_json(session(SID[i], user="bob", mode="exec", run_as="u" * 256,
                                          command="\x01" * 256, started=float(i)))
            for i in range(100)]
    auth.service.live.report("web1", 1.0, huge, time.time())
    before = len(auth.outbox.sent)
    reply = auth.ask("carol", {"type": "sessions", "agent": None})
    assert len(auth.outbox.sent[before][1]) <= MAX_PAYLOAD
    assert reply["more"] is True and 40 < len(reply["sessions"]) < 100
    assert all(s["actions"] == ["watch"] for s in reply["sessions"])  # commands: watch only


def test_a_broken_policy_lists_only_ones_own_sessions(auth: Watchers) -> None:
    assert auth.report("web1", [session(SID[0]), session(SID[1], user="carol")])["ok"]
    write_private_file(auth.home.policy, b"[[statement]]\neffect = 1\n")
    assert listed(auth, "carol") == [("web1", SID[1], ["attach"])]
    reply = auth.ask("carol", request("watch", "web1", SID[0]))
    assert reply["ok"] is False and reply["error"].startswith("denied: ")
