"""Reattach, the authority's half (issue 11 item 4; docs/protocol.md §6): agents'
`live` reports, users' `sessions` questions and grant requests that attach to a live
session. Each request is built, signed and sealed as a client or agent builds it, goes
through the real AuthorityService in-process (its registry, policy, nonce journal and
audit trail in a temporary $TETHER_HOME), and each reply is opened and its signature
checked as the requester does. Only the broker connection is replaced, by an outbox."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tether import authz, grants
from tether.authority.live import LiveSession, LiveTable
from tether.authority.nonces import NonceJournal
from tether.authority.provision import authority_identity, commit, ensure_local_setup, new_principal
from tether.authority.registry import Registry
from tether.authority.requests import MAX_LIVE_COMMAND, MAX_LIVE_SESSIONS, request_problem
from tether.authority.service import AuthorityService
from tether.edge.home import Home
from tether.edge.keys import Identity, write_private_file
from tether.edge.mqtt import MAX_PAYLOAD
from tether.encoding import b64e, loads
from tether.topics import Topics

TOPICS = Topics()
ME = getpass.getuser()  # an OS user the local agent could run as; the policy names it
SID = [f"{i:032x}" for i in range(1, 400)]


class Outbox:
    """Where the authority's replies go instead of a broker connection."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload))


class Authority:
    """The authority service with alice, bob (users), root-ish admin `boss`, and agents
    `local` and `web1`, each with its own keys."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = Home(tmp_path / "home")
        ensure_local_setup(self.home, "127.0.0.1", 1883)
        self.identity = authority_identity(self.home)
        registry = Registry.load(self.home.registry)
        self.ids: dict[str, Identity] = {"local": Identity.load(self.home.agent_identity("local"))}
        for name, kind in (("alice", "user"), ("bob", "user"), ("boss", "admin"), ("web1", "agent")):
            self.ids[name] = new_principal(self.home, registry, self.identity, name, kind,
                                           host="127.0.0.1", port=1883)
        commit(self.home, registry)
        self.set_policy(f'run_as = ["{ME}"]\n')
        self.service = AuthorityService(self.identity, self.home)
        self.outbox = Outbox()
        self.service.conn = self.outbox  # type: ignore[assignment]
        self.service.nonces = NonceJournal(tmp_path / "nonces.jsonl", time.time())
        self.service._refresh()

    def set_policy(self, extra: str) -> None:
        write_private_file(self.home.policy, (
            '[[statement]]\nid = "people"\neffect = "allow"\nusers = ["alice", "bob", "boss"]\n'
            f'agents = ["*"]\nactions = ["shell", "exec"]\n{extra}').encode())

    def ask(self, who: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send `body` as `who` (users from their first CLI slot) and return the reply."""
        ident = self.ids[who]
        slot = f"{who}.1" if ident.kind == "user" else who
        pending = authz.build_request(ident.signing_key, who, self.identity.x25519_public, body,
                                      time.time(), os.urandom)
        before = len(self.outbox.sent)
        self.service._on_message(TOPICS.authz_request(slot), pending.payload)
        assert len(self.outbox.sent) == before + 1, "no reply"
        topic, payload = self.outbox.sent[-1]
        assert topic == TOPICS.authz_reply(slot)
        reply = authz.open_reply(pending, self.identity.public_key, payload)
        assert reply is not None
        assert reply.pop("nonce") == pending.nonce
        return reply

    def report(self, agent: str, sessions: list[dict[str, Any]], boot: float = 1000.0) -> dict[str, Any]:
        return self.ask(agent, {"type": "live", "boot": boot, "sessions": sessions})

    def audit(self) -> list[dict[str, Any]]:
        path = self.home.root / "authority" / "audit.jsonl"
        return [loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def live(sid: str, user: str = "alice", mode: str = "shell", started: float = 1_700_000_000.0,
         **changes: Any) -> dict[str, Any]:
    return dict({"sid": sid, "user": user, "mode": mode, "run_as": ME,
                 "command": "sleep 100" if mode == "exec" else None, "started": started,
                 "attached": True, "detached_at": None, "detach_timeout": 600}, **changes)


@pytest.fixture
def auth(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


def attach(agent: str, sid: str, **changes: Any) -> dict[str, Any]:
    return dict({"type": "grant", "agent": agent, "mode": "shell", "attach": sid, "reason": None,
                 "run_as": None, "command": None}, **changes)


# ----- live reports and the sessions question ----------------------------------------------

def test_a_report_is_listed_to_its_owner_only_newest_first_and_nothing_is_audited(auth: Authority) -> None:
    trail = auth.audit()
    assert auth.report("local", [
        live(SID[0], started=100.0),
        live(SID[1], mode="exec", started=300.0, attached=False, detached_at=350.5),
        live(SID[2], user="bob", started=200.0),
    ]) == {"ok": True}
    assert auth.report("web1", [live(SID[3], started=200.0)]) == {"ok": True}
    reply = auth.ask("alice", {"type": "sessions", "agent": None})
    assert reply["ok"] is True and "more" not in reply
    assert [(s["agent"], s["sid"], s["actions"]) for s in reply["sessions"]] == [
        ("local", SID[1], []), ("web1", SID[3], ["attach"]), ("local", SID[0], ["attach"])]
    assert reply["sessions"][0] == dict(live(SID[1], mode="exec", started=300.0, attached=False,
                                             detached_at=350.5), agent="local", actions=[])
    only_web1 = auth.ask("alice", {"type": "sessions", "agent": "web1"})["sessions"]
    assert [s["sid"] for s in only_web1] == [SID[3]]
    assert [s["sid"] for s in auth.ask("bob", {"type": "sessions", "agent": None})["sessions"]] == [SID[2]]
    # An admin sees only its own sessions too (watching others' is for later).
    assert auth.ask("boss", {"type": "sessions", "agent": None}) == {"ok": True, "sessions": []}
    assert auth.ask("alice", {"type": "sessions", "agent": "nosuch"}) == {"ok": True, "sessions": []}
    assert auth.audit() == trail  # neither the reports nor the questions are written


def test_a_report_replaces_the_last_and_one_from_an_older_boot_is_ignored(auth: Authority) -> None:
    def listed() -> list[str]:
        return [s["sid"] for s in auth.ask("alice", {"type": "sessions", "agent": None})["sessions"]]

    assert auth.report("local", [live(SID[0]), live(SID[1])], boot=1000.0)["ok"]
    assert sorted(listed()) == [SID[0], SID[1]]
    assert auth.report("local", [live(SID[1])], boot=1000.0)["ok"]  # SID[0] ended
    assert listed() == [SID[1]]
    assert auth.report("local", [live(SID[5])], boot=2000.0)["ok"]  # the agent restarted
    assert listed() == [SID[5]]
    # A report from the earlier process is answered, and changes nothing.
    assert auth.report("local", [live(SID[1])], boot=1000.0) == {"ok": True}
    assert listed() == [SID[5]]
    assert auth.report("local", [], boot=2000.0)["ok"]
    assert listed() == []


@pytest.mark.parametrize("who", ["alice", "boss"])
def test_a_user_or_admin_sending_live_is_refused(auth: Authority, who: str) -> None:
    trail = auth.audit()
    reply = auth.report(who, [live(SID[0])])
    assert reply == {"ok": False, "error": "refused: only agents report live sessions"}
    # Nothing was taken from it: neither the sender nor alice has a session listed.
    assert auth.ask(who, {"type": "sessions", "agent": None})["sessions"] == []
    assert auth.ask("alice", {"type": "sessions", "agent": None})["sessions"] == []
    assert auth.audit() == trail


def test_an_agent_asking_for_sessions_is_refused(auth: Authority) -> None:
    assert auth.report("local", [live(SID[0], user="local")])["ok"]
    assert auth.ask("local", {"type": "sessions", "agent": None}) == {
        "ok": False, "error": "agents may only rotate their keys"}


MALFORMED = [
    ({"sessions": "all"}, "refused: a live report carries a list of at most 256 sessions"),
    ({"sessions": [live(f"{i:032x}") for i in range(MAX_LIVE_SESSIONS + 1)]},
     "refused: a live report carries a list of at most 256 sessions"),
    ({"boot": "1000"}, "refused: a live report carries the agent's boot time (a number)"),
    ({"boot": None}, "refused: a live report carries the agent's boot time (a number)"),
    ({"sessions": [live(SID[0]), "x"]}, "refused: live session #2: not an object"),
    ({"sessions": [live("AB" * 16)]},
     "refused: live session #1: the session id is not 32 lowercase hex digits"),
    ({"sessions": [live("ab" * 17)]},
     "refused: live session #1: the session id is not 32 lowercase hex digits"),
    ({"sessions": [live(SID[0]), live(SID[0])]}, "refused: live session #2: its session id appears twice"),
    ({"sessions": [live(SID[0], user="alice\n")]},
     "refused: live session #1: the user name is not valid: use 1-64 letters, digits, '-', '_' or "
     "'.', not starting with '-' or '.'"),
    ({"sessions": [live(SID[0], mode="forward")]},
     "refused: live session #1: unknown session mode; expected one of shell, exec"),
    ({"sessions": [live(SID[0], run_as="-oProxyCommand")]},
     "refused: live session #1: the run-as user is not a valid user name"),
    ({"sessions": [live(SID[0], run_as=None)]},
     "refused: live session #1: the run-as user is not a valid user name"),
    ({"sessions": [live(SID[0], command="ls")]}, "refused: live session #1: only exec sessions name a command"),
    ({"sessions": [live(SID[0], mode="exec", command="x" * (MAX_LIVE_COMMAND + 1))]},
     "refused: live session #1: the command is not text of at most 256 characters"),
    ({"sessions": [live(SID[0], mode="exec", command=["ls"])]},
     "refused: live session #1: the command is not text of at most 256 characters"),
    ({"sessions": [live(SID[0], started="now")]}, "refused: live session #1: the start time is not a number"),
    ({"sessions": [live(SID[0], started=-1.0)]}, "refused: live session #1: the start time is not a number"),
    ({"sessions": [live(SID[0], started=True)]}, "refused: live session #1: the start time is not a number"),
    ({"sessions": [live(SID[0], attached=1)]}, "refused: live session #1: attached is not true or false"),
    ({"sessions": [live(SID[0], detached_at="later")]},
     "refused: live session #1: detached_at is not a number or null"),
    ({"sessions": [live(SID[0], detach_timeout=-1)]},
     "refused: live session #1: detach_timeout is not a whole number of seconds"),
    ({"sessions": [live(SID[0], detach_timeout=1.5)]},
     "refused: live session #1: detach_timeout is not a whole number of seconds"),
    ({"sessions": [live(SID[0], detach_timeout=False)]},
     "refused: live session #1: detach_timeout is not a whole number of seconds"),
]


@pytest.mark.parametrize(("change", "error"), MALFORMED)
def test_a_malformed_report_is_refused_whole_and_the_last_good_one_stays(
        auth: Authority, change: dict[str, Any], error: str) -> None:
    assert auth.report("local", [live(SID[9])])["ok"]
    trail = auth.audit()
    body = dict({"type": "live", "boot": 1000.0, "sessions": [live(SID[0])]}, **change)
    assert auth.ask("local", body) == {"ok": False, "error": error}
    assert [s["sid"] for s in auth.ask("alice", {"type": "sessions", "agent": None})["sessions"]] == [SID[9]]
    assert auth.audit() == trail


def test_the_bounds_exactly() -> None:
    full = [live(f"{i:032x}", mode="exec", command="é" * MAX_LIVE_COMMAND) for i in range(MAX_LIVE_SESSIONS)]
    assert request_problem({"type": "live", "boot": 0, "sessions": full}) is None
    for bad_time in (float("nan"), float("inf"), 10 ** 400):
        assert request_problem({"type": "live", "boot": bad_time, "sessions": []}) is not None
        problem = request_problem({"type": "live", "boot": 1.0, "sessions": [live(SID[0], started=bad_time)]})
        assert problem == "live session #1: the start time is not a number"
    lone = request_problem({"type": "live", "boot": 1.0,
                            "sessions": [live(SID[0], mode="exec", command="a\ud800")]})
    assert lone == "live session #1: the command is not text of at most 256 characters"
    assert request_problem({"type": "sessions", "agent": "a b"}) is not None
    assert request_problem({"type": "sessions"}) is None


def test_sessions_answers_at_most_100_newest_first(auth: Authority) -> None:
    for n, agent in enumerate(("local", "web1")):
        sessions = [live(SID[n * 60 + i], started=float(n * 60 + i)) for i in range(60)]
        assert auth.report(agent, sessions)["ok"]
    reply = auth.ask("alice", {"type": "sessions", "agent": None})
    started = [s["started"] for s in reply["sessions"]]
    assert started == [float(i) for i in range(119, 19, -1)]
    assert reply["more"] is True


# ----- grants: new sessions carry detach_timeout; attach ----------------------------------

def _grant(reply: dict[str, Any], auth: Authority) -> grants.Grant:
    assert reply["ok"] is True, reply
    return grants.decode(auth.identity.public_key, reply["grant"])


def test_new_shell_and_exec_grants_carry_the_policys_detach_timeout(auth: Authority) -> None:
    shell = {"type": "grant", "agent": "local", "mode": "shell", "run_as": None, "reason": None,
             "command": None}
    exec_ = dict(shell, mode="exec", command=["true"])
    for body in (shell, exec_):
        g = _grant(auth.ask("alice", body), auth)
        assert (g.detach_timeout, g.attach, g.run_as) == (600, None, ME)
    auth.set_policy(f'run_as = ["{ME}"]\ndetach_timeout = 0\n')
    for body in (shell, exec_):
        assert _grant(auth.ask("alice", body), auth).detach_timeout == 0
    auth.set_policy(f'run_as = ["{ME}"]\ndetach_timeout = "1h"\n')
    for body in (shell, exec_):
        assert _grant(auth.ask("alice", body), auth).detach_timeout == 3600


def test_attach_to_ones_own_shell_is_granted_as_its_run_as_and_audited_with_the_sid(auth: Authority) -> None:
    auth.set_policy(f'run_as = ["nobody", "{ME}"]\ndetach_timeout = "2m"\n')
    assert auth.report("web1", [live(SID[0], attached=False, detached_at=1_700_000_100.0)])["ok"]
    g = _grant(auth.ask("alice", attach("web1", SID[0], reason="back from lunch")), auth)
    # run_as from the session, not the policy's default ("nobody")
    assert (g.user, g.agent, g.mode, g.run_as, g.attach) == ("alice", "web1", "shell", ME, SID[0])
    assert g.detach_timeout == 120 and g.command is None and g.reason == "back from lunch"
    assert g.agent_key == b64e(auth.ids["web1"].public_key)
    entry = auth.audit()[-1]
    assert (entry["event"], entry["user"], entry["agent"], entry["sid"], entry["run_as"], entry["jti"]) == (
        "grant-issued", "alice", "web1", SID[0], ME, g.jti)
    # Naming the session's own run-as user is the same request.
    assert _grant(auth.ask("alice", attach("web1", SID[0], run_as=ME)), auth).attach == SID[0]


def test_attach_refusals_say_why_and_are_audited(auth: Authority) -> None:
    assert auth.report("web1", [live(SID[0], user="bob"), live(SID[1], mode="exec"),
                                live(SID[2])])["ok"]
    cases = [
        (attach("web1", SID[7]),
         f"no live session {SID[7]} on agent web1: it ended, or the agent has not reported it yet"),
        (attach("local", SID[2]),  # the right sid on another agent
         f"no live session {SID[2]} on agent local: it ended, or the agent has not reported it yet"),
        (attach("web1", SID[0]), f"session {SID[0]} on web1 is not yours"),
        (attach("web1", SID[1]), "only shell sessions can be attached"),
        (attach("web1", SID[2], run_as="nobody"), f"session {SID[2]} on web1 runs as {ME!r}, not 'nobody'"),
        (attach("web1", SID[2], mode="exec", command=["true"]), "refused: only shell sessions can be attached"),
        (attach("web1", SID[2][:31]),
         "refused: the session to attach to is not valid: use the 32-digit hex id `tether sessions` shows"),
        (attach("nosuch", SID[2]), "unknown agent 'nosuch'; `tether ls` lists the agents"),
    ]
    for body, error in cases:
        assert auth.ask("alice", body) == {"ok": False, "error": error}, body
    denied = [e for e in auth.audit() if e["event"] == "grant-denied"]
    assert [(e["sid"], e["why"]) for e in denied[:5]] == [
        (body["attach"], error) for body, error in cases[:5]]


def test_attach_is_decided_by_the_policy_as_it_is_now(auth: Authority) -> None:
    assert auth.report("web1", [live(SID[0])])["ok"]
    assert _grant(auth.ask("alice", attach("web1", SID[0])), auth).attach == SID[0]
    # alice may no longer run as this user: she cannot get back in by attaching.
    auth.set_policy('run_as = ["nobody"]\n')
    reply = auth.ask("alice", attach("web1", SID[0]))
    assert reply == {"ok": False, "error": f"denied: user 'alice' may not run as {ME!r} on 'web1' "
                                           "(statement #1 'people')"}
    assert auth.audit()[-1]["event"] == "grant-denied" and auth.audit()[-1]["sid"] == SID[0]
    auth.set_policy(f'run_as = ["{ME}"]\n')
    assert auth.ask("alice", attach("web1", SID[0]))["ok"] is True


def test_a_list_not_refreshed_for_180_s_is_dropped(auth: Authority) -> None:
    assert auth.report("web1", [live(SID[0])])["ok"]
    now = time.time()
    body = attach("web1", SID[0])
    assert auth.service._decide("alice", "alice.1", dict(body), now + 170)["ok"] is True
    assert auth.service._decide("alice", "alice.1", dict(body), now + 190) == {
        "ok": False,
        "error": f"no live session {SID[0]} on agent web1: it ended, or the agent has not reported it yet"}


# ----- the table itself (sans-IO) ---------------------------------------------------------

def _session(sid: str, user: str = "alice", started: float = 0.0) -> LiveSession:
    return LiveSession.from_json(live(sid, user=user, started=started))


def test_table_expiry_is_measured_from_the_last_report() -> None:
    table = LiveTable()
    assert table.report("a", 1.0, [_session(SID[0])], now=100.0)
    assert table.find("a", SID[0], 280.0) is not None  # exactly 180 s: kept
    assert table.report("a", 1.0, [_session(SID[0])], now=250.0)  # refreshed
    assert table.find("a", SID[0], 430.0) is not None
    assert table.find("a", SID[0], 430.5) is None
    assert table.agents(430.5) == []


def test_table_remembers_the_newest_boot_after_dropping_the_list() -> None:
    table = LiveTable()
    assert table.report("a", 5.0, [_session(SID[0])], now=0.0)
    assert table.find("a", SID[0], 1000.0) is None  # dropped
    assert not table.report("a", 4.0, [_session(SID[1])], now=1000.0)
    assert table.find("a", SID[1], 1000.0) is None
    assert table.report("a", 5.0, [_session(SID[1])], now=1000.0)  # the same boot: accepted
    assert table.find("a", SID[1], 1000.0) is not None
    assert table.report("b", 1.0, [_session(SID[2], user="bob", started=3.0),
                                   _session(SID[3], started=2.0)], now=1000.0)
    assert [(a, s.sid) for a, s in table.of_user("alice", ["a", "b"], 1000.0)] == [
        ("b", SID[3]), ("a", SID[1])]


def test_the_sessions_answer_stays_under_the_brokers_packet_cap(auth: Authority) -> None:
    # The worst case agents can report: commands JSON escapes to six bytes a character
    # (put in the table directly: one report of these would exceed the request size limit).
    huge = [LiveSession.from_json(live(SID[i], mode="exec", command="\x01" * MAX_LIVE_COMMAND,
                                       run_as="u" * 256, started=float(i)))
            for i in range(100)]
    auth.service.live.report("web1", 1.0, huge, time.time())
    before = len(auth.outbox.sent)
    reply = auth.ask("alice", {"type": "sessions", "agent": None})
    assert len(auth.outbox.sent[before][1]) <= MAX_PAYLOAD
    assert reply["more"] is True and 40 < len(reply["sessions"]) < 100
    assert [s["started"] for s in reply["sessions"]] == [float(i) for i in range(99, 99 - len(reply["sessions"]), -1)]


def test_a_revoked_agents_sessions_are_neither_listed_nor_attachable(auth: Authority) -> None:
    from tether.edge import revocation_file
    from tether.revocation import Revocations

    assert auth.report("web1", [live(SID[0])])["ok"] and auth.report("local", [live(SID[1])])["ok"]
    # What `tether authority revoke agent web1 --reason stolen` does: the revocation list,
    # and the agent out of the registry.
    key = b64e(auth.ids["web1"].public_key)
    revocation_file.save(auth.home.revocations, Revocations(
        serial=1, agents={"web1": {"ed25519": key, "reason": "stolen", "at": time.time()}}))
    registry = Registry.load(auth.home.registry)
    registry.remove("web1")
    commit(auth.home, registry)
    assert [s["sid"] for s in auth.ask("alice", {"type": "sessions", "agent": None})["sessions"]] == [SID[1]]
    assert auth.ask("alice", {"type": "sessions", "agent": "web1"})["sessions"] == []
    assert auth.ask("alice", attach("web1", SID[0])) == {
        "ok": False, "error": "denied: agent 'web1' has been revoked by the authority (stolen)"}
    # Its reports are no longer heard at all (no reply: the sender is unknown).
    ident = auth.ids["web1"]
    pending = authz.build_request(ident.signing_key, "web1", auth.identity.x25519_public,
                                  {"type": "live", "boot": 1000.0, "sessions": [live(SID[2])]},
                                  time.time(), os.urandom)
    before = len(auth.outbox.sent)
    auth.service._on_message(TOPICS.authz_request("web1"), pending.payload)
    assert len(auth.outbox.sent) == before
    assert auth.service.live.find("web1", SID[2], time.time()) is None
