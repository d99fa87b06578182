"""Agent enrolment requests and replies (tether/enrolment.py)."""

from __future__ import annotations

from tether import enrolment
from tether.encoding import b64e, dumps, loads
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed


def _enrol_request(payload: bytes) -> None:
    assert isinstance(enrolment.read_request(payload), dict)
    assert isinstance(enrolment.verify_request(payload, fx.ENROL_CODE, fx.NOW), dict)


def _enrol_request_raw(data: bytes) -> None:
    _enrol_request(data)


def _enrol_request_signed(data: bytes) -> None:
    """A fuzzed body with the right MAC and a valid signature by the device key."""
    body = data.decode("utf-8", "replace")
    raw = body.encode()
    _enrol_request(dumps({"body": body, "mac": enrolment._mac(fx.ENROL_CODE, raw),
                          "sig": b64e(fx.AGENT.sign(b"tether-enrol\x00" + raw).signature)}))


def _enrol_request_seeds() -> list[bytes]:
    payload = enrolment.build_request(fx.AGENT, fx.DEVICE_X_PUB, "act-1", fx.ENROL_CODE, fx.AGENT_NAME, fx.NOW, rand=fx.fixed_random(fx.REPLY_X))
    return [seed(0, payload), seed(1, str(loads(payload)["body"]).encode())]


ENROLMENT_REQUEST = Harness("enrolment-request", "tether/enrolment.py read_request, verify_request",
                            (enrolment.EnrolError,), (_enrol_request_raw, _enrol_request_signed),
                            _enrol_request_seeds)


def _enrol_reply(payload: bytes) -> None:
    doc = enrolment.open_reply(payload, fx.ENROL_CODE, bytes(fx.DEVICE_X), fx.REPLY_NONCE)
    assert doc is None or isinstance(doc, dict)


def _enrol_reply_raw(data: bytes) -> None:
    _enrol_reply(data)


def _enrol_reply_sealed(data: bytes) -> None:
    _enrol_reply(fx.seal_to(fx.DEVICE_X_PUB, data))


def _enrol_reply_maced(data: bytes) -> None:
    body = data.decode("utf-8", "replace")
    outer = dumps({"body": body, "mac": enrolment._mac(fx.ENROL_CODE, body.encode())})
    _enrol_reply(fx.seal_to(fx.DEVICE_X_PUB, outer))


def _enrol_reply_seeds() -> list[bytes]:
    answer = {"ok": True, "broker": {"host": "127.0.0.1", "port": 1883}, "nonce": fx.REPLY_NONCE}
    request = {"nonce": fx.REPLY_NONCE, "x25519": b64e(fx.DEVICE_X_PUB)}
    return [seed(0, enrolment.build_reply(request, fx.ENROL_CODE, {"ok": True}, fx.fixed_random(fx.AGENT_EPH))),
            seed(1, dumps({"body": dumps(answer).decode(), "mac": "x"})), seed(2, dumps(answer))]


ENROLMENT_REPLY = Harness("enrolment-reply", "tether/enrolment.py open_reply", (),
                          (_enrol_reply_raw, _enrol_reply_sealed, _enrol_reply_maced), _enrol_reply_seeds)


HARNESSES = {h.name: h for h in (ENROLMENT_REQUEST, ENROLMENT_REPLY)}
