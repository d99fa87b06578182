"""The agent service: presence, handshakes, grant checks, and its live sessions."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tether import grants
from tether.agent.kinds import KINDS
from tether.agent.live_report import LiveReporter
from tether.agent.process import SpawnError, resolve_run_as
from tether.agent.recording_link import OPEN_TIMEOUT, RecordingLink
from tether.agent.replay_state import ReplayState, ReplayStateError
from tether.agent.request import RequestError, SessionRequest, parse_request
from tether.agent.session import DEFAULT_CLIENT_TIMEOUT, AgentSession
from tether.display import safe
from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerSettings, MqttConnection, Will
from tether.encoding import b64d
from tether.handshake import (
    AgentHandshake,
    HandshakeError,
    HelloRejected,
    HsType,
    PendingSession,
    SessionKeys,
    message_type,
)
from tether.presence import HEARTBEAT, presence_document, status_document
from tether.ratelimit import RateLimiter
from tether.recording import RecordingSender, session_body
from tether.revocation import BulletinTracker, Revocations
from tether.topics import A2C, RACK, REC, Topics

log = logging.getLogger("tether.agent")
PENDING_TIMEOUT = 30.0
CLIENT_HANDSHAKE_WAIT = 10.0  # tether.client.session.HANDSHAKE_TIMEOUT
MAX_EARLY_FRAMES = 64
CAPABILITIES = list(KINDS)  # the session kinds this agent runs (agent/kinds.py)
# HELLOs per client connection (the slot in the topic), checked before any crypto: one
# connection starts one session at a time, so this is far above honest use and far below
# what would slow the agent down for everyone else.
HELLO_RATE = 10.0  # per second, after a burst of
HELLO_BURST = 20
HELLO_SLOTS = 4096  # connections tracked at once
DROP_LOG_INTERVAL = 10.0  # seconds between log lines about dropped HELLOs


@dataclass
class _Pending:
    handshake: PendingSession
    grant: grants.Grant
    request: SessionRequest
    topic_out: str
    expires: float
    early: list[bytes] = field(default_factory=list)
    recording: RecordingLink | None = None
    waiting_for_recorder: asyncio.TimerHandle | None = None
    attach: str | None = None  # the sid of the live session this handshake takes over


@dataclass
class AgentService:
    identity: Identity
    topics: Topics = field(default_factory=Topics)
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    replay_file: Path | None = None  # where used grants and HELLOs are kept across restarts

    def __post_init__(self) -> None:
        ident = self.identity
        self.name = ident.name
        self.boot = time.time()  # in every status: readers tell a restart from a resume
        self.replay = ReplayState.load(self.replay_file, time.time())
        self._hs = AgentHandshake(ident.signing_key, ident.x25519_secret or b"",
                                  seen=self.replay.hellos, rand=os.urandom)
        self._checker = grants.GrantChecker(
            b64d(ident.authority["ed25519"]), ident.name, ident.public_key,
            used=self.replay.grants,
        )
        self._hello_limit = RateLimiter(HELLO_RATE, HELLO_BURST, HELLO_SLOTS)
        self._drop_log = RateLimiter(1 / DROP_LOG_INTERVAL, 1, 1)
        self.sessions: dict[tuple[str, str], AgentSession] = {}
        # Watchers' and joiners' handshakes, by (client, sid): the session they read.
        self.readers: dict[tuple[str, str], AgentSession] = {}
        self._reader_grants: dict[tuple[str, str], grants.Grant] = {}
        self.bulletin = BulletinTracker(b64d(ident.authority["ed25519"]))
        self._pending: dict[tuple[str, str], _Pending] = {}
        # Recorder streams by (client, sid); they outlive their sessions until the end is acked.
        self.recordings: dict[tuple[str, str], RecordingLink] = {}
        self.stats: Counter[str] = Counter()
        self.conn: MqttConnection | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.live: LiveReporter | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def _presence(self, online: bool) -> bytes:
        return presence_document(
            self.identity.signing_key, self.name, self.identity.x25519_public,
            self.identity.labels, online, time.time(), CAPABILITIES,
        )

    async def start(self) -> None:
        settings = BrokerSettings.from_identity(self.name, self.identity.broker)
        will = Will(self.topics.status(self.name),
                    status_document(self.identity.signing_key, False, time.time(), self.boot))
        self.conn = MqttConnection(settings, self._on_message, clean_session=False, will=will)
        self.conn.on_connected.append(self._on_connected)
        self.conn.subscribe(self.topics.handshake_inbox(self.name), 1)
        self.conn.subscribe(self.topics.agent_sessions_c2a(self.name), 1)
        self.conn.subscribe(self.topics.agent_recorder_acks(self.name), 1)
        self.conn.subscribe(self.topics.bulletin(), 1)
        self.live = LiveReporter(self.identity, self.conn, self.topics, self.boot,
                                 lambda: list(self.sessions.values()))
        await self.conn.connect()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        self.live.start()

    def _on_connected(self) -> None:
        assert self.conn is not None
        self.conn.publish(self.topics.presence(self.name), self._presence(True), qos=1, retain=True)
        self.conn.publish(self.topics.status(self.name),
                          status_document(self.identity.signing_key, True, time.time(), self.boot), qos=1, retain=True)
        for session in self.sessions.values():
            session.on_reconnect()
        for link in self.recordings.values():
            link.on_reconnect()
        if self.live is not None:
            self.live.changed()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if self.conn is not None and self.conn.connected:
                self.conn.publish(self.topics.presence(self.name), self._presence(True), qos=1, retain=True)

    async def stop(self) -> None:
        """Clean shutdown: end sessions, then say offline (the will is not sent)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.live is not None:
            self.live.stop()
        for session in list(self.sessions.values()):
            session.terminate()
        deadline = time.monotonic() + 5
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions.values()):
            session.close_resources()
        if self.conn is not None:
            self.conn.publish(self.topics.status(self.name),
                              status_document(self.identity.signing_key, False, time.time(), self.boot), qos=1, retain=True)
            self.conn.publish(self.topics.presence(self.name), self._presence(False), qos=1, retain=True)
            await self.conn.close()

    # ----- messages -----

    def _on_message(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse_session(topic)
        if parsed is not None:
            agent, client, sid, leg = parsed
            if agent != self.name:
                return
            if leg == RACK:
                link = self.recordings.get((client, sid))
                if link is not None:
                    link.on_message(payload)
                    if link.closed:
                        del self.recordings[(client, sid)]
            elif leg not in (A2C, REC):
                self._on_session_datagram(client, sid, payload)
            return
        hs = self.topics.parse_handshake(topic)
        if hs is not None and hs[0] == self.name:
            self._on_hello(hs[1], payload)
        elif topic == self.topics.bulletin():
            self._on_bulletin(payload)

    def _on_bulletin(self, payload: bytes) -> None:
        """Apply a newer authentic revocation bulletin; forged or stale ones do nothing."""
        bulletin = self.bulletin.offer(payload)
        if bulletin is None:
            self.stats["bulletin_ignored"] += 1
            log.info("ignored a revocation bulletin that is forged, malformed or not newer")
            return
        log.info("revocation bulletin %d applied", bulletin.serial)
        now = time.time()
        for (client, sid), session in list(self.sessions.items()):
            why = self._revoked(bulletin, session.grant)
            # The session's own id, whatever handshake its current client came by.
            order = (bulletin.terminates(self.name, session.sid, now)
                     or bulletin.terminates(self.name, sid, now))
            if order is not None:
                why = f"session terminated by {order.get('by', 'an administrator')}"
            if why is not None:
                log.warning("closing session %s of %s: %s", sid, client, why)
                self.stats["revoked_sessions"] += 1
                session.end_with_notice(f"session closed: {why}")
        for key in [k for k, p in self._pending.items() if self._revoked(bulletin, p.grant)]:
            del self._pending[key]
        for key, grant in list(self._reader_grants.items()):
            why = self._revoked(bulletin, grant)
            reader = self.readers.get(key)
            if why is not None and reader is not None:
                log.warning("dropping %s of %s from session %s: %s", grant.mode, key[0], reader.sid, why)
                reader.remove_reader("/".join(key), f"revoked: {why}")

    def _revoked(self, bulletin: Revocations, grant: grants.Grant) -> str | None:
        return bulletin.grant_refusal(grant.user, grant.jti, grant.client_key)

    def _refuse(self, topic_out: str, message: bytes, reason: str) -> None:
        log.warning("refused session on %s: %s", topic_out, reason)
        self.stats["refused"] += 1
        assert self.conn is not None
        self.conn.publish(topic_out, message, qos=1)

    def _hello_allowed(self, client: str) -> bool:
        now = time.monotonic()
        if self._hello_limit.allow(client, now):
            return True
        self.stats["hello_rate_limited"] += 1
        if self._drop_log.allow("", now):
            log.warning("dropping HELLOs from %s: more than %g per second (%d dropped so far "
                        "from all connections)", safe(client), HELLO_RATE,
                        self.stats["hello_rate_limited"])
        return False

    def _on_hello(self, client: str, msg: bytes) -> None:
        if not self._hello_allowed(client):
            return
        now = time.time()
        try:
            hello = self._hs.open_hello(msg, now)
        except HelloRejected as exc:
            self.stats["replayed_or_stale_hello"] += 1
            topic = self.topics.session(self.name, client, exc.hello.sid.hex(), A2C)
            self._refuse(topic, exc.hello.refuse(str(exc)), str(exc))
            return
        except HandshakeError as exc:
            self.stats["bad_hello"] += 1
            log.warning("dropped handshake from %s: %s", safe(client), exc)
            return
        sid = hello.sid.hex()
        topic_out = self.topics.session(self.name, client, sid, A2C)
        try:
            request = parse_request(hello.body)
            grant = self._checker.check(
                request.grant, client_key=hello.client_key, mqtt_name=client, now=now
            )
            target = self._attach_target(grant, request)
            if target is None:
                self._authorise(grant, request, now)
            elif grant.mode in ("watch", "join"):
                self._check_max_sessions(grant, now)  # a place of its own (an attach is not)
        except (RequestError, grants.GrantError, SpawnError) as exc:
            self._refuse(topic_out, hello.refuse(str(exc)), str(exc))
            return
        # An attach takes over a session whose recording goes on: no new one.
        recorded = _records(grant) if target is None else target.recording is not None
        extra = {"run_as": grant.run_as, "mode": grant.mode, "max_duration": grant.max_duration,
                 "recorded": recorded,
                 "detach_timeout": (grant if target is None else target.grant).detach_timeout}
        if target is not None:
            extra["attach"] = target.sid
            extra["moderator"] = grant.moderator
        pending = self._hs.accept(hello, extra)
        try:
            self.replay.save(now)  # before the ACCEPT: a restart must not take this HELLO again
        except ReplayStateError as exc:
            log.error("%s", exc)
            self._refuse(topic_out, hello.refuse(str(exc)), str(exc))
            return
        recording = (self._start_recording(client, hello.sid, grant, request)
                     if recorded and target is None else None)
        entry = _Pending(pending, grant, request, topic_out, now + PENDING_TIMEOUT,
                         recording=recording, attach=None if target is None else target.sid)
        self._pending[(client, sid)] = entry
        assert self.conn is not None
        if recording is not None and recording.required:
            # No session before the recorder has durably opened the recording.
            key = (client, sid)
            recording.on_opened = lambda refusal: self._recorder_answered(key, refusal)
            entry.waiting_for_recorder = asyncio.get_running_loop().call_later(
                OPEN_TIMEOUT, self._recorder_answered, key,
                f"recording is required by policy, but recorder {grant.recorder!r} did not answer "
                f"within {OPEN_TIMEOUT:.0f} s, so no session was started; ask an administrator "
                "to check that `tether recorder` is running")
        else:
            self.conn.publish(topic_out, pending.accept, qos=1)
        self._expire_pending(now)

    def _live_session(self, sid: str) -> AgentSession | None:
        return next((s for s in self.sessions.values() if s.sid == sid), None)

    def _attach_target(self, grant: grants.Grant, request: SessionRequest) -> AgentSession | None:
        """The live session this HELLO takes over, checked against its grant; None for a
        new session. Only the session's own user, with a fresh grant for exactly what the
        session is, may attach (docs/threat-model.md)."""
        if request.attach is None and grant.attach is None and grant.mode not in ("watch", "join"):
            return None
        if request.attach != grant.attach or grant.attach is None:
            raise grants.GrantError("the grant is for another session" if grant.attach
                                    else "the grant names no session to connect to")
        assert request.attach is not None
        session = self._live_session(request.attach)
        if session is None or session.ending:
            raise grants.GrantError(f"no live session {request.attach} on this agent: it has ended")
        if grant.run_as != session.grant.run_as:
            raise grants.GrantError("the grant does not match the session's run-as user")
        revoked = self._revoked(self.bulletin.current, grant)
        if revoked is not None:
            raise grants.GrantError(revoked)
        if grant.mode == "watch":
            return session  # anyone's, as the policy allowed: read-only
        if session.grant.mode != "shell":
            raise grants.GrantError("only shell sessions can be attached or joined")
        if grant.mode == "join":
            if grant.recording == "required" and session.recording is None:
                # What the joiner types would go unrecorded, against the joiner's policy.
                raise grants.GrantError("policy requires recording for you here, and this "
                                        "session is not recorded, so you cannot join it "
                                        "(watching it is not affected)")
            return session  # anyone's, as the policy allowed: a second writer
        if session.grant.user != grant.user:
            raise grants.GrantError(f"session {request.attach} is not yours")
        if grant.mode != session.grant.mode:
            raise grants.GrantError("the grant does not match the session's mode")
        return session

    def _authorise(self, grant: grants.Grant, request: SessionRequest, now: float) -> None:
        """Whether this agent may start what the grant allows, as the HELLO asks for it."""
        if request.mode != grant.mode:
            raise grants.GrantError(f"grant is for {grant.mode!r}, not {request.mode!r}")
        if grant.mode not in CAPABILITIES:
            raise grants.GrantError(f"this agent does not support {grant.mode!r} sessions")
        # The grant's argv is what runs (decoding refused an exec grant that binds none);
        # a HELLO naming another one is a client or broker that wants something else.
        if grant.mode == "exec" and request.command != grant.command:
            raise grants.GrantError("the command differs from the one in the grant")
        revoked = self._revoked(self.bulletin.current, grant)
        if revoked is not None:
            raise grants.GrantError(revoked)
        resolve_run_as(grant.run_as)
        self._check_max_sessions(grant, now)

    def _check_max_sessions(self, grant: grants.Grant, now: float) -> None:
        if grant.max_sessions is None:
            return
        # A session whose process has exited is only flushing its last frames.
        mine = sum(1 for s in self.sessions.values()
                   if s.grant.user == grant.user and not s.ending)
        # Watching or joining someone's session (docs/policy.md: max_sessions counts them).
        mine += sum(1 for key, s in self.readers.items()
                    if (g := self._reader_grants.get(key)) is not None and g.user == grant.user
                    and not s.ending and s.has_reader("/".join(key)))
        # A handshake the client gave up on (it waits 10 s) holds no place.
        fresh = now - PENDING_TIMEOUT + CLIENT_HANDSHAKE_WAIT
        mine += sum(1 for p in self._pending.values()
                    if p.grant.user == grant.user and p.expires > fresh)
        if mine >= grant.max_sessions:
            log.warning("max_sessions for %s: live %s, pending %s", grant.user,
                        [k[1][:8] for k, s in self.sessions.items()
                         if s.grant.user == grant.user and not s.ending],
                        [k[1][:8] for k, p in self._pending.items()
                         if p.grant.user == grant.user])
            raise grants.GrantError(
                f"user {grant.user!r} already has {mine} of {grant.max_sessions} "
                "allowed sessions on this agent")

    def _start_recording(self, client: str, sid: bytes, grant: grants.Grant,
                         request: SessionRequest) -> RecordingLink:
        assert self.conn is not None
        assert grant.recorder_x25519 is not None and grant.recorder_ed25519 is not None
        sender = RecordingSender(
            sid=sid, signing_key=self.identity.signing_key,
            recorder_x25519=b64d(grant.recorder_x25519), recorder_ed25519=b64d(grant.recorder_ed25519),
            body=session_body(sid=sid, grant_token=request.grant, agent=self.name,
                              client=client, cols=request.cols, rows=request.rows,
                              term=request.term, started=time.time()),
            now=time.monotonic(), rand=os.urandom, required=grant.recording == "required")
        link = RecordingLink(self.conn, self.topics.session(self.name, client, sid.hex(), REC),
                             sender, grant)
        self.recordings[(client, sid.hex())] = link
        link.flush()
        return link

    def _recorder_answered(self, key: tuple[str, str], refusal: str | None) -> None:
        entry = self._pending.get(key)
        if entry is None or entry.recording is None or entry.waiting_for_recorder is None:
            return
        entry.waiting_for_recorder.cancel()
        entry.waiting_for_recorder = None
        assert self.conn is not None
        if refusal is None and entry.recording.sender.opened:
            self.conn.publish(entry.topic_out, entry.handshake.accept, qos=1)
            return
        del self._pending[key]
        entry.recording.close()
        self.recordings.pop(key, None)
        if entry.recording.sender.refused is not None:
            refusal = f"the recorder refused to record this session: {entry.recording.sender.refused}"
        self._refuse(entry.topic_out, entry.handshake.hello.refuse(str(refusal)), str(refusal))

    def _expire_pending(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if p.expires < now]:
            entry = self._pending.pop(key)
            if entry.recording is not None:
                entry.recording.close()
                self.recordings.pop(key, None)
        for key in [k for k, link in self.recordings.items() if link.closed]:
            del self.recordings[key]

    def _on_session_datagram(self, client: str, sid: str, payload: bytes) -> None:
        key = (client, sid)
        session = self.sessions.get(key)
        if session is not None:
            session.on_datagram(payload)
            return
        reader = self.readers.get(key)
        if reader is not None:
            if reader.has_reader("/".join(key)):
                reader.on_reader_datagram("/".join(key), payload)
            else:  # it stopped watching, or its session ended
                del self.readers[key]
                self._reader_grants.pop(key, None)
            return
        pending = self._pending.get(key)
        if pending is None:
            self.stats["unknown_session"] += 1
            return
        try:
            is_confirm = message_type(payload) == HsType.CONFIRM
        except HandshakeError:
            is_confirm = False
        if pending.waiting_for_recorder is not None:
            return  # not accepted yet: nothing from the client can be valid
        if not is_confirm:
            if len(pending.early) < MAX_EARLY_FRAMES:
                pending.early.append(payload)
            return
        try:
            keys = pending.handshake.on_confirm(payload)
        except HandshakeError as exc:
            self.stats["bad_confirm"] += 1
            log.warning("dropped confirm for %s/%s: %s", client, sid, exc)
            return
        del self._pending[key]
        assert self.conn is not None
        if pending.attach is not None and pending.grant.mode in ("watch", "join"):
            self._add_reader(key, pending, keys)
            return
        if pending.attach is not None:
            self._attach(key, pending, keys)
            return
        session = AgentSession(
            self.conn, pending.topic_out, keys, pending.grant, pending.request,
            self._session_done, self.client_timeout, recording=pending.recording,
        )
        self.sessions[key] = session
        self.idle.clear()
        self.stats["sessions"] += 1
        session.on_change = self._live_changed
        session.start()
        for early in pending.early:
            session.on_datagram(early)
        self._live_changed()

    def _attach(self, key: tuple[str, str], pending: _Pending, keys: SessionKeys) -> None:
        assert pending.attach is not None
        session = self._live_session(pending.attach)
        if session is None or session.ending:
            log.warning("%s/%s: session %s ended before the attach was confirmed",
                        key[0], key[1], pending.attach)
            return
        for k in [k for k, s in self.sessions.items() if s is session]:
            del self.sessions[k]
        self.sessions[key] = session
        self.stats["attaches"] += 1
        session.attach(pending.topic_out, keys, pending.request,
                       f"{pending.grant.user} from {key[0]}")
        for early in pending.early:
            session.on_datagram(early)

    def _add_reader(self, key: tuple[str, str], pending: _Pending, keys: SessionKeys) -> None:
        assert pending.attach is not None
        session = self._live_session(pending.attach)
        if session is None or session.ending:
            log.warning("%s/%s: session %s ended before the %s was confirmed",
                        key[0], key[1], pending.attach, pending.grant.mode)
            return
        self.readers[key] = session
        self._reader_grants[key] = pending.grant
        self.stats[pending.grant.mode] += 1
        session.add_reader("/".join(key), pending.topic_out, keys, pending.request, pending.grant,
                           f"{pending.grant.user} from {key[0]}")
        for early in pending.early:
            session.on_reader_datagram("/".join(key), early)

    def _live_changed(self) -> None:
        if self.live is not None:
            self.live.changed()

    def _session_done(self, session: AgentSession) -> None:
        self._live_changed()
        for key in [k for k, s in self.readers.items() if s is session]:
            del self.readers[key]
            self._reader_grants.pop(key, None)
        for key, s in list(self.sessions.items()):
            if s is session:
                del self.sessions[key]
                self.stats["bad_frames"] += s.channel.stats.bad_frames
        if not self.sessions:
            self.idle.set()



def _records(grant: grants.Grant) -> bool:
    """Whether the grant asks for a recording this agent can send: recorder and keys named."""
    return (grant.recording in ("required", "optional") and grant.recorder is not None
            and grant.recorder_x25519 is not None and grant.recorder_ed25519 is not None)
