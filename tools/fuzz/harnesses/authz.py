"""Grant requests and replies (tether/authz.py)."""

from __future__ import annotations

from tether import authz
from tether.authority.requests import request_problem
from tether.encoding import b64e, dumps
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed


def _authz_request(payload: bytes) -> None:
    """What the authority does with a request: unseal, verify, then check every field."""
    claimed, blob = authz.open_request_envelope(bytes(fx.AUTHORITY_X), payload)
    assert isinstance(claimed, str)
    request = authz.verify_request(fx.CLIENT_PK, blob, fx.NOW)
    assert isinstance(request, dict)
    problem = request_problem(request)
    assert problem is None or isinstance(problem, str)


def _authz_request_raw(data: bytes) -> None:
    _authz_request(data)


def _authz_request_sealed(data: bytes) -> None:
    _authz_request(fx.seal_to(fx.AUTHORITY_X_PUB, data))


def _authz_request_signed(data: bytes) -> None:
    _authz_request(fx.seal_to(fx.AUTHORITY_X_PUB, fx.sign_raw(fx.CLIENT, authz.REQUEST, data)))


def _authz_request_seeds() -> list[bytes]:
    body = {"type": "grant", "agent": fx.AGENT_NAME, "mode": "shell", "run_as": "alice", "reason": "fuzz"}
    pending = authz.build_request(fx.CLIENT, "alice", fx.AUTHORITY_X_PUB, body, fx.NOW, rand=fx.fixed_random(fx.REPLY_X))
    doc = dict(body, user="alice", nonce=fx.REPLY_NONCE, ts=fx.NOW, reply_key=b64e(fx.REPLY_X_PUB))
    signed = fx.sign_raw(fx.CLIENT, authz.REQUEST, dumps(doc))
    return [seed(0, pending.payload), seed(1, signed), seed(2, dumps(doc))]


AUTHZ_REQUEST = Harness("authz-request", "tether/authz.py open_request_envelope, verify_request; authority/requests.py request_problem",
                        (authz.AuthzError,),
                        (_authz_request_raw, _authz_request_sealed, _authz_request_signed), _authz_request_seeds)

_AUTHZ_PENDING = authz.PendingRequest(fx.REPLY_NONCE, fx.REPLY_X, b"")


def _authz_reply(payload: bytes) -> None:
    doc = authz.open_reply(_AUTHZ_PENDING, fx.AUTHORITY_PK, payload)
    assert doc is None or isinstance(doc, dict)


def _authz_reply_raw(data: bytes) -> None:
    _authz_reply(data)


def _authz_reply_sealed(data: bytes) -> None:
    _authz_reply(fx.seal_to(fx.REPLY_X_PUB, data))


def _authz_reply_signed(data: bytes) -> None:
    _authz_reply(fx.seal_to(fx.REPLY_X_PUB, fx.sign_raw(fx.AUTHORITY, authz.REPLY, data)))


def _authz_reply_seeds() -> list[bytes]:
    request = {"nonce": fx.REPLY_NONCE, "reply_key": b64e(fx.REPLY_X_PUB)}
    reply = {"ok": True, "grant": fx.grant_token(), "nonce": fx.REPLY_NONCE}
    return [seed(0, authz.build_reply(fx.AUTHORITY, request, {"ok": True, "grant": fx.grant_token()}, fx.fixed_random(fx.AGENT_EPH))),
            seed(1, fx.sign_raw(fx.AUTHORITY, authz.REPLY, dumps(reply))), seed(2, dumps(reply))]


AUTHZ_REPLY = Harness("authz-reply", "tether/authz.py open_reply", (authz.AuthzError,),
                      (_authz_reply_raw, _authz_reply_sealed, _authz_reply_signed), _authz_reply_seeds)


HARNESSES = {h.name: h for h in (AUTHZ_REQUEST, AUTHZ_REPLY)}
