"""The session handshake, messages 1 to 3 (tether/handshake.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tether import grants, handshake
from tether.agent.request import RequestError, parse_request
from tether.crypto import kdf
from tether.encoding import b64e, dumps
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed

_CLIENT_EPH_PUB = bytes(fx.CLIENT_EPH.public_key)
_HELLO_ES = handshake._dh(bytes(fx.CLIENT_EPH), fx.AGENT_X_PUB)
_HELLO_PREFIX = handshake.PREFIX.pack(handshake.HS_VERSION, handshake.HsType.HELLO, fx.SID) + _CLIENT_EPH_PUB


def _client_handshake() -> handshake.ClientHandshake:
    client = handshake.ClientHandshake(
        client_key=fx.CLIENT, agent_signing_key=fx.AGENT_PK, agent_x25519=fx.AGENT_X_PUB, sid=fx.SID,
        request={"grant": fx.grant_token(), "mode": "shell", "term": "xterm-256color"},
        rand=fx.fixed_random(fx.CLIENT_EPH))  # a fixed ephemeral, so inputs replay the same way
    return client


def _agent_handshake() -> handshake.AgentHandshake:
    return handshake.AgentHandshake(fx.AGENT, bytes(fx.AGENT_X), rand=fx.fixed_random(fx.AGENT_EPH))


def _on_hello(msg: bytes) -> None:
    """What the agent does with a HELLO (agent/service.py `_on_hello`): open it, parse the
    request, check the grant, and answer a refusal with a sealed reason."""
    try:
        hello = _agent_handshake().open_hello(msg, fx.NOW)
    except handshake.HelloRejected as exc:
        exc.hello.refuse(str(exc))
        return
    assert isinstance(hello.body, dict) and len(hello.client_key) == 32
    try:
        req = parse_request(hello.body)
        grants.GrantChecker(fx.AUTHORITY_PK, fx.AGENT_NAME, fx.AGENT_PK).check(
            req.grant, client_key=hello.client_key, mqtt_name=fx.CLIENT_MQTT, now=fx.NOW)
    except (RequestError, grants.GrantError) as exc:
        hello.refuse(str(exc))


def _hello_raw(data: bytes) -> None:
    _on_hello(data)


def _hello_sealed(data: bytes) -> None:
    key = kdf(_HELLO_ES, b"tether-hs1", _HELLO_PREFIX + fx.AGENT_X_PUB)
    _on_hello(_HELLO_PREFIX + handshake._seal(key, _HELLO_PREFIX + fx.AGENT_X_PUB, data))


def _hello_seeds() -> list[bytes]:
    client = _client_handshake()
    body = {"grant": fx.grant_token(), "mode": "shell", "client_key": b64e(fx.CLIENT_PK), "ts": fx.NOW,
            "term": "xterm-256color", "cols": 80, "rows": 24, "env": {"LANG": "C.UTF-8"}, "reason": "fuzz"}
    return [seed(0, client.hello(fx.NOW)), seed(1, dumps(body)),
            seed(1, dumps(dict(body, ts="1700000000", mode="exec", command=["ls"]))),
            seed(1, dumps(dict(body, ts=fx.NOW - 500)))]


HANDSHAKE_HELLO = Harness(
    "handshake-hello", "tether/handshake.py AgentHandshake.open_hello (message 1), then agent/request.py "
    "parse_request and the grant check, as the agent runs them", (handshake.HandshakeError,),
    (_hello_raw, _hello_sealed), _hello_seeds)


@dataclass
class _ReplySetup:
    """The client after HELLO, and what an agent needs to answer it."""

    client: handshake.ClientHandshake
    hdr2: bytes
    key2: bytes
    sig2: bytes
    refuse_key: bytes


def _reply_setup() -> _ReplySetup:
    client = _client_handshake()
    client.hello(fx.NOW)
    h1 = client._h1
    hdr2 = handshake.PREFIX.pack(handshake.HS_VERSION, handshake.HsType.ACCEPT, fx.SID) + bytes(fx.AGENT_EPH.public_key)
    ee = handshake._dh(bytes(fx.AGENT_EPH), _CLIENT_EPH_PUB)
    return _ReplySetup(client, hdr2, kdf(ee + _HELLO_ES, b"tether-hs2", h1 + hdr2),
                       fx.AGENT.sign(b"tether-hs2-sig" + h1 + hdr2).signature,
                       kdf(_HELLO_ES, b"tether-hs-refuse", h1))


_REPLY = _reply_setup()


def _reply(msg: bytes) -> None:
    _REPLY.client.accepted = {}
    _REPLY.client.on_reply(msg)
    assert isinstance(_REPLY.client.accepted, dict), "ACCEPT extras are not an object"


def _reply_raw(data: bytes) -> None:
    _reply(data)


def _reply_refuse(data: bytes) -> None:
    hdr = handshake.PREFIX.pack(handshake.HS_VERSION, handshake.HsType.REFUSE, fx.SID)
    _reply(hdr + handshake._seal(_REPLY.refuse_key, hdr, data))


def _reply_accept(data: bytes) -> None:
    """The agent's valid signature, then fuzzed extras."""
    _reply(_REPLY.hdr2 + handshake._seal(_REPLY.key2, _REPLY.hdr2, _REPLY.sig2 + data))


def _reply_accept_unsigned(data: bytes) -> None:
    _reply(_REPLY.hdr2 + handshake._seal(_REPLY.key2, _REPLY.hdr2, data))


def _reply_seeds() -> list[bytes]:
    extra = dumps({"run_as": "alice", "mode": "shell", "max_duration": 3600, "recorded": True})
    return [seed(0, _REPLY.hdr2 + handshake._seal(_REPLY.key2, _REPLY.hdr2, _REPLY.sig2 + extra)),
            seed(1, dumps({"reason": "grant has expired"})), seed(2, extra), seed(2, b""),
            seed(3, _REPLY.sig2 + extra)]


HANDSHAKE_REPLY = Harness(
    "handshake-reply", "tether/handshake.py ClientHandshake.on_reply (message 2: ACCEPT, REFUSE)",
    (handshake.HandshakeError,), (_reply_raw, _reply_refuse, _reply_accept, _reply_accept_unsigned),
    _reply_seeds)


@dataclass
class _ConfirmSetup:
    pending: handshake.PendingSession
    key3: bytes
    confirm: bytes


def _confirm_setup() -> _ConfirmSetup:
    client = _client_handshake()
    hello = _agent_handshake().open_hello(client.hello(fx.NOW), fx.NOW)
    pending = handshake.PendingSession(hello, fx.AGENT, {"mode": "shell"}, fx.fixed_random(fx.AGENT_EPH))
    confirm, _keys = client.on_reply(pending.accept)
    key3 = kdf(pending._ee + hello._es, b"tether-hs3", pending._h2)
    return _ConfirmSetup(pending, key3, confirm)


_CONFIRM = _confirm_setup()
_HDR3 = handshake.PREFIX.pack(handshake.HS_VERSION, handshake.HsType.CONFIRM, fx.SID)


def _confirm_raw(data: bytes) -> None:
    _CONFIRM.pending.on_confirm(data)


def _confirm_sealed(data: bytes) -> None:
    _CONFIRM.pending.on_confirm(_HDR3 + handshake._seal(_CONFIRM.key3, _HDR3, data))


def _confirm_seeds() -> list[bytes]:
    sig = fx.CLIENT.sign(b"tether-hs3-sig" + _CONFIRM.pending._h2).signature
    return [seed(0, _CONFIRM.confirm), seed(1, sig), seed(1, sig[:63])]


HANDSHAKE_CONFIRM = Harness("handshake-confirm", "tether/handshake.py PendingSession.on_confirm (message 3)",
                            (handshake.HandshakeError,), (_confirm_raw, _confirm_sealed), _confirm_seeds)


HARNESSES = {h.name: h for h in (HANDSHAKE_HELLO, HANDSHAKE_REPLY, HANDSHAKE_CONFIRM)}
