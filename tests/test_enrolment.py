"""Enrolment messages (sans-IO): the code proves itself without travelling."""

from __future__ import annotations

import json
import os

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import enrolment

NOW = 1_800_000_000.0


def _request(code: str = "ABCDE-FGHJK-LMNPQ-RSTUV") -> tuple[bytes, SigningKey, PrivateKey]:
    key, x = SigningKey.generate(), PrivateKey.generate()
    return enrolment.build_request(key, bytes(x.public_key), "act-1", code, "dev1", NOW, rand=os.urandom), key, x


def test_request_verifies_with_the_code_and_does_not_contain_it() -> None:
    code = enrolment.new_code(os.urandom)
    payload, _key, _ = _request(code)
    assert code.encode() not in payload and code.replace("-", "").encode() not in payload
    doc = enrolment.verify_request(payload, code, NOW + 5)
    assert doc["name"] == "dev1" and doc["activation"] == "act-1"
    # Codes are read aloud and typed: dashes and case do not matter.
    assert enrolment.verify_request(payload, code.replace("-", "").lower(), NOW)


def test_wrong_code_stale_and_tampered_requests_are_refused() -> None:
    payload, _, _ = _request()
    with pytest.raises(enrolment.EnrolError, match="wrong activation code"):
        enrolment.verify_request(payload, "ZZZZZ-FGHJK-LMNPQ-RSTUV", NOW)
    with pytest.raises(enrolment.EnrolError, match="clock skew"):
        enrolment.verify_request(payload, "ABCDE-FGHJK-LMNPQ-RSTUV", NOW + 600)
    outer = json.loads(payload)
    outer["body"] = outer["body"].replace("dev1", "evil")
    with pytest.raises(enrolment.EnrolError):
        enrolment.verify_request(json.dumps(outer).encode(), "ABCDE-FGHJK-LMNPQ-RSTUV", NOW)
    with pytest.raises(enrolment.EnrolError, match="malformed"):
        enrolment.verify_request(b"{}", "ABCDE-FGHJK-LMNPQ-RSTUV", NOW)


def test_reply_is_sealed_to_the_device_and_authenticated_by_the_code() -> None:
    code = "ABCDE-FGHJK-LMNPQ-RSTUV"
    payload, _, x = _request(code)
    request = enrolment.verify_request(payload, code, NOW)
    reply = enrolment.build_reply(request, code, {"ok": True, "broker": {"password": "s3cret"}}, os.urandom)
    assert b"s3cret" not in reply
    doc = enrolment.open_reply(reply, code, bytes(x), request["nonce"])
    assert doc is not None and doc["ok"] and doc["authentic"]
    assert enrolment.open_reply(reply, code, bytes(x), "another-nonce") is None
    assert enrolment.open_reply(reply, code, bytes(PrivateKey.generate()), request["nonce"]) is None
    forged = enrolment.open_reply(reply, "WRONG-CODE0-00000-00000", bytes(x), request["nonce"])
    assert forged is not None and not forged["authentic"]


def test_mqtt_password_is_derived_and_stable() -> None:
    code = enrolment.new_code(os.urandom)
    assert enrolment.mqtt_password(code) == enrolment.mqtt_password(code.lower())
    assert enrolment.mqtt_password(code) != enrolment.mqtt_password(enrolment.new_code(os.urandom))
    assert code not in enrolment.mqtt_password(code)
