"""tether.recording against docs/protocol.md §12 (numbers, OPEN construction, timers) and at
its exact edges (found by mutation testing, tools/mutation/run.py). Pure, simulated time."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from test_recording import (
    AGENT,
    AUTHORITY,
    NOW,
    RECORDER,
    RECORDER_X,
    handshake,
    pump,
    sender,
    token,
)

from tether.crypto import kdf
from tether.encoding import loads
from tether.recevents import EventKind
from tether.recording import (
    CHECKPOINT_EVERY,
    CHECKPOINT_SECONDS,
    MAX_MESSAGE_DATA,
    OPTIONAL_BUFFER,
    REC_VERSION,
    REC_WINDOW,
    RecordingError,
    RecordingReceiver,
    RecordingSender,
    RecType,
    _dh,
    message_type,
    open_recording,
    open_signer_matches,
    refuse,
    session_body,
)
from tether.retransmit import RTO_MAX, RTO_MIN


def test_numbers_are_the_protocols() -> None:
    """§12.3-12.4: version 0x84, types 1-4, 60 KiB of events per DATA, a checkpoint every
    1024 events or 5 s, timers 0.5-4 s, 4 MiB window, 8 MiB optional buffer."""
    assert REC_VERSION == 0x84
    assert {t.name: int(t) for t in RecType} == {"OPEN": 1, "DATA": 2, "ACK": 3, "REFUSE": 4}
    assert (MAX_MESSAGE_DATA, CHECKPOINT_EVERY, CHECKPOINT_SECONDS) == (60 * 1024, 1024, 5.0)
    assert (RTO_MIN, RTO_MAX, REC_WINDOW, OPTIONAL_BUFFER) == (0.5, 4.0, 4 << 20, 8 << 20)
    s = sender()
    assert s.open_message[:18] == b"\x84\x01" + s.sid
    r = handshake(s)
    assert r.ack(RECORDER)[:18] == b"\x84\x03" + s.sid
    s.record(EventKind.OUTPUT, b"x", NOW)
    [data] = s.take_outgoing(NOW)
    assert data[:18] == b"\x84\x02" + s.sid
    assert refuse(s.open_message, RECORDER, "no")[:18] == b"\x84\x04" + s.sid  # type: ignore[index]


def test_open_is_built_as_documented() -> None:
    """H names the recording, and the agent's signature covers the grant's digest G."""
    s = sender()
    assert s.open_hash == hashlib.blake2b(s.open_message, digest_size=32,
                                          person=b"tether-rec-open").digest()
    g = hashlib.blake2b(str(s.body["grant"]).encode(), digest_size=32,
                        person=b"tether-rec-grant").digest()
    AGENT.verify_key.verify(b"tether-rec-open\x00" + g + s.open_message[:-64], s.open_message[-64:])
    assert open_signer_matches(s.open_message, s.sid, bytes(AGENT.verify_key), str(s.body["grant"]))
    assert not open_signer_matches(s.open_message, os.urandom(16), bytes(AGENT.verify_key),
                                   str(s.body["grant"]))
    assert not open_signer_matches(s.open_message, s.sid, bytes(AGENT.verify_key), token())
    assert not open_signer_matches(s.open_message[:-1], s.sid, bytes(AGENT.verify_key),
                                   str(s.body["grant"]))
    assert not open_signer_matches(s.open_message[:80], s.sid, bytes(AGENT.verify_key),
                                   str(s.body["grant"]))
    assert not open_signer_matches(b"\x84\x01" + s.sid, s.sid, bytes(AGENT.verify_key), "")
    assert not open_signer_matches(b"", s.sid, bytes(AGENT.verify_key), "")
    assert not open_signer_matches(s.open_message, s.sid, b"short", str(s.body["grant"]))


def test_open_is_resent_after_half_a_second_doubling_to_four() -> None:
    s = sender()
    sent = [t for t in [NOW + x / 100 for x in range(0, 1400, 5)] if s.take_outgoing(t)]
    assert [round(t - NOW, 2) for t in sent] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]


def test_unacked_data_goes_back_n_after_the_timeout_doubling_to_four() -> None:
    s = sender()
    handshake(s)
    s.record(EventKind.OUTPUT, b"lost", NOW)
    assert s.resends == 0 and s.acked == 0
    assert len(s.take_outgoing(NOW)) == 1
    assert s.next_deadline() == NOW + 0.5
    times = []
    t = NOW
    while len(times) < 5:
        t = s.next_deadline()  # type: ignore[assignment]
        assert s.take_outgoing(t)
        times.append(round(t - NOW, 2))
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert s.resends == 5


def test_a_checkpoint_follows_5_s_or_1024_events() -> None:
    s = sender()
    s.record(EventKind.OUTPUT, b"a", NOW + 4.999)
    assert s.next_index == 1
    s.record(EventKind.OUTPUT, b"b", NOW + 5.0)
    assert s.next_index == 3  # b, then a checkpoint
    c = sender()
    for _ in range(CHECKPOINT_EVERY - 1):
        c.record(EventKind.OUTPUT, b"x", NOW)
    assert c.next_index == 1023
    c.record(EventKind.OUTPUT, b"x", NOW)
    assert c.next_index == 1025
    for _ in range(CHECKPOINT_EVERY - 1):
        c.record(EventKind.OUTPUT, b"x", NOW)
    assert c.next_index == 1025 + 1023  # counted again from the checkpoint


def test_event_times_are_microseconds_since_the_start() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW + 1.5)
    s.record(EventKind.OUTPUT, b"b", NOW - 3.0)  # a clock step back: never negative
    events = [e for e, _ in pump(s, r, NOW + 2)]
    assert [e.t_us for e in events] == [1_500_000, 0]


def test_a_full_size_event_is_one_message_and_messages_hold_at_most_60_kib() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, bytes(MAX_MESSAGE_DATA), NOW)
    assert len(s.take_outgoing(NOW)) == 1
    s2 = sender()
    handshake(s2)
    for _ in range(4):
        s2.record(EventKind.OUTPUT, bytes(20 * 1024 - 21), NOW)  # 20 KiB encoded each
    out = s2.take_outgoing(NOW)
    assert len(out) == 2  # 3 fill 60 KiB exactly, the 4th starts a message
    assert [len(b) for b in out] == [18 + 8 + 24 + 60 * 1024 + 16, 18 + 8 + 24 + 20 * 1024 + 16]
    assert r.opened is not None


def test_defaults_record_required_and_count_from_zero() -> None:
    s = sender()
    assert s.required and not s.opened and s.acked == 0 and s.resends == 0
    assert s.lost_bytes == 0 and s.refused is None


def test_optional_buffer_bound_is_8_mib() -> None:
    s = sender(required=False)
    handshake(s)
    assert not s.record(EventKind.OUTPUT, bytes(OPTIONAL_BUFFER + 1), NOW)
    assert s.lost_bytes == OPTIONAL_BUFFER + 1
    t = sender(required=False)
    handshake(t)
    assert t.record(EventKind.OUTPUT, bytes(OPTIONAL_BUFFER), NOW)
    assert not t.record(EventKind.OUTPUT, b"x", NOW)


def test_silence_is_never_negative() -> None:
    s = sender()
    s.record(EventKind.OUTPUT, b"x", NOW)
    assert s.silent_for(NOW - 10) == 0.0
    assert s.silent_for(NOW + 3) == 3.0


def test_an_ack_that_leaves_nothing_outstanding_stops_the_timer() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"x", NOW)
    pump(s, r, NOW)
    assert s.acked == 1 and s.next_deadline() is None
    s.record(EventKind.OUTPUT, b"y", NOW)
    s.record(EventKind.OUTPUT, b"z", NOW)
    blobs = s.take_outgoing(NOW + 1)
    r.on_data(blobs[0])
    r.stored = 2
    assert s.on_message(r.ack(RECORDER), NOW + 1)  # progress: True
    assert s.next_deadline() == NOW + 1 + RTO_MIN  # still one outstanding
    assert not s.on_message(r.ack(RECORDER), NOW + 1)  # the same ack again: no progress


def test_refusals_need_more_than_a_signature_and_garbage_gets_none() -> None:
    s = sender()
    prefix = b"\x84\x04" + s.sid
    sig = RECORDER.sign(b"tether-rec-refuse\x00" + s.open_hash + prefix).signature
    assert not s.on_message(prefix + sig, NOW)  # an empty reason is not a refusal
    assert s.refused is None
    assert refuse(b"\x00", RECORDER, "no") is None
    assert refuse(b"\x84\x02" + s.sid, RECORDER, "no") is None  # not an OPEN
    good = refuse(s.open_message, RECORDER, "full")
    assert good is not None and s.on_message(good, NOW) and s.refused == "full"


def test_data_message_bounds_and_authentication() -> None:
    s = sender()
    r = handshake(s)
    head = b"\x84\x02" + s.sid + bytes(8)
    with pytest.raises(RecordingError, match="too short"):
        r.on_data(head + bytes(24 + 15))
    with pytest.raises(RecordingError, match="failed authentication"):
        r.on_data(head + bytes(24 + 16))


def test_a_resend_that_repeats_stored_events_yields_only_the_new_ones() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW)
    s.record(EventKind.OUTPUT, b"b", NOW)
    [both] = s.take_outgoing(NOW)
    assert [e.data for e, _ in r.on_data(both).events] == [b"a", b"b"]
    assert r.on_data(both).events == []  # the same message again: nothing new
    r.stored = 1  # only a is durable yet
    assert s.on_message(r.ack(RECORDER), NOW)
    s.record(EventKind.OUTPUT, b"c", NOW)
    assert len(s.take_outgoing(NOW)) == 1  # c alone: lost on the way
    [resent] = s.take_outgoing(NOW + RTO_MIN)  # go back to b: b and c in one message
    chain_before = r.chain
    got = r.on_data(resent)
    assert [e.data for e, _ in got.events] == [b"c"]  # b skipped, c taken after it
    assert got.events[0][1] != chain_before and r.expected == 3


def test_nothing_is_taken_after_the_end_manifest() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW)
    s.finish(NOW)
    pump(s, r, NOW)
    assert r.ended
    s._ended = False  # type: ignore[attr-defined]  # a sender that goes on regardless
    s.record(EventKind.OUTPUT, b"after", NOW)
    [blob] = s.take_outgoing(NOW)
    assert r.on_data(blob).events == []


def test_session_body_keeps_the_start_it_must_be_given() -> None:
    """The core reads no clock: the agent says when the session started."""
    kw = dict(sid=bytes(16), grant_token="t", agent="a", client="c", cols=80, rows=24, term=None)
    assert session_body(**kw, started=5.0)["started"] == 5.0  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="started"):
        session_body(**kw)  # type: ignore[arg-type]


def test_a_receiver_for_another_agent_key_flags_the_first_bad_signature_once() -> None:
    s = sender()
    r = handshake(s)
    s.checkpoint(NOW)
    s.checkpoint(NOW)
    forged = RecordingReceiver(r.opened)
    forged._verify = SigningKey.generate().verify_key  # type: ignore[attr-defined]
    blobs = s.take_outgoing(NOW)
    got = forged.on_data(blobs[0])
    assert got.chain_error == "the agent's signature at event 0 does not verify"
    assert not forged.chain_ok and len(got.events) == 2


def _gap(events: list[Any]) -> dict[str, int]:
    [gap] = [e for e, _ in events if e.kind == EventKind.GAP]
    return loads(gap.data)  # type: ignore[no-any-return]


def test_each_gap_counts_only_its_own_losses() -> None:
    s = sender(required=False)
    r = handshake(s)
    assert s.record(EventKind.OUTPUT, bytes(OPTIONAL_BUFFER), NOW)
    assert not s.record(EventKind.OUTPUT, b"12345", NOW)
    pump(s, r, NOW)  # acked: room again
    s.record(EventKind.OUTPUT, b"ok", NOW)
    assert _gap(pump(s, r, NOW)) == {"lost_bytes": 5, "lost_events": 1}
    assert s.record(EventKind.OUTPUT, bytes(OPTIONAL_BUFFER), NOW)
    assert not s.record(EventKind.OUTPUT, b"1234567", NOW)
    pump(s, r, NOW)
    s.record(EventKind.OUTPUT, b"ok", NOW)
    assert _gap(pump(s, r, NOW)) == {"lost_bytes": 7, "lost_events": 1}


def test_an_empty_record_is_one_event() -> None:
    s = sender()
    s.record(EventKind.OUTPUT, b"", NOW)
    assert s.next_index == 1


K20 = 20 * 1024  # one event of this many bytes encoded; three fill a DATA message exactly


@pytest.mark.parametrize(("sizes", "messages"), [
    ([K20] * 8 + [K20 + 1], [3 * K20, 3 * K20, 2 * K20, K20 + 1]),  # 60 KiB fits, in any message
    ([K20, K20, K20 + 1], [2 * K20, K20 + 1]),  # 60 KiB + 1 does not, in the first either
])
def test_a_message_holds_at_most_60_kib_to_the_byte(sizes: list[int], messages: list[int]) -> None:
    s = sender()
    handshake(s)
    for size in sizes:
        s.record(EventKind.OUTPUT, bytes(size - 21), NOW)
    out = s.take_outgoing(NOW)
    assert [len(b) - (18 + 8 + 24 + 16) for b in out] == messages


def test_garbage_and_overclaiming_acks_are_not_taken() -> None:
    s = sender()
    r = handshake(s)
    assert not s.on_message(b"garbage", NOW)
    assert not s.on_message(b"\x83\x03" + s.sid + bytes(72), NOW)
    s.record(EventKind.OUTPUT, b"x", NOW)
    r.stored = 5  # a recorder claiming more than was ever recorded
    assert not s.on_message(r.ack(RECORDER), NOW)
    assert s.acked == 0


def test_open_recording_refuses_what_is_not_an_open() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"x" * 200, NOW)
    [data] = s.take_outgoing(NOW)
    kw: dict[str, Any] = dict(recorder_name="rec", x25519_secret=bytes(RECORDER_X),
                              authority_key=bytes(AUTHORITY.verify_key))
    with pytest.raises(RecordingError, match="not a recording OPEN"):
        open_recording(data, **kw)
    head = b"\x84\x01" + s.sid + bytes(PrivateKey.generate().public_key)
    with pytest.raises(RecordingError, match="not a recording OPEN"):
        open_recording(head + bytes(16 + 64 - 1), **kw)
    with pytest.raises(RecordingError, match="not sealed to this recorder"):
        open_recording(head + bytes(16 + 64), **kw)
    del r


def test_an_open_whose_body_is_not_json_is_refused() -> None:
    eph = PrivateKey.generate()
    sid = os.urandom(16)
    head = b"\x84\x01" + sid + bytes(eph.public_key)
    rx = bytes(RECORDER_X.public_key)
    key = kdf(_dh(bytes(eph), rx), b"tether-rec-body", head + rx)
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(b"\xff{", head, bytes(24), key)
    blob = head + sealed + AGENT.sign(head + sealed).signature
    with pytest.raises(RecordingError, match="not JSON"):
        open_recording(blob, recorder_name="rec", x25519_secret=bytes(RECORDER_X),
                       authority_key=bytes(AUTHORITY.verify_key))


def test_data_for_another_session_or_of_another_type_is_refused_as_such() -> None:
    s, t = sender(), sender()
    r = handshake(s)
    handshake(t)
    t.record(EventKind.OUTPUT, b"x", NOW)
    [foreign] = t.take_outgoing(NOW)
    with pytest.raises(RecordingError, match="not a DATA message for this session"):
        r.on_data(foreign)
    with pytest.raises(RecordingError, match="not a DATA message for this session"):
        r.on_data(r.ack(RECORDER) + bytes(64))


def test_data_whose_events_do_not_parse_is_refused() -> None:
    s = sender()
    r = handshake(s)
    head = b"\x84\x02" + s.sid + bytes(8)
    nonce = os.urandom(24)
    blob = head + nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(5), head, nonce,
                                                                    r.opened.key)
    with pytest.raises(RecordingError, match="malformed"):
        r.on_data(blob)


def test_a_refusal_reason_is_cut_to_512_bytes() -> None:
    s = sender()
    blob = refuse(s.open_message, RECORDER, "x" * 600)
    assert blob is not None and s.on_message(blob, NOW)
    assert s.refused == "x" * 512


def test_message_type_reads_an_18_byte_prefix_and_refuses_unknown_types() -> None:
    sid = os.urandom(16)
    assert message_type(b"\x84\x01" + sid) == (RecType.OPEN, sid)
    with pytest.raises(RecordingError, match="too short"):
        message_type(b"\x84\x01" + sid[:15])
    with pytest.raises(RecordingError, match="unknown recording message 9"):
        message_type(b"\x84\x09" + sid)
    with pytest.raises(RecordingError, match="unsupported recording version 131"):
        message_type(b"\x83\x01" + sid)


def test_a_sender_records_required_unless_told_otherwise() -> None:
    sid = os.urandom(16)
    body = session_body(sid=sid, grant_token=token(), agent="web1", client="u-alice", cols=80,
                        rows=24, term=None, started=NOW)
    s = RecordingSender(sid=sid, signing_key=AGENT, recorder_x25519=bytes(RECORDER_X.public_key),
                        recorder_ed25519=bytes(RECORDER.verify_key), body=body, now=NOW,
                        rand=os.urandom)
    assert s.required
    assert s.record(EventKind.OUTPUT, bytes(OPTIONAL_BUFFER + 1), NOW)  # never drops


def test_an_ack_of_the_wrong_length_is_not_read() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"x", NOW)
    r.stored = 1
    ack = r.ack(RECORDER)
    assert not s.on_message(ack + b"\x00", NOW)
    assert not s.on_message(ack[:-1], NOW)
    assert s.acked == 0
    assert s.on_message(ack, NOW) and s.acked == 1


def test_open_recording_takes_its_options_by_keyword_only() -> None:
    s = sender()
    with pytest.raises(TypeError):
        open_recording(s.open_message, "rec", bytes(RECORDER_X),  # type: ignore[misc]
                       bytes(AUTHORITY.verify_key))


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little")])
def test_low_order_keys_are_refused(point: bytes) -> None:
    head = b"\x84\x01" + os.urandom(16) + point
    with pytest.raises(RecordingError, match="low-order public key"):
        open_recording(head + bytes(16 + 64), recorder_name="rec", x25519_secret=bytes(RECORDER_X),
                       authority_key=bytes(AUTHORITY.verify_key))
    with pytest.raises(RecordingError, match="low-order public key"):
        RecordingSender(sid=os.urandom(16), signing_key=AGENT, recorder_x25519=point,
                        recorder_ed25519=bytes(RECORDER.verify_key), body={"grant": "t"}, now=NOW,
                        rand=os.urandom)


def test_silence_counts_from_the_first_event_the_recorder_owes() -> None:
    s = sender()
    handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW + 10)  # nothing was owed: the clock starts here
    s.record(EventKind.OUTPUT, b"b", NOW + 20)  # already owed: it keeps running
    assert s.silent_for(NOW + 25) == 15


def test_a_manual_checkpoint_restarts_the_count_of_1024() -> None:
    s = sender()
    s.checkpoint(NOW)
    for _ in range(1023):
        s.record(EventKind.OUTPUT, b"x", NOW)
    assert s.next_index == 1 + 1023
    s.record(EventKind.OUTPUT, b"x", NOW)
    assert s.next_index == 1 + 1024 + 1  # the 1024th event is followed by a checkpoint


def test_the_open_timer_is_the_next_deadline_until_an_ack() -> None:
    s = sender()
    assert s.next_deadline() == NOW
    s.take_outgoing(NOW)
    assert s.next_deadline() == NOW + RTO_MIN


def test_an_ack_frees_exactly_the_events_it_covers() -> None:
    s = sender()
    r = handshake(s)
    for data in (b"a", b"bb", b"ccc"):
        s.record(EventKind.OUTPUT, data, NOW)
    [blob] = s.take_outgoing(NOW)
    r.on_data(blob)
    r.stored = 2
    assert s.on_message(r.ack(RECORDER), NOW)
    assert s.unacked_bytes == 21 + 3  # "ccc" is not durable yet: kept for a resend


def test_a_re_ack_without_progress_does_not_count_as_hearing_from_the_recorder() -> None:
    """A recorder that cannot store re-acks its old count; that must not look like an answer."""
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW)
    pump(s, r, NOW)
    assert s.acked == 1
    s.record(EventKind.OUTPUT, b"b", NOW + 1)  # owed from NOW + 1
    s.take_outgoing(NOW + 1)
    assert not s.on_message(r.ack(RECORDER), NOW + 5)  # stored is still 1
    assert s.silent_for(NOW + 6) == 5


def test_after_everything_is_acked_the_next_send_arms_a_fresh_timer() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW)
    pump(s, r, NOW + 1)
    s.record(EventKind.OUTPUT, b"b", NOW + 10)
    assert s.take_outgoing(NOW + 10)
    assert s.next_deadline() == NOW + 10 + RTO_MIN


def test_an_opened_recording_is_immutable() -> None:
    s = sender()
    r = handshake(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.opened.key = bytes(32)  # type: ignore[misc]


def test_every_ack_with_progress_counts_as_hearing_from_the_recorder() -> None:
    s = sender()
    r = handshake(s)
    s.record(EventKind.OUTPUT, b"a", NOW + 1)
    s.record(EventKind.OUTPUT, b"b", NOW + 1)
    [blob] = s.take_outgoing(NOW + 1)
    r.on_data(blob)
    r.stored = 1
    assert s.on_message(r.ack(RECORDER), NOW + 3)  # progress, and not the first ack
    assert s.silent_for(NOW + 4) == 1  # b is still owed, counted from the ack
