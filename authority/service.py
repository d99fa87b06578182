"""The authority as a service: answers grant requests over MQTT."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tether import auditq, authz, grants
from tether.authority.activations import Activations, PendingStore, enrol
from tether.authority.audit import AuditLog
from tether.authority.bulletin import BulletinKeeper
from tether.authority.live import MAX_LISTED, LiveSession, LiveTable
from tether.authority.nonces import NonceJournal
from tether.authority.policy import (
    WATCH_ACTIONS,
    Policy,
    PolicyError,
    Request,
    UnsafePolicyFile,
    access,
    deciding_allow,
    evaluate,
    user_groups,
)
from tether.authority.provision import commit
from tether.authority.registry import Principal, Registry
from tether.authority.requests import request_problem
from tether.authz import rotation_message
from tether.edge.home import Home
from tether.edge.keys import Identity, KeyFileError
from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.edge.watch import FileWatch, poll
from tether.encoding import b64d, b64e, dumps
from tether.errors import TetherError
from tether.limits import AUTHORITY_REQUEST_BURST, AUTHORITY_REQUEST_RATE
from tether.ratelimit import RateLimiter
from tether.skew import MAX_SKEW
from tether.topics import Topics, principal_of_slot

log = logging.getLogger("tether.authority")
GRANT_LIFETIME = 300.0
APPROVAL_POLL = 1.0
# Requests per principal (all its broker slots), counted before anything is opened.
REQUEST_RATE = AUTHORITY_REQUEST_RATE
REQUEST_BURST = AUTHORITY_REQUEST_BURST
RATE_KEYS = 4096  # principals tracked; the least recently heard is forgotten first
DROP_LOG_INTERVAL = 60.0  # log a principal's dropped requests at most this often
MAX_ENROL_BYTES = 16 * 1024  # a sealed enrolment request is well under 2 KiB
# The sessions in one answer to `sessions`, as JSON: with the envelope, well under the
# brokers' packet cap (edge/mqtt.MAX_PAYLOAD) whatever the agents reported.
MAX_SESSIONS_REPLY_BYTES = 96 * 1024
# Modes whose sessions can outlive their client (the grant's detach_timeout).
DETACHABLE = ("shell", "exec")
# What others may do with a live session of each mode (as agents support it): a command's
# output can be watched, but only a shell takes a second writer.
_ACTIONS_ON: dict[str, tuple[str, ...]] = {"shell": WATCH_ACTIONS, "exec": ("watch",)}


class AuthorityStateError(TetherError):
    """The authority's own state files cannot be used."""


@dataclass
class AuthorityService:
    identity: Identity
    home: Home
    topics: Topics = field(default_factory=Topics)
    # Called after principals change (an agent enrolled), e.g. to reload an embedded broker.
    on_principals_changed: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._registry_watch = FileWatch(self.home.registry)
        self._policy_watch = FileWatch(self.home.policy)
        self.registry = Registry(self.home.registry)
        self.policy = Policy()
        self.conn: MqttConnection | None = None
        self.decisions = 0
        self.policy_error: str | None = None
        self.registry_error: str | None = None
        self._approvals: asyncio.Task[None] | None = None
        self._pending_watch = FileWatch(self.home.pending_enrolments)
        self.bulletin = BulletinKeeper(self.identity, self.home, self.topics)
        self.audit = AuditLog(self.home.root / "authority" / "audit.jsonl", self.identity.signing_key)
        self.nonces: NonceJournal | None = None
        self.limiter = RateLimiter(REQUEST_RATE, REQUEST_BURST, RATE_KEYS)
        self._drop_log = RateLimiter(1 / DROP_LOG_INTERVAL, 1, RATE_KEYS)
        self.live = LiveTable()

    def _refresh(self) -> None:
        """Pick up registry and policy edits without a restart; each request re-checks
        both files, so one made writable by others stops being used at once."""
        if self._registry_watch.changed():
            self._load_registry()
        if self._policy_watch.changed():
            self._load_policy()

    def _load_registry(self) -> None:
        try:
            self.registry = Registry.load(self.home.registry)
            self.registry_error = None
        except (KeyFileError, ValueError, TypeError, KeyError) as exc:
            # The last good registry still names senders, so each gets a clear denial.
            log.error("registry not used; denying every request until it is fixed: %s", exc)
            self.registry_error = f"the authority's registry cannot be used: {exc}"

    def _load_policy(self) -> None:
        try:
            self.policy = Policy.load(self.home.policy)
            self.policy_error = None
        except UnsafePolicyFile as exc:
            log.error("policy not used; denying every request until it is fixed: %s", exc)
            self.policy = Policy()
            self.policy_error = f"the access policy {exc.source} is {exc.problems[0].message}"
        except PolicyError as exc:
            log.error("policy not loaded; denying every request until it is fixed:\n%s", exc)
            self.policy = Policy()
            self.policy_error = ("the access policy is invalid; ask an administrator "
                                 "to run `tether policy validate`")

    def _recorder(self) -> Principal | None:
        """The recorder that grants name: the registered one (the first by name, if several)."""
        recorders = sorted((p for p in self.registry.principals.values()
                            if p.kind == "recorder" and p.x25519), key=lambda p: p.name)
        return recorders[0] if recorders else None

    async def start(self) -> None:
        path = self.home.root / "authority" / "nonces.jsonl"
        try:
            self.nonces = NonceJournal(path, time.time())
        except KeyFileError as exc:
            raise AuthorityStateError(f"the authority's record of answered requests: {exc}") from None
        settings = BrokerSettings.from_identity(self.identity.name, self.identity.broker)
        self.conn = MqttConnection(settings, self._on_message, clean_session=False)
        self.conn.subscribe(self.topics.authz_requests(), 1)
        self.conn.subscribe(self.topics.enrol_requests(), 1)
        self._approvals = asyncio.get_running_loop().create_task(
            poll(APPROVAL_POLL, self.check_approvals, log, "approval check"))
        self.bulletin.start(self.conn)
        await self.conn.connect()

    async def stop(self) -> None:
        if self._approvals is not None:
            self._approvals.cancel()
        self.bulletin.stop()
        if self.conn is not None:
            await self.conn.close()
        if self.nonces is not None:
            self.nonces.close()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.bulletin():
            self.bulletin.on_bulletin(payload)
            return
        mqtt_name = topic.rsplit("/", 1)[-1]
        now = time.time()
        if not self._admitted(mqtt_name):  # first: before any unsealing or signature check
            return
        if topic == self.topics.enrol_request(mqtt_name):
            if len(payload) > MAX_ENROL_BYTES:
                log.warning("dropped an enrolment request of %d bytes via %r (limit %d)",
                            len(payload), mqtt_name, MAX_ENROL_BYTES)
                return
            self._on_enrol(mqtt_name, payload, now)
            return
        request = self._open_request(mqtt_name, payload, now)
        if request is None:
            return
        principal, req = request
        if req.get("type") == "live":  # frequent, and decides nothing: never audited
            self._reply(mqtt_name, req, self._on_live(principal, req, now))
            return
        problem = request_problem(req)
        if problem is not None:  # nothing from the request is logged or audited but its sender
            log.warning("refused a malformed request from %s: %s", principal.name, problem)
            self.audit.append("request-refused", user=principal.name, why=problem)
            self._reply(mqtt_name, req, {"ok": False, "error": f"refused: {problem}"})
            return
        if req["type"] == "terminate":  # not a grant decision: answered here
            answer = self._decide(principal.name, mqtt_name, req, now)
            self.audit.append("session-terminate" if answer.get("ok") else "terminate-denied",
                              user=principal.name, agent=req.get("agent"), sid=req.get("sid"),
                              why=answer.get("error"))
            self._reply(mqtt_name, req, answer)
            return
        reply = self._decide(principal.name, mqtt_name, req, now)
        if req["type"] not in ("access", "sessions"):  # questions that change nothing are not audited
            self._audit_decision(principal.name, req, reply, now)
        self.decisions += 1
        self._reply(mqtt_name, req, reply)

    def _admitted(self, mqtt_name: str) -> bool:
        """Whether the principal behind this broker username may be heard now (its rate)."""
        key = principal_of_slot(mqtt_name)
        now = time.monotonic()
        if self.limiter.allow(key, now):
            return True
        if self._drop_log.allow(key, now):
            log.warning("dropping requests from %r: more than %d at once or %g a second "
                        "(%d dropped from all senders so far)", key, REQUEST_BURST,
                        REQUEST_RATE, self.limiter.dropped)
        return False

    def _open_request(self, mqtt_name: str, payload: bytes,
                      now: float) -> tuple[Principal, dict[str, Any]] | None:
        """The sender and its signed request, once only; None (logged) if it is not one."""
        try:
            claimed, blob = authz.open_request_envelope(self.identity.x25519_secret or b"", payload)
        except authz.AuthzError as exc:
            log.warning("dropped request via %r: %s", mqtt_name, exc)
            return None
        self._refresh()
        self.bulletin.refresh()
        principal = (self.registry.principal_for_mqtt(mqtt_name)
                     or self.bulletin.revoked_sender(self.registry, claimed, mqtt_name))
        if principal is None or principal.name != claimed or principal.kind not in ("user", "admin", "agent"):
            log.warning("dropped request via %r: sender does not match %r", mqtt_name, claimed)
            return None
        try:
            req = authz.verify_request(b64d(principal.ed25519), blob, now)
        except authz.AuthzError as exc:
            log.warning("dropped request from %s: %s", claimed, exc)
            return None
        assert self.nonces is not None
        refusal = self.nonces.remember(str(req["nonce"]), float(req["ts"]) + MAX_SKEW, now)
        if refusal == "replayed":
            log.warning("dropped replayed request from %s", claimed)
            return None
        if refusal is not None:
            log.warning("refused a request from %s: %s", claimed, refusal)
            self._reply(mqtt_name, req, {"ok": False, "error": "the authority is answering too "
                                         "many requests; try again in a few minutes"})
            return None
        return principal, req

    def _reply(self, mqtt_name: str, req: dict[str, Any], answer: dict[str, Any]) -> None:
        assert self.conn is not None
        self.conn.publish(self.topics.authz_reply(mqtt_name), authz.build_reply(
            self.identity.signing_key, req, answer, os.urandom), qos=1)

    def _on_enrol(self, activation_id: str, payload: bytes, now: float,
                  approved: bool = False) -> None:
        self._refresh()
        if self.registry_error:
            log.error("enrolment via %r not answered: %s", activation_id, self.registry_error)
            return
        store = Activations.load(self.home.activations)
        pending = PendingStore.load(self.home.pending_enrolments)
        reply, fields = enrol(store, self.registry, self.identity, activation_id, payload, now,
                              pending, approved)
        if fields.get("pending"):
            pending.save()
            self.audit.append("enrol-pending", **fields)
            log.info("enrolment of %s waits for approval", fields.get("agent"))
        elif fields.get("why"):
            log.warning("refused enrolment via %s: %s", activation_id, fields["why"])
            self.audit.append("enrol-refused", **fields)
        else:
            store.save()
            commit(self.home, self.registry)
            self.audit.append("enrolled", **fields)
            log.info("enrolled agent %s via %s", fields.get("agent"), activation_id)
            if self.on_principals_changed is not None:
                self.on_principals_changed()
        if reply is not None and self.conn is not None:
            self.conn.publish(self.topics.enrol_reply(activation_id), reply, qos=1)

    def check_approvals(self) -> None:
        """Finish the enrolments an administrator has approved since the last look."""
        if not self._pending_watch.changed() or self._pending_watch.version is None:
            return
        pending = PendingStore.load(self.home.pending_enrolments)
        done = [p for p in pending.items.values() if p.approved]
        for item in done:
            del pending.items[item.name]
        if done:
            pending.save()
            self._pending_watch.forget()
        for item in done:
            self._on_enrol(item.activation, b64d(item.payload), time.time(), approved=True)

    def _audit_decision(self, user: str, req: dict[str, Any], reply: dict[str, Any],
                        now: float) -> None:
        """Written (and fsync'd) before the reply goes out: no unrecorded grants. Only
        fields request_problem checked for this type are written."""
        kind = str(req.get("type"))
        if kind != "grant":  # rotate
            event = kind if reply.get("ok") else f"{kind}-refused"
            self.audit.append(event, user=user, why=reply.get("error"), new_key=req.get("new_key"))
            return
        common = {"user": user, "agent": req.get("agent"), "mode": req.get("mode"),
                  "reason": req.get("reason"), "command": req.get("command"),
                  "sid": req.get("attach")}
        if req.get("mode") in grants.ATTACH_MODES:  # whose session is watched or joined
            target = self.live.find(str(req["agent"]), str(req["attach"]), now)
            common["session_user"] = target.user if target is not None else None
        if not reply.get("ok"):
            self.audit.append("grant-denied", **common, why=reply.get("error"))
            return
        grant = grants.decode(self.identity.public_key, str(reply["grant"]))
        self.audit.append("grant-issued", **common, run_as=grant.run_as, jti=grant.jti,
                          expires=grant.expires, max_duration=grant.max_duration,
                          moderator=True if grant.moderator else None,
                          require_moderator=grant.moderators if grant.require_moderator else None)

    def _rotate(self, user: str, req: dict[str, Any]) -> dict[str, Any]:
        """A new key for `user`: the request is signed by the old key (checked already) and
        carries a signature by the new one, so both keys agree to the change."""
        principal = self.registry.principals[user]
        try:
            new_key = b64d(str(req["new_key"]))
            new_x = b64d(str(req["new_x25519"])) if principal.kind == "agent" else b""
            if principal.kind == "agent" and len(new_x) != 32:
                raise ValueError("an agent rotates its X25519 key too")
            VerifyKey(new_key).verify(rotation_message(b64d(principal.ed25519), new_key, new_x),
                                      b64d(str(req["new_sig"])))
        except (KeyError, ValueError, BadSignatureError):
            return {"ok": False, "error": "the new key did not sign the rotation"}
        principal.ed25519 = b64e(new_key)
        if new_x:
            principal.x25519 = b64e(new_x)
        self.registry.save()
        self._registry_watch.forget()  # re-read on the next request
        log.info("rotated the key of %s", user)
        return {"ok": True}

    def _decide(self, user: str, mqtt_name: str, req: dict[str, Any], now: float) -> dict[str, Any]:
        kind = req.get("type")
        if self.registry_error:
            return {"ok": False, "error": f"denied: {self.registry_error}"}
        if user in self.bulletin.revocations.users:
            return {"ok": False, "error": f"denied: user {user!r} has been revoked"}
        if kind == "terminate":
            return self.bulletin.terminate(self.registry.principals[user], self.policy, self.registry,
                                           req, now)
        if kind == "rotate":
            return self._rotate(user, req)
        if self.registry.principals[user].kind == "agent":
            return {"ok": False, "error": "agents may only rotate their keys"}
        if kind == "access":
            return self._access(user, req, now)
        if kind == "sessions":
            return self._sessions(user, req, now)
        if req["mode"] == auditq.MODE:
            return self._decide_audit(user, mqtt_name, req, now)
        return self._decide_session(user, mqtt_name, req, now)

    def _decide_session(self, user: str, mqtt_name: str, req: dict[str, Any],
                        now: float) -> dict[str, Any]:
        """A session grant; every field was checked by request_problem: an exec request's
        command is its exact argv, which the policy judges and the grant binds."""
        agent_name: str = req["agent"]
        mode: str = req["mode"]
        agent = self.registry.principals.get(agent_name)
        revoked_agent = self.bulletin.revocations.agent_refusal(agent_name, agent.ed25519 if agent else None)
        if revoked_agent:
            return {"ok": False, "error": f"denied: {revoked_agent}"}
        if agent is None or agent.kind != "agent":
            return {"ok": False, "error": f"unknown agent {agent_name!r}; `tether ls` lists the agents"}
        if self.policy_error:
            return {"ok": False, "error": f"denied: {self.policy_error}"}
        revoked = self.bulletin.grant_denial(user, self.registry.principals[user].ed25519,
                                             agent_name, agent.ed25519)
        if revoked:
            return {"ok": False, "error": revoked}
        run_as: str | None = req.get("run_as") or None
        attach: str | None = req.get("attach")
        live: LiveSession | None = None
        if attach is not None:  # a takeover of one's own shell, or a watch or join
            live = self.live.find(agent_name, attach, now)
            refusal = (_target_refusal(live, mode, agent_name, attach, run_as) if mode in WATCH_ACTIONS
                       else _attach_refusal(live, user, agent_name, attach, run_as))
            if refusal:
                return {"ok": False, "error": refusal}
            assert live is not None
            # Decided afresh as the session's run-as user: rights revoked since are not
            # regained by attaching, and watch/join statements choose sessions by it.
            run_as = live.run_as
        argv: list[str] | None = req.get("command")
        reason: str | None = req.get("reason")
        decision = evaluate(self.policy, Request(
            user=user, groups=self.registry.principals[user].groups,
            agent=agent_name, agent_labels=agent.labels, action=mode,
            run_as=run_as, command=argv, reason=reason,
            now=datetime.fromtimestamp(now, UTC),
            active_sessions=0,  # the agent enforces max_sessions, which the grant carries
        ))
        # "off": the statement wants these sessions unrecorded (e.g. bulk transfers).
        recorder = self._recorder() if decision.recording != "off" else None
        if decision.allowed and decision.recording == "required" and recorder is None:
            decision.allowed = False
            decision.reason = (f"policy {decision.statement_label} requires recording, and no "
                               "recorder is registered (an administrator adds one with `tether authority recorder add`)")
        if not decision.allowed:
            log.info("denied %s %s on %s: %s", user, mode, agent_name, decision.reason)
            return {"ok": False, "error": f"denied: {decision.reason}"}
        # A new shell (not a takeover of a running one) waits for a moderator if its
        # statement says so.
        require_moderator = mode == "shell" and attach is None and bool(decision.require_moderator)
        grant = grants.Grant(
            user=user,
            agent=agent_name,
            agent_key=agent.ed25519,
            client_key=self.registry.principals[user].ed25519,
            mqtt_name=mqtt_name,
            mode=mode,
            run_as=decision.run_as,
            command=argv,  # bound, so the agent runs exactly what the policy allowed
            max_duration=decision.max_duration,
            idle_timeout=decision.idle_timeout,
            recording=decision.recording if recorder is not None else "off",
            recorder=recorder.name if recorder is not None else None,
            recorder_x25519=recorder.x25519 if recorder is not None else None,
            recorder_ed25519=recorder.ed25519 if recorder is not None else None,
            reason=reason,
            jti=grants.new_jti(os.urandom),
            expires=now + GRANT_LIFETIME,
            max_sessions=decision.max_sessions,
            detach_timeout=decision.detach_timeout if mode in DETACHABLE else 0,
            attach=attach,
            moderator=(mode == "watch" and live is not None
                       and self._is_moderator(user, agent_name, agent, live, now)),
            require_moderator=require_moderator,
            moderators=list(decision.require_moderator) if require_moderator else None,
        )
        try:
            token = grants.issue(self.identity.signing_seed, grant, now)
        except grants.GrantError as exc:
            return {"ok": False, "error": f"denied: {exc}"}
        log.info("granted %s %s on %s as %s%s%s", user, mode, agent_name, decision.run_as,
                 f" (attach {attach})" if attach else "", " as a moderator" if grant.moderator else "")
        return {"ok": True, "grant": token, "agent": {"name": agent_name, "ed25519": agent.ed25519,
                                                     "x25519": agent.x25519}}

    def _on_live(self, principal: Principal, req: dict[str, Any], now: float) -> dict[str, Any]:
        """An agent's report of its live sessions (authority/live.py): replaces its list."""
        if principal.kind != "agent":
            log.warning("refused a live report from %s, which is not an agent", principal.name)
            return {"ok": False, "error": "refused: only agents report live sessions"}
        problem = request_problem(req)
        if problem is not None:
            log.warning("refused a malformed live report from %s: %s", principal.name, problem)
            return {"ok": False, "error": f"refused: {problem}"}
        if self.registry_error:
            return {"ok": False, "error": f"denied: {self.registry_error}"}
        revoked = self.bulletin.revocations.agent_refusal(principal.name, principal.ed25519)
        if revoked:
            self.live.forget(principal.name)
            return {"ok": False, "error": f"denied: {revoked}"}
        sessions = [LiveSession.from_json(entry) for entry in req["sessions"]]
        if not self.live.report(principal.name, float(req["boot"]), sessions, now):
            log.warning("ignored a live report from %s of an older boot than one it has sent "
                        "(is an earlier process of it still running?)", principal.name)
        return {"ok": True}

    def _is_moderator(self, user: str, agent_name: str, agent: Principal, session: LiveSession,
                      now: float) -> bool:
        """Whether `user` is a moderator of `session`: in a require_moderator group of the
        allow statement that decides the session. That statement is found by deciding the
        session again as its owner would have asked: a shell as its run-as user, at its
        start time (the time window it was granted in), with a reason (one was given if it
        was needed), deny statements aside (they do not choose the limits). Only shells
        wait for moderators, and no one moderates their own session (four eyes, not two)."""
        if session.mode != "shell" or session.user == user:
            return False
        owner = self.registry.principals.get(session.user)
        try:
            started = datetime.fromtimestamp(session.started, UTC)
        except (OverflowError, OSError, ValueError):  # a start time past any calendar
            started = datetime.fromtimestamp(now, UTC)
        deciding = deciding_allow(self.policy, Request(
            user=session.user, groups=owner.groups if owner is not None else (),
            agent=agent_name, agent_labels=agent.labels, action="shell", run_as=session.run_as,
            reason="(given)", now=started))
        if deciding is None or not deciding.require_moderator:
            return False
        mine = user_groups(self.policy, user, self.registry.principals[user].groups)
        return any(fnmatch.fnmatchcase(group, pattern)
                   for pattern in deciding.require_moderator for group in mine)

    def _sessions(self, user: str, req: dict[str, Any], now: float) -> dict[str, Any]:
        """The live sessions the caller may do something with, newest first: its own (a
        shell can be attached), and anyone's the policy lets it watch or join (by the
        session's agent and run-as user). Changes nothing and issues nothing: each action
        is decided by its own grant request."""
        wanted: str | None = req.get("agent")
        agents: dict[str, Principal] = {}
        for name in [wanted] if wanted is not None else self.live.agents(now):
            agent = self.registry.principals.get(name)
            if (agent is not None and agent.kind == "agent"
                    and not self.bulletin.revocations.agent_refusal(name, agent.ed25519)):
                agents[name] = agent
        principal = self.registry.principals[user]
        when = datetime.fromtimestamp(now, UTC)
        decided: dict[tuple[str, str, str], bool] = {}  # one evaluation per agent, run-as, action

        def may(action: str, name: str, run_as: str) -> bool:
            key = (action, name, run_as)
            if key not in decided:
                agent = agents[name]
                # A reason is assumed given, as a grant request can carry one: the listing
                # shows what the user can ask for, the request is decided on its own.
                decided[key] = (not self.policy_error
                                and not self.bulletin.grant_denial(user, principal.ed25519, name,
                                                                   agent.ed25519)
                                and evaluate(self.policy, Request(
                                    user=user, groups=principal.groups, agent=name,
                                    agent_labels=agent.labels, action=action, run_as=run_as,
                                    reason="(given)", now=when)).allowed)
            return decided[key]

        listed: list[tuple[str, LiveSession, list[str]]] = []
        for name, session in self.live.on_agents(agents, now):
            actions = ["attach"] if session.user == user and session.mode == "shell" else []
            actions += [a for a in _ACTIONS_ON.get(session.mode, ()) if may(a, name, session.run_as)]
            if session.user != user and not actions:
                continue  # someone else's session the caller may not touch: not shown
            listed.append((name, session, actions))
            if len(listed) > MAX_LISTED:
                break  # one past the cap: enough to say there are more
        out: list[dict[str, Any]] = []
        size = 0
        for name, session, actions in listed[:MAX_LISTED]:
            entry = dict(session.to_json(), agent=name, actions=actions)
            size += len(dumps(entry)) + 1
            if size > MAX_SESSIONS_REPLY_BYTES:
                break
            out.append(entry)
        answer: dict[str, Any] = {"ok": True, "sessions": out}
        if len(out) < len(listed):
            answer["more"] = True  # left out: the oldest
        return answer

    def _access(self, user: str, req: dict[str, Any], now: float) -> dict[str, Any]:
        """The run-as choices the policy gives `user` on each agent asked about (the
        console's run-as menu; protocol.md §6.2). Changes nothing and issues nothing."""
        names: list[str] = req["agents"]
        mode: str = req.get("mode") or "shell"
        if self.policy_error:
            return {"ok": False, "error": f"denied: {self.policy_error}"}
        principal = self.registry.principals[user]
        out: dict[str, Any] = {}
        for name in names:
            agent = self.registry.principals.get(name)
            if agent is None or agent.kind != "agent":
                continue
            refusal = (self.bulletin.revocations.agent_refusal(name, agent.ed25519)
                       or self.bulletin.grant_denial(user, principal.ed25519, name, agent.ed25519))
            if refusal:
                out[name] = {"allowed": False, "why": refusal, "default": "", "run_as": [], "other": False}
                continue
            out[name] = access(self.policy, Request(
                user=user, groups=principal.groups, agent=name, agent_labels=agent.labels,
                action=mode, now=datetime.fromtimestamp(now, UTC))).to_json()
        return {"ok": True, "access": out}

    def _decide_audit(self, user: str, mqtt_name: str, req: dict[str, Any],
                      now: float) -> dict[str, Any]:
        """An audit grant: its audience is a recorder, which answers queries over its
        recordings (docs/protocol.md §13) after checking the grant offline."""
        name = req.get("agent")
        recorder = (self.registry.principals.get(str(name)) if name else self._recorder())
        if recorder is None or recorder.kind != "recorder" or not recorder.x25519:
            return {"ok": False, "error": (f"unknown recorder {name!r}" if name else
                                           "no recorder is registered, so there is nothing to audit")}
        if self.policy_error:
            return {"ok": False, "error": f"denied: {self.policy_error}"}
        principal = self.registry.principals[user]
        revoked = self.bulletin.grant_denial(user, principal.ed25519, recorder.name, recorder.ed25519)
        if revoked:
            return {"ok": False, "error": revoked}
        reason: str | None = req.get("reason")
        decision = evaluate(self.policy, Request(
            user=user, groups=principal.groups, agent=recorder.name, agent_labels=recorder.labels,
            action="audit", run_as=None, command=None, reason=reason,
            now=datetime.fromtimestamp(now, UTC), active_sessions=0,
        ))
        if not decision.allowed:
            log.info("denied %s audit on %s: %s", user, recorder.name, decision.reason)
            return {"ok": False, "error": f"denied: {decision.reason}"}
        grant = grants.Grant(
            user=user, agent=recorder.name, agent_key=recorder.ed25519,
            client_key=principal.ed25519, mqtt_name=mqtt_name, mode=auditq.MODE, run_as="",
            command=None, max_duration=decision.max_duration, idle_timeout=decision.idle_timeout,
            recording="off", recorder=None, reason=reason, jti=grants.new_jti(os.urandom),
            expires=now + GRANT_LIFETIME,
        )
        token = grants.issue(self.identity.signing_seed, grant, now)
        log.info("granted %s audit on %s", user, recorder.name)
        return {"ok": True, "grant": token, "agent": {"name": recorder.name,
                                                     "ed25519": recorder.ed25519,
                                                     "x25519": recorder.x25519}}


def _target_refusal(live: LiveSession | None, mode: str, agent: str, sid: str,
                    run_as: str | None) -> str | None:
    """Why session `sid` on `agent` cannot be watched or joined as the live table knows it
    (whether the policy lets this user do it is decided next)."""
    if live is None:
        return f"no live session {sid} on agent {agent}: it ended, or the agent has not reported it yet"
    if mode not in _ACTIONS_ON.get(live.mode, ()):
        return f"only shell sessions can be joined; session {sid} on {agent} runs a command (watch it instead)"
    if run_as is not None and run_as != live.run_as:
        return f"session {sid} on {agent} runs as {live.run_as!r}, not {run_as!r}"
    return None


def _attach_refusal(live: LiveSession | None, user: str, agent: str, sid: str,
                    run_as: str | None) -> str | None:
    """Why `user` cannot attach to session `sid` on `agent` as the live table knows it."""
    if live is None:
        return f"no live session {sid} on agent {agent}: it ended, or the agent has not reported it yet"
    if live.user != user:
        return f"session {sid} on {agent} is not yours"
    if live.mode != "shell":
        return "only shell sessions can be attached"
    if run_as is not None and run_as != live.run_as:
        return f"session {sid} on {agent} runs as {live.run_as!r}, not {run_as!r}"
    return None
