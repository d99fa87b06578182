"""The recorder stream (tether.recording): sealed OPEN, ordered DATA, signed acks, the chain."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import grants
from tether.encoding import b64e, loads
from tether.recevents import EventKind, chain_next, genesis
from tether.recording import (
    OPTIONAL_BUFFER,
    RecordingError,
    RecordingReceiver,
    RecordingSender,
    open_recording,
    refuse,
    session_body,
)
from tether.retransmit import RTO_MIN

NOW = 1_700_000_000.0
AUTHORITY = SigningKey(bytes(range(32)))
AGENT = SigningKey(bytes(range(1, 33)))
RECORDER = SigningKey(bytes(range(3, 35)))
RECORDER_X = PrivateKey(bytes(range(4, 36)))


def token(**changes: Any) -> str:
    g = grants.Grant(
        user="alice", agent="web1", agent_key=b64e(bytes(AGENT.verify_key)),
        client_key=b64e(bytes(SigningKey.generate().verify_key)), mqtt_name="u-alice",
        mode="shell", run_as="alice", command=None, max_duration=3600, idle_timeout=900,
        recording="required", recorder="rec", reason="INC-1", jti=grants.new_jti(os.urandom),
        expires=NOW + 300, recorder_x25519=b64e(bytes(RECORDER_X.public_key)),
        recorder_ed25519=b64e(bytes(RECORDER.verify_key)),
    )
    return grants.issue(bytes(AUTHORITY), dataclasses.replace(g, **changes), NOW)


def sender(required: bool = True, signer: SigningKey = AGENT, **grant: Any) -> RecordingSender:
    sid = os.urandom(16)
    body = session_body(sid=sid, grant_token=token(**grant), agent="web1", client="u-alice",
                        cols=80, rows=24, term="xterm", started=NOW)
    return RecordingSender(sid=sid, signing_key=signer,
                           recorder_x25519=bytes(RECORDER_X.public_key),
                           recorder_ed25519=bytes(RECORDER.verify_key), body=body, now=NOW,
                           rand=os.urandom, required=required)


def opened(s: RecordingSender) -> RecordingReceiver:
    rec = open_recording(s.open_message, recorder_name="rec", x25519_secret=bytes(RECORDER_X),
                         authority_key=bytes(AUTHORITY.verify_key), agent="web1")
    return RecordingReceiver(rec)


def handshake(s: RecordingSender) -> RecordingReceiver:
    [open_msg] = s.take_outgoing(NOW)
    assert open_msg == s.open_message
    r = opened(s)
    assert s.on_message(r.ack(RECORDER), NOW)
    assert s.opened
    return r


def pump(s: RecordingSender, r: RecordingReceiver, now: float) -> list[Any]:
    events = []
    for blob in s.take_outgoing(now):
        got = r.on_data(blob)
        assert got.chain_error is None
        events += got.events
    r.stored = r.expected
    s.on_message(r.ack(RECORDER), now)
    return events


def test_open_carries_the_grant_and_the_session() -> None:
    s = sender()
    r = opened(s)
    assert r.opened.grant.user == "alice" and r.opened.grant.reason == "INC-1"
    assert r.opened.body["cols"] == 80 and r.opened.body["sid"] == s.sid.hex()


@pytest.mark.parametrize("case", ["other recorder key", "other recorder name", "other agent",
                                  "forged grant", "not the grant's agent", "flipped byte"])
def test_open_refused(case: str) -> None:
    s = sender(signer=SigningKey.generate()) if case == "not the grant's agent" else sender()
    blob = bytearray(s.open_message)
    kwargs: dict[str, Any] = {"recorder_name": "rec", "x25519_secret": bytes(RECORDER_X),
                              "authority_key": bytes(AUTHORITY.verify_key), "agent": "web1"}
    if case == "other recorder key":
        kwargs["x25519_secret"] = bytes(PrivateKey.generate())
    elif case == "other recorder name":
        kwargs["recorder_name"] = "rec2"
    elif case == "other agent":
        kwargs["agent"] = "web2"
    elif case == "forged grant":
        kwargs["authority_key"] = bytes(SigningKey.generate().verify_key)
    elif case == "flipped byte":
        blob[60] ^= 1
    with pytest.raises(RecordingError):
        open_recording(bytes(blob), **kwargs)


def test_events_arrive_in_order_with_the_same_chain() -> None:
    s = sender()
    r = handshake(s)
    payloads = [os.urandom(n) for n in (1, 100, 70_000, 3)]
    for i, p in enumerate(payloads):
        s.record(EventKind.OUTPUT, p, NOW + i)
    got = pump(s, r, NOW + 10)
    data = b"".join(e.data for e, _ in got if e.kind == EventKind.OUTPUT)
    assert data == b"".join(payloads)
    chain = genesis(s.sid)
    for event, value in got:
        chain = chain_next(chain, event.encode())
        assert value == chain
    assert s.acked == s.next_index and s.unacked_bytes == 0
    assert [e.index for e, _ in got] == list(range(len(got)))


def test_a_lost_message_is_resent_after_the_timeout() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a" * 100, NOW)
    lost = s.take_outgoing(NOW)
    assert len(lost) == 1
    s.record(EventKind.OUTPUT, b"b" * 100, NOW + 0.1)
    [second] = s.take_outgoing(NOW + 0.1)
    assert r.on_data(second).events == []  # out of order: nothing stored
    s.on_message(r.ack(RECORDER), NOW + 0.1)
    assert s.acked == 0
    assert s.take_outgoing(NOW + 0.2) == []  # not yet due
    resent = s.take_outgoing(NOW + RTO_MIN + 0.01)
    events = [e for blob in resent for e, _ in r.on_data(blob).events]
    assert b"".join(e.data for e in events) == b"a" * 100 + b"b" * 100


def test_after_a_reconnect_everything_unacked_goes_out_at_once() -> None:
    """What was sent into a cut is lost; the back-off (up to RTO_MAX) is not waited out."""
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a" * 100, NOW)
    assert len(s.take_outgoing(NOW)) == 1  # lost in the cut
    for t in (1, 2, 4, 8, 12):  # resends while cut off back off to RTO_MAX; all lost too
        s.take_outgoing(NOW + t)
    s.record(EventKind.OUTPUT, b"b" * 100, NOW + 12.5)
    [second] = s.take_outgoing(NOW + 12.5)
    assert r.on_data(second).events == []  # back online: this one came, but after a gap
    s.resend_all(NOW + 12.6)
    resent = s.take_outgoing(NOW + 12.6)
    events = [e for blob in resent for e, _ in r.on_data(blob).events]
    assert b"".join(e.data for e in events if e.kind == EventKind.OUTPUT) == b"a" * 100 + b"b" * 100
    assert r.expected == s.next_index
    assert s.next_deadline() == pytest.approx(NOW + 12.6 + RTO_MIN)


def test_after_a_reconnect_an_unacked_open_goes_out_at_once() -> None:
    s = sender()
    assert s.take_outgoing(NOW) == [s.open_message]
    for t in (1, 2, 4, 8):
        s.take_outgoing(NOW + t)
    assert s.take_outgoing(NOW + 8.1) == []  # waiting out the back-off
    s.resend_all(NOW + 8.1)
    assert s.take_outgoing(NOW + 8.1) == [s.open_message]


def test_ack_must_be_signed_by_the_recorder() -> None:
    s = sender()
    s.take_outgoing(NOW)
    r = opened(s)
    assert not s.on_message(r.ack(SigningKey.generate()), NOW)
    assert not s.opened
    other = sender()
    assert not other.on_message(r.ack(RECORDER), NOW)  # another session's ack


def test_forged_checkpoint_breaks_the_chain() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"x", NOW)
    s.signing_key = SigningKey.generate()  # checkpoints now signed by someone else
    s.checkpoint(NOW)
    blobs = s.take_outgoing(NOW)
    results = [r.on_data(b) for b in blobs]
    assert any(res.chain_error and "does not verify" in res.chain_error for res in results)
    assert not r.chain_ok


def test_end_manifest_completes_the_recording() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"bye\r\n", NOW)
    s.record(EventKind.EXIT, b'{"code":0,"signal":null}', NOW + 1)
    s.finish(NOW + 1)
    assert not s.done
    got = pump(s, r, NOW + 1)
    assert got[-1][0].kind == EventKind.END and r.ended and r.chain_ok
    assert s.done
    assert not s.record(EventKind.OUTPUT, b"late", NOW + 2)


def test_optional_recording_drops_then_records_the_gap() -> None:
    s = sender(required=False)
    r = handshake(s)
    assert s.record(EventKind.OUTPUT, b"a" * (OPTIONAL_BUFFER - 100), NOW)
    assert not s.record(EventKind.OUTPUT, b"b" * 1000, NOW)
    pump(s, r, NOW + 1)
    assert s.record(EventKind.OUTPUT, b"c", NOW + 2)
    got = pump(s, r, NOW + 2)
    gap = [e for e, _ in got if e.kind == EventKind.GAP]
    assert gap and loads(gap[0].data) == {"lost_bytes": 1000, "lost_events": 1}


def test_required_recording_never_drops() -> None:
    s = sender(required=True)
    handshake(s)
    assert s.record(EventKind.OUTPUT, b"a" * (OPTIONAL_BUFFER + 1), NOW)
    assert s.unacked_bytes > OPTIONAL_BUFFER


def test_silence_counts_only_while_something_is_owed() -> None:
    s = sender()
    r = handshake(s)
    assert s.silent_for(NOW + 100) == 0
    s.record(EventKind.INPUT, b"ls\r", NOW + 100)
    assert s.silent_for(NOW + 105) == pytest.approx(5)
    pump(s, r, NOW + 106)
    assert s.silent_for(NOW + 200) == 0


def test_signed_refusal() -> None:
    s = sender()
    s.take_outgoing(NOW)
    blob = refuse(s.open_message, RECORDER, "disk full")
    assert blob is not None
    assert s.on_message(blob, NOW) and s.refused == "disk full"
    s2 = sender()
    forged = refuse(s2.open_message, SigningKey.generate(), "no")
    assert forged is not None and not s2.on_message(forged, NOW)


def test_receiver_resumes_from_stored_state() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"one", NOW)
    got = pump(s, r, NOW)
    # A restarted recorder: same OPEN, state from its log.
    r2 = RecordingReceiver(r.opened, stored=r.stored, chain=got[-1][1])
    s.record(EventKind.OUTPUT, b"two", NOW + 1)
    got2 = pump(s, r2, NOW + 1)
    assert [e.data for e, _ in got2 if e.kind == EventKind.OUTPUT] == [b"two"]
    assert r2.chain_ok
