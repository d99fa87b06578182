"""Agent enrolment with an activation (sans-IO), modelled on SSM hybrid activations.

The admin creates an activation: an id and a one-time-shown code. The device generates
its keys and sends its public keys, with a MAC keyed from the code and a signature by its
new Ed25519 key. The code never travels: the MQTT password of the activation principal
and the MAC key are both derived from it. The authority answers with the agent's broker
credentials and the trust anchor (the authority's keys), sealed to the device's new
X25519 key and MAC'd with the code, so the device knows the answer comes from whoever
created the activation.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tether.crypto import Random
from tether.encoding import b64d, b64e, dumps, loads
from tether.envelope import new_nonce, open_sealed, seal_to
from tether.errors import TetherError
from tether.skew import within_skew

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes get read aloud


class EnrolError(TetherError):
    """The enrolment cannot proceed; the message says why."""


def new_activation_id(rand: Random) -> str:
    return "act-" + rand(4).hex()


def new_code(rand: Random) -> str:
    """20 symbols of the 32-letter alphabet, 5 bits each from 100 random bits: uniform,
    with no modulo bias (32 divides 2**100)."""
    bits = int.from_bytes(rand(13), "big") >> 4
    raw = "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(20))
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))


def _derive(code: str, purpose: bytes) -> bytes:
    normalised = code.replace("-", "").upper().encode()
    return hashlib.blake2b(normalised, digest_size=32, person=b"tether-enrol", salt=purpose[:16]).digest()


def mqtt_password(code: str) -> str:
    """The activation principal's broker password: derived, so the code is never sent."""
    return b64e(_derive(code, b"mqtt"))


def _mac(code: str, body: bytes) -> str:
    return b64e(hmac.new(_derive(code, b"mac"), body, hashlib.sha256).digest())


def _mac_ok(code: str, body: bytes, mac: object) -> bool:
    """Whether `mac` is body's MAC under the code, in constant time. Any value off the wire
    is at worst wrong: compare_digest raises on non-ASCII text, which no caller catches."""
    return isinstance(mac, str) and mac.isascii() and hmac.compare_digest(_mac(code, body), mac)


def build_request(agent_key: SigningKey, x25519_public: bytes, activation: str, code: str,
                  name: str, now: float, rand: Random) -> bytes:
    doc = {"type": "enrol", "activation": activation, "name": name, "ts": now,
           "nonce": new_nonce(rand), "ed25519": b64e(bytes(agent_key.verify_key)),
           "x25519": b64e(x25519_public)}
    body = dumps(doc)
    return dumps({"body": body.decode(), "mac": _mac(code, body),
                  "sig": b64e(agent_key.sign(b"tether-enrol\x00" + body).signature)})


def read_request(payload: bytes) -> dict[str, Any]:
    """The request's claims, unverified (to find the activation it names)."""
    try:
        outer = loads(payload)
        doc = loads(outer["body"])
        if not isinstance(doc, dict):
            raise TypeError
        return doc
    except (ValueError, KeyError, TypeError) as exc:
        raise EnrolError("malformed enrolment request") from exc


def verify_request(payload: bytes, code: str, now: float | None) -> dict[str, Any]:
    """Check the MAC, the signature and (unless now is None) the timestamp."""
    doc = read_request(payload)
    outer = loads(payload)
    body = str(outer["body"]).encode()
    if not _mac_ok(code, body, outer.get("mac")):
        raise EnrolError("wrong activation code")
    try:
        VerifyKey(b64d(str(doc["ed25519"]))).verify(b"tether-enrol\x00" + body, b64d(str(outer["sig"])))
        x = b64d(str(doc["x25519"]))
        ts = float(doc["ts"])
    except (BadSignatureError, ValueError, KeyError, TypeError) as exc:
        raise EnrolError("the request is not signed by the key it carries") from exc
    if len(x) != 32 or not within_skew(ts, ts if now is None else now):
        raise EnrolError("request timestamp outside the allowed clock skew; check NTP")
    return doc


def build_reply(request: dict[str, Any], code: str, answer: dict[str, Any], rand: Random) -> bytes:
    body = dumps(dict(answer, nonce=request["nonce"]))
    sealed = dumps({"body": body.decode(), "mac": _mac(code, body)})
    return seal_to(b64d(str(request["x25519"])), sealed, rand)


def open_reply(payload: bytes, code: str, x25519_secret: bytes, nonce: str) -> dict[str, Any] | None:
    """The authority's answer, or None if the payload is not the answer to our request."""
    opened = open_sealed(x25519_secret, payload)
    if opened is None:
        return None
    try:
        outer = loads(opened)
        body = str(outer["body"]).encode()
        doc = loads(body)
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(doc, dict) or doc.get("nonce") != nonce:
        return None
    doc["authentic"] = _mac_ok(code, body, outer.get("mac"))
    return doc
