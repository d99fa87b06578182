"""docs/threat-model.md §9 limits that had no test (docs/testing.md, row 114), each at the
limit and one past: an enrolment request of 16 KiB, 64 frames held before a CONFIRM,
1 MiB of data in a recording event, a 64 KiB OSC 133 mark held across chunks, 16 audit
queries waiting. Pure checks are called directly; the ones inside a service's message
handler are driven through that handler with real keys and real messages, without a broker
(the handler is what the broker callback calls)."""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import auditq, enrolment, grants
from tether.agent.service import MAX_EARLY_FRAMES, AgentService
from tether.authority.activations import Activations, create
from tether.authority.provision import authority_identity, commit, ensure_local_setup
from tether.authority.registry import Registry
from tether.authority.service import MAX_ENROL_BYTES, AuthorityService
from tether.edge.home import Home
from tether.edge.keys import Identity
from tether.encoding import b64e, loads
from tether.handshake import ClientHandshake
from tether.recevents import (
    EVENT_HEADER,
    MAX_EVENT_DATA,
    Event,
    EventError,
    EventKind,
    decode_events,
)
from tether.recorder import db as recdb
from tether.recorder.osc133 import INTRO, MAX_MARK, MarkParser
from tether.recorder.queries import MAX_PENDING, AuditQueries
from tether.topics import C2A, Topics

TOPICS = Topics()


def test_the_limits_are_the_documented_figures() -> None:
    assert MAX_ENROL_BYTES == 16 * 1024
    assert MAX_EARLY_FRAMES == 64
    assert MAX_EVENT_DATA == 1 << 20
    assert MAX_MARK == 64 * 1024
    assert MAX_PENDING == 16


# ----- recording events: 1 MiB of data -----


def test_an_event_of_1_mib_decodes_and_one_byte_more_is_refused() -> None:
    at_limit = Event(7, 1, EventKind.OUTPUT, b"x" * MAX_EVENT_DATA).encode()
    (event,) = decode_events(at_limit)
    assert len(event.data) == MAX_EVENT_DATA
    past = Event(7, 1, EventKind.OUTPUT, b"x" * (MAX_EVENT_DATA + 1)).encode()
    with pytest.raises(EventError, match="event 7"):
        decode_events(past)
    # Refused on the length field alone: a header claiming more is not waited for.
    with pytest.raises(EventError):
        decode_events(EVENT_HEADER.pack(7, 1, EventKind.OUTPUT, MAX_EVENT_DATA + 1))


# ----- OSC 133 marks: 64 KiB held across chunks -----


def _unterminated_mark(total: int) -> bytes:
    """An OSC 133 C mark of `total` bytes from its introducer, without its terminator."""
    head = INTRO + b"C;cmdline="
    return head + b"x" * (total - len(head))


def test_a_mark_of_64_kib_is_held_across_chunks_and_one_byte_more_is_dropped() -> None:
    parser = MarkParser()
    assert parser.feed(b"$ " + _unterminated_mark(MAX_MARK)) == []
    (mark,) = parser.feed(b"\x07after")
    assert mark.kind == "C" and mark.cmdline == "x" * (MAX_MARK - len(INTRO) - len(b"C;cmdline="))
    parser = MarkParser()
    assert parser.feed(b"$ " + _unterminated_mark(MAX_MARK + 1)) == []
    assert parser.feed(b"\x07after") == []
    # Dropping it costs nothing later: the next mark is read.
    assert [m.kind for m in parser.feed(INTRO + b"D;0\x07")] == ["D"]


# ----- enrolment requests: 16 KiB -----


def _padded(payload: bytes, size: int) -> bytes:
    """The same JSON request, padded with whitespace to `size` bytes."""
    assert len(payload) < size
    return payload + b" " * (size - len(payload))


@pytest.mark.parametrize("size, enrolled", [(MAX_ENROL_BYTES, True), (MAX_ENROL_BYTES + 1, False)])
def test_an_enrolment_request_over_16_kib_is_dropped_unread(tmp_path: Path, size: int,
                                                            enrolled: bool) -> None:
    home = Home(tmp_path / "home")
    ensure_local_setup(home, "127.0.0.1", 1883)
    registry = Registry.load(home.registry)
    store = Activations.load(home.activations)
    act = create(store, registry, {}, 1, 3600, time.time())
    store.save()
    commit(home, registry)
    service = AuthorityService(authority_identity(home), home)
    service._refresh()
    key, x = SigningKey.generate(), PrivateKey.generate()
    payload = enrolment.build_request(key, bytes(x.public_key), act.id, act.code, "dev1", time.time(), rand=os.urandom)
    padded = _padded(payload, size)
    assert loads(padded) == loads(payload)  # the same request, only longer
    service._on_message(TOPICS.enrol_request(act.id), padded)
    assert ("dev1" in Registry.load(home.registry).principals) is enrolled
    audit = home.root / "authority" / "audit.jsonl"
    trail = audit.read_text() if audit.exists() else ""
    assert ('"enrolled"' in trail) is enrolled, trail
    if not enrolled:  # dropped unread: not even a refusal was written
        assert "enrol" not in trail, trail


# ----- frames before the CONFIRM: 64 held -----


class Outbox:
    """Where the agent's messages go instead of a broker connection (this test looks only
    at what the agent holds)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload))


def test_64_frames_before_the_confirm_are_held_and_more_are_dropped(tmp_path: Path) -> None:
    authority = SigningKey.generate()
    agent = Identity.generate("local", "agent", with_x25519=True)
    agent.authority = {"ed25519": b64e(bytes(authority.verify_key))}
    user = SigningKey.generate()
    slot, now = "alice.1", time.time()
    grant = grants.Grant(
        user="alice", agent="local", agent_key=b64e(agent.public_key),
        client_key=b64e(bytes(user.verify_key)), mqtt_name=slot, mode="exec",
        run_as=getpass.getuser(), command=["true"], max_duration=60, idle_timeout=0,
        recording="off", recorder=None, reason=None, jti=grants.new_jti(os.urandom), expires=now + 120)
    request = {"mode": "exec", "command": ["true"], "grant": grants.issue(bytes(authority), grant, now)}
    hs = ClientHandshake(client_key=user, agent_signing_key=agent.public_key,
                         agent_x25519=agent.x25519_public or b"", sid=os.urandom(16), request=request,
                         rand=os.urandom)
    service = AgentService(agent, replay_file=tmp_path / "replay.json")
    outbox = Outbox()
    service.conn = outbox  # type: ignore[assignment]
    service._on_hello(slot, hs.hello(time.time()))
    ((topic, accept),) = outbox.sent
    hs.on_reply(accept)  # accepted: the agent now waits for the CONFIRM
    sid = hs.sid.hex()
    pending = service._pending[(slot, sid)]
    # Frames sent before the CONFIRM (a client that does not wait, or a flood of them).
    frames = [os.urandom(40) + bytes([i]) for i in range(MAX_EARLY_FRAMES + 10)]
    for i, frame in enumerate(frames):
        service._on_session_datagram(slot, sid, frame)
        assert len(pending.early) == min(i + 1, MAX_EARLY_FRAMES)
    assert pending.early == frames[:MAX_EARLY_FRAMES]  # the first 64, in order
    assert TOPICS.session("local", slot, sid, C2A) != topic


# ----- audit queries: 16 waiting -----


def test_16_audit_queries_wait_and_the_17th_is_dropped(tmp_path: Path) -> None:
    auth = Identity.generate("authority", "authority", with_x25519=True)
    rec = Identity.generate("rec", "recorder", with_x25519=True)
    rec.authority = {"ed25519": b64e(auth.public_key)}
    alice = SigningKey.generate()
    store = tmp_path / "recordings"
    recdb.connect(store).close()

    def query() -> bytes:
        now = time.time()
        token = grants.issue(auth.signing_seed, grants.Grant(
            user="alice", agent="rec", agent_key=b64e(rec.public_key),
            client_key=b64e(bytes(alice.verify_key)), mqtt_name="alice.c", mode="audit", run_as="",
            command=None, max_duration=3600, idle_timeout=0, recording="off", recorder=None,
            reason=None, jti=grants.new_jti(os.urandom), expires=now + 300), now)
        return auditq.build_query(alice, token, rec.x25519_public or b"", "list", {}, now, rand=os.urandom).payload

    async def go() -> dict[str, Any]:
        queries = AuditQueries(rec, store, TOPICS)
        try:
            topic = TOPICS.audit_query("rec", "alice.c")
            # All at once, as a burst from the broker arrives: none has been answered yet.
            for _ in range(MAX_PENDING):
                queries.on_message(topic, query())
            assert len(queries._tasks) == MAX_PENDING and queries.stats["dropped_busy"] == 0
            queries.on_message(topic, query())
            assert len(queries._tasks) == MAX_PENDING and queries.stats["dropped_busy"] == 1
            await asyncio.wait_for(asyncio.gather(*queries._tasks), 30)
            # Once answered, the queue has room again.
            queries.on_message(topic, query())
            assert len(queries._tasks) == 1 and queries.stats["dropped_busy"] == 1
            await asyncio.wait_for(asyncio.gather(*queries._tasks), 30)
            return dict(queries.stats)
        finally:
            await queries.close()

    stats = asyncio.run(go())
    assert stats["answered_list"] == MAX_PENDING + 1, stats
