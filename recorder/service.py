"""The recorder service: ingest recorder streams, store them durably, then ack.

Acks go out only after `Store.sync()` (fsync, then commit), once per batch of incoming
messages, so a burst costs one fsync per session. Screen reconstruction and indexing run
on the index worker's thread and never delay an ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerSettings, MqttConnection
from tether.encoding import b64d
from tether.grants import MAX_LIFETIME
from tether.presence import read_presence, read_status
from tether.recorder.queries import AuditQueries
from tether.recorder.store import Batch, Store
from tether.recording import (
    OpenedRecording,
    RecordingError,
    RecordingReceiver,
    RecType,
    message_type,
    open_recording,
    refuse,
)
from tether.signed import BadDocument
from tether.topics import RACK, Topics

log = logging.getLogger("tether.recorder")
CLOCK_SKEW = 120.0


class Notifier(Protocol):
    def notify(self) -> None: ...


# An agent cut off from the broker resumes its sessions when it is back (its clients wait
# 90 s for it, tether.client_session.OFFLINE_GRACE): its open recordings wait as long.
AGENT_GRACE = 90.0


@dataclass
class _Live:
    receiver: RecordingReceiver
    topic_ack: str


@dataclass
class RecorderService:
    identity: Identity
    store_root: Path
    topics: Topics = field(default_factory=Topics)
    indexer: Notifier | None = None
    agent_grace: float = AGENT_GRACE

    def __post_init__(self) -> None:
        self.name = self.identity.name
        self.store = Store(self.store_root)
        self.live: dict[str, _Live] = {}
        self.stats: Counter[str] = Counter()
        self.conn: MqttConnection | None = None
        self._authority = b64d(self.identity.authority["ed25519"])
        self._to_ack: set[str] = set()
        self._agent_keys: dict[str, bytes] = {}
        self._aborts: dict[str, tuple[asyncio.TimerHandle, object]] = {}  # agent -> (timer, boot)
        self._flush_scheduled = False
        self._committing: asyncio.Future[None] | None = None
        # One thread: commits happen in order, and the SQLite connection is never shared.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tether-store")
        self.queries = AuditQueries(self.identity, self.store_root, self.topics)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._repair)
        settings = BrokerSettings.from_identity(self.name, self.identity.broker)
        self.conn = MqttConnection(settings, self._on_message, clean_session=False)
        self.conn.subscribe(self.topics.recorder_streams(), 1)
        self.conn.subscribe(self.topics.all_presence(), 1)
        self.queries.attach(self.conn)  # audit queries (recorder/queries.py)
        await self.conn.connect()

    def _repair(self) -> None:
        for sid in self.store.orphans():
            blob = self.store.stored_open(sid)
            try:
                opened = open_recording(blob or b"", recorder_name=self.name,
                                        x25519_secret=self.identity.x25519_secret or b"",
                                        authority_key=self._authority)
            except RecordingError as exc:
                log.error("stored OPEN of %s is unusable: %s", sid, exc)
                continue
            self.store.repair(opened, blob or b"")
            log.warning("recording %s: its row was lost (crash?); rebuilt from its log", sid)

    async def stop(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await self.queries.close()
        while self._committing is not None or self._flush_scheduled:
            if self._committing is not None:
                await asyncio.wait([self._committing])
            else:
                await asyncio.sleep(0)
        self._flush()
        if self._committing is not None:
            await asyncio.wait([self._committing])
        self._executor.shutdown(wait=True)
        self.store.close()

    # ----- messages -----

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.queries.handles(topic):
            self.queries.on_message(topic, payload)
            return
        parsed = self.topics.parse_session(topic)
        if parsed is None:
            agent = self.topics.parse_agent(topic)
            if agent is not None and payload:
                self._on_presence(agent, topic, payload)
            return
        agent, client, sid_hex, leg = parsed
        if leg != "rec":
            return
        try:
            kind, sid = message_type(payload)
        except RecordingError:
            self.stats["bad_messages"] += 1
            return
        if sid.hex() != sid_hex:
            self.stats["bad_messages"] += 1
            return
        ack_topic = self.topics.session(agent, client, sid_hex, RACK)
        try:
            if kind == RecType.OPEN:
                self._on_open(agent, client, sid_hex, payload, ack_topic)
            elif kind == RecType.DATA:
                self._on_data(sid_hex, payload, ack_topic)
        except RecordingError as exc:
            self.stats["rejected"] += 1
            log.warning("recording %s from %s rejected: %s", sid_hex, agent, exc)
        except OSError as exc:
            # The disk refused: never ack; the agent resends, or a required session freezes.
            self.stats["store_errors"] += 1
            log.error("cannot store recording %s: %s", sid_hex, exc)

    def _on_open(self, agent: str, client: str, sid: str, blob: bytes, ack_topic: str) -> None:
        if sid in self.live or self.store.known(sid):
            if self.store.stored_open(sid) != blob:
                raise RecordingError("a different OPEN for a session we already record")
            self._resume(sid, blob, agent, ack_topic)
            return
        try:
            opened = open_recording(blob, recorder_name=self.name,
                                    x25519_secret=self.identity.x25519_secret or b"",
                                    authority_key=self._authority, agent=agent)
            self._check_new(opened, client)
        except RecordingError as exc:
            answer = refuse(blob, self.identity.signing_key, str(exc))
            if answer is not None and self.conn is not None:
                self.conn.publish(ack_topic, answer, qos=1)
            raise
        self.store.begin(opened, blob, client)
        self.live[sid] = _Live(RecordingReceiver(opened), ack_topic)
        self.stats["sessions"] += 1
        log.info("recording %s: %s@%s as %s", sid, opened.grant.user, agent, opened.grant.run_as)
        self._want_ack(sid)

    def _check_new(self, opened: OpenedRecording, client: str) -> None:
        """A new recording must be for a session its grant allowed, and the only one."""
        grant = opened.grant
        if grant.mqtt_name != client:
            raise RecordingError("the grant belongs to another client connection")
        try:
            started = float(str(opened.body.get("started")))
        except ValueError:
            raise RecordingError("the OPEN has no start time") from None
        if not grant.expires - MAX_LIFETIME - CLOCK_SKEW <= started <= grant.expires + CLOCK_SKEW:
            raise RecordingError("the session did not start while its grant was valid")
        if started > time.time() + CLOCK_SKEW:
            raise RecordingError("the session claims to start in the future")
        if grant.jti in self.store.grant_ids:
            raise RecordingError(f"grant {grant.jti} was already used for another recording")

    def _resume(self, sid: str, blob: bytes, agent: str, ack_topic: str) -> _Live:
        live = self.live.get(sid)
        if live is None:
            opened = open_recording(blob, recorder_name=self.name,
                                    x25519_secret=self.identity.x25519_secret or b"",
                                    authority_key=self._authority, agent=agent)
            f = self.store.recover(sid)
            receiver = RecordingReceiver(opened, stored=f.events, chain=f.chain)
            receiver.ended = f.ended
            live = self.live[sid] = _Live(receiver, ack_topic)
            log.info("resumed recording %s at event %d", sid, f.events)
        self._want_ack(sid)
        return live

    def _on_data(self, sid: str, blob: bytes, ack_topic: str) -> None:
        live = self.live.get(sid)
        if live is None:
            stored = self.store.stored_open(sid)
            if stored is None:
                self.stats["unknown_session"] += 1
                return  # the agent resends its OPEN until we ack it
            agent = self.topics.parse_agent(ack_topic) or ""
            live = self._resume(sid, stored, agent, ack_topic)
        got = live.receiver.on_data(blob)
        f = self.store.files[sid]
        if got.chain_error and f.chain_error is None:
            f.chain_error = got.chain_error
            log.error("recording %s: %s", sid, got.chain_error)
        for event, chain in got.events:
            f.add(event, chain)
        self._want_ack(sid)

    def _on_presence(self, agent: str, topic: str, payload: bytes) -> None:
        """An agent that goes offline (its will, or a clean stop) aborts its open recordings,
        unless it comes back, not restarted, within `agent_grace`."""
        try:
            if topic == self.topics.presence(agent):
                doc = read_presence(payload)
                self._agent_keys[agent] = b64d(str(doc["ed25519"]))
            elif topic == self.topics.status(agent) and agent in self._agent_keys:
                doc = read_status(payload, self._agent_keys[agent])
            else:
                return
        except (BadDocument, KeyError, ValueError):
            return
        boot = doc.get("boot")
        pending = self._aborts.pop(agent, None)
        if pending is not None:
            pending[0].cancel()
        if doc.get("online") is False:
            # Cut off or stopped: its sessions may resume (tether.agent.session.RESUME_WINDOW).
            # A stop has ended them already; what is still live is aborted after the grace.
            handle = asyncio.get_running_loop().call_later(self.agent_grace, self._abort, agent)
            self._aborts[agent] = (handle, boot)
        elif pending is not None and (boot is None or boot != pending[1]):
            self._abort(agent)  # back, but restarted: the sessions it had are gone

    def _abort(self, agent: str) -> None:
        self._aborts.pop(agent, None)
        self.store.abort_agent(agent)
        self._schedule_flush()

    # ----- durability, then acks -----

    def _want_ack(self, sid: str) -> None:
        self._to_ack.add(sid)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._committing is None:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Group commit: one batch on the store's thread at a time; acks when it is durable."""
        self._flush_scheduled = False
        if self._committing is not None:
            return  # the running commit's completion flushes again
        batch = self.store.prepare()
        to_ack, self._to_ack = self._to_ack, set()
        if not batch:
            self._send_acks(to_ack)
            return
        loop = asyncio.get_running_loop()
        self._committing = loop.run_in_executor(self._executor, self.store.commit, batch)
        self._committing.add_done_callback(lambda fut: self._committed(fut, batch, to_ack))

    def _committed(self, fut: asyncio.Future[None], batch: Batch, to_ack: set[str]) -> None:
        self._committing = None
        exc = fut.exception()
        if exc is not None:
            # The disk refused: nothing in the batch is acked; the agents resend it.
            self.stats["store_errors"] += 1
            log.error("cannot make recordings durable: %s", exc)
            self._to_ack |= to_ack
            for s, _ in batch.writes:
                self.store.files.pop(s.sid, None)
                self.live.pop(s.sid, None)
            return
        for sid in batch.aborted:
            log.info("recording %s aborted: its agent went offline", sid)
        for sid, events in batch.events.items():
            live = self.live.get(sid)
            if live is not None:
                live.receiver.stored = events
        self._send_acks(to_ack)
        if batch.writes and self.indexer is not None:
            self.indexer.notify()
        if self._to_ack or any(f.dirty for f in self.store.files.values()):
            self._schedule_flush()

    def _send_acks(self, sids: set[str]) -> None:
        for sid in sids:
            live = self.live.get(sid)
            if live is None or self.conn is None:
                continue
            self.conn.publish(live.topic_ack, live.receiver.ack(self.identity.signing_key), qos=0)
            if live.receiver.ended and live.receiver.stored == live.receiver.expected:
                self.store.retire(sid)
                del self.live[sid]
