"""The recorder stream (tether/recording.py), its events and the recorder's log
(tether/recevents.py, recorder/store.py)."""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass
from typing import Any

from tether import recording
from tether.crypto import aead_open, aead_seal, kdf
from tether.encoding import dumps, loads
from tether.recevents import (
    Event,
    EventError,
    EventKind,
    TruncatedRecord,
    decode_events,
    iter_log,
    log_record,
)
from tether.recorder.store import SessionFile
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, expect_types, seed


def _events(data: bytes) -> None:
    events = decode_events(data)
    assert b"".join(e.encode() for e in events) == data, "events do not re-encode to their bytes"


_SESSION_TYPES: dict[str, tuple[type, ...]] = {"exit_code": (int, type(None)), "exit_signal": (int, type(None))}


def _log(data: bytes) -> None:
    """The recorder's log reader, as `Store.recover` and `repair` run it."""
    session = SessionFile("00" * 16, -1, 0, 0, bytes(32))
    end = 0
    for stored in iter_log(data):
        session.add(stored.event, stored.chain)
        expect_types(session, _SESSION_TYPES)
        end = stored.offset + len(stored.event.encode()) + len(stored.chain)
    assert end == len(data)


def _event_seeds() -> list[bytes]:
    events = [Event(0, 0, EventKind.RESIZE, struct.pack(">HH", 80, 24)), Event(1, 10, EventKind.OUTPUT, b"$ "),
              Event(2, 20, EventKind.EXIT, dumps({"code": 0, "signal": None})),
              Event(3, 30, EventKind.END, bytes(64))]
    return [seed(0, b"".join(e.encode() for e in events)),
            seed(1, b"".join(log_record(e, bytes([e.index]) * 32) for e in events))]


RECEVENTS = Harness("recevents", "tether/recevents.py decode_events, iter_log; recorder/store.py SessionFile.add",
                    (EventError, TruncatedRecord), (_events, _log), _event_seeds)



_OPEN_EPH_PUB = bytes(fx.OPEN_EPH.public_key)
_OPEN_HEAD = recording.PREFIX.pack(recording.REC_VERSION, recording.RecType.OPEN, fx.SID) + _OPEN_EPH_PUB
_OPEN_KEY = kdf(recording._dh(bytes(fx.OPEN_EPH), fx.RECORDER_X_PUB), b"tether-rec-body",
                _OPEN_HEAD + fx.RECORDER_X_PUB)


def _session_body() -> dict[str, Any]:
    return recording.session_body(sid=fx.SID, grant_token=fx.grant_token(), agent=fx.AGENT_NAME,
                                  client=fx.CLIENT_MQTT, cols=80, rows=24, term="xterm", started=fx.NOW)


def _sender() -> recording.RecordingSender:
    return recording.RecordingSender(sid=fx.SID, signing_key=fx.AGENT, recorder_x25519=fx.RECORDER_X_PUB,
                                     recorder_ed25519=fx.RECORDER_PK, body=_session_body(), now=fx.NOW,
                                     rand=fx.fixed_random(fx.OPEN_EPH))


def _open(blob: bytes) -> recording.OpenedRecording:
    return recording.open_recording(blob, recorder_name=fx.RECORDER_NAME, x25519_secret=bytes(fx.RECORDER_X),
                                    authority_key=fx.AUTHORITY_PK, agent=fx.AGENT_NAME)


def _open_raw(data: bytes) -> None:
    recording.refuse(data, fx.RECORDER, "refused")
    recording.open_signer_matches(data, fx.SID, fx.AGENT_PK, fx.grant_token())
    recording.RecordingReceiver(_open(data))


def _open_sealed(data: bytes) -> None:
    """A fuzzed body, sealed to the recorder and signed by the agent."""
    unsigned = _OPEN_HEAD + aead_seal(_OPEN_KEY, recording.OPEN_NONCE, _OPEN_HEAD, data)
    try:
        token = str(loads(data).get("grant", ""))  # the honest agent signs the grant it sends
    except (ValueError, AttributeError):
        token = ""
    sig = fx.AGENT.sign(recording._open_signed(token, unsigned)).signature
    recording.RecordingReceiver(_open(unsigned + sig))


def _open_seeds() -> list[bytes]:
    body = _session_body()
    return [seed(0, _sender().open_message), seed(1, dumps(body)), seed(1, dumps(dict(body, sid="00")))]


RECORDING_OPEN = Harness("recording-open", "tether/recording.py open_recording, refuse, open_signer_matches",
                         (recording.RecordingError,), (_open_raw, _open_sealed), _open_seeds)


@dataclass
class _DataSetup:
    opened: recording.OpenedRecording
    messages: list[bytes]  # a real session's DATA messages


def _data_setup() -> _DataSetup:
    sender = _sender()
    opened = _open(sender.open_message)
    sender.take_outgoing(fx.NOW)
    sender.on_message(recording.RecordingReceiver(opened).ack(fx.RECORDER), fx.NOW)
    sender.record(EventKind.RESIZE, struct.pack(">HH", 80, 24), fx.NOW)
    sender.record(EventKind.OUTPUT, b"$ ls\r\n", fx.NOW + 1)
    sender.checkpoint(fx.NOW + 2)
    sender.record(EventKind.EXIT, dumps({"code": 0, "signal": None}), fx.NOW + 3)
    sender.finish(fx.NOW + 3)
    return _DataSetup(opened, sender.take_outgoing(fx.NOW + 3))


_DATA = _data_setup()
_DATA_HEAD = recording.PREFIX.pack(recording.REC_VERSION, recording.RecType.DATA, fx.SID)


def _data_raw(data: bytes) -> None:
    recording.RecordingReceiver(_DATA.opened).on_data(data)


def _data_sealed(data: bytes) -> None:
    """first index u8, then fuzzed events, sealed with the session's key."""
    if not data:
        return
    head = _DATA_HEAD + recording.INDEX.pack(data[0])
    nonce = bytes(recording.NONCE_LEN)
    body = aead_seal(_DATA.opened.key, nonce, head, data[1:])
    got = recording.RecordingReceiver(_DATA.opened).on_data(head + nonce + body)
    assert all(len(chain) == 32 for _event, chain in got.events)


def _data_seeds() -> list[bytes]:

    hlen = recording.PREFIX.size + recording.INDEX.size
    inner = []
    for msg in _DATA.messages:
        nonce = msg[hlen:hlen + recording.NONCE_LEN]
        plain = aead_open(_DATA.opened.key, nonce, msg[:hlen], msg[hlen + recording.NONCE_LEN:])
        assert plain is not None
        inner.append(seed(1, bytes([recording.INDEX.unpack_from(msg, recording.PREFIX.size)[0]]) + plain))
    return [seed(0, m) for m in _DATA.messages] + inner


RECORDING_DATA = Harness("recording-data", "tether/recording.py RecordingReceiver.on_data",
                         (recording.RecordingError,), (_data_raw, _data_sealed), _data_seeds)


def _opened_sender() -> recording.RecordingSender:
    """A sender that sent its OPEN and has one event waiting for an ack."""
    sender = _sender()
    sender.take_outgoing(fx.NOW)
    sender.record(EventKind.OUTPUT, b"x", fx.NOW)
    return sender


_ACK_SENDER = _opened_sender()


def _ack_sender() -> recording.RecordingSender:
    return copy.deepcopy(_ACK_SENDER)  # a fresh one each time, at a tenth of the cost


def _acks_raw(data: bytes) -> None:
    _ack_sender().on_message(data, fx.NOW)


def _acks_signed(data: bytes) -> None:
    """ACK: stored u64 from the input; REFUSE: the rest as the reason; both signed."""
    sender = _ack_sender()
    if data[:1] == b"A":
        prefix = recording.PREFIX.pack(recording.REC_VERSION, recording.RecType.ACK, fx.SID)
        stored = int.from_bytes(data[1:9], "big")
        sig = fx.RECORDER.sign(recording._ack_message(sender.open_hash, prefix, stored)).signature
        blob = prefix + recording.INDEX.pack(stored) + sig
    else:
        prefix = recording.PREFIX.pack(recording.REC_VERSION, recording.RecType.REFUSE, fx.SID)
        sig = fx.RECORDER.sign(recording._refuse_message(sender.open_hash, prefix, data[1:])).signature
        blob = prefix + sig + data[1:]
    sender.on_message(blob, fx.NOW)
    sender.take_outgoing(fx.NOW + 1)


def _ack_seeds() -> list[bytes]:
    return [seed(0, recording.RecordingReceiver(_DATA.opened).ack(fx.RECORDER)),
            seed(1, b"A" + struct.pack(">Q", 1)), seed(1, b"Rno space left")]


RECORDING_ACK = Harness("recording-ack", "tether/recording.py RecordingSender.on_message (ACK, REFUSE)", (),
                        (_acks_raw, _acks_signed), _ack_seeds)


HARNESSES = {h.name: h for h in (RECEVENTS, RECORDING_OPEN, RECORDING_DATA, RECORDING_ACK)}
