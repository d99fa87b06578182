"""Every crash the fuzzers (tools/fuzz) found stays fixed.

Each input under tests/vectors/fuzz/ made a decoder raise something its callers do not
catch (an exception in a broker callback kills the handler). They replay through their
harness here; the tests below rebuild each attack with the real API, so they say what
was wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from tether import auditq, enrolment, handshake
from tether.crypto import kdf
from tether.encoding import b64e, dumps, loads
from tether.handshake import HS_VERSION, PREFIX, AgentHandshake, ClientHandshake, Hello, HsType
from tether.signed import sign_document
from tools.fuzz.harnesses import NAMES, load

VECTORS = Path(__file__).parent / "vectors" / "fuzz"
NOW = 1_700_000_000.0


def _harness_of(path: Path) -> str:
    return path.name.rsplit("-", 1)[0]


@pytest.mark.parametrize("path", sorted(VECTORS.iterdir()), ids=lambda p: p.name)
def test_crash_input_stays_fixed(path: Path) -> None:
    assert _harness_of(path) in NAMES
    load(_harness_of(path)).run(path.read_bytes())


# ----- handshake: an agent's ACCEPT or REFUSE whose sealed body is not a JSON object -----


def _hello() -> tuple[ClientHandshake, Hello, SigningKey]:
    agent_key, agent_x = SigningKey.generate(), PrivateKey.generate()
    client = ClientHandshake(client_key=SigningKey.generate(), agent_signing_key=bytes(agent_key.verify_key),
                             agent_x25519=bytes(agent_x.public_key), sid=os.urandom(16), request={}, rand=os.urandom)
    hello = AgentHandshake(agent_key, bytes(agent_x), rand=os.urandom).open_hello(client.hello(NOW), NOW)
    return client, hello, agent_key


def _refuse_carrying(hello: Hello, body: bytes) -> bytes:
    hdr = PREFIX.pack(HS_VERSION, HsType.REFUSE, hello.sid)
    return hdr + handshake._seal(kdf(hello._es, b"tether-hs-refuse", hello.h1), hdr, body)


def _accept_carrying(hello: Hello, agent_key: SigningKey, extras: bytes) -> bytes:
    """An ACCEPT the real agent signed, whose extras are `extras` (as PendingSession seals)."""
    eph = PrivateKey.generate()
    hdr2 = PREFIX.pack(HS_VERSION, HsType.ACCEPT, hello.sid) + bytes(eph.public_key)
    ee = handshake._dh(bytes(eph), hello._eph_pub)
    sig = agent_key.sign(b"tether-hs2-sig" + hello.h1 + hdr2).signature
    key2 = kdf(ee + hello._es, b"tether-hs2", hello.h1 + hdr2)
    return hdr2 + handshake._seal(key2, hdr2, sig + extras)


@pytest.mark.parametrize("body", [b"\xffnot json", b"[1, 2]", b'"refused"'])
def test_refusal_that_is_not_a_json_object_is_a_handshake_error(body: bytes) -> None:
    client, hello, _key = _hello()
    with pytest.raises(handshake.HandshakeError, match="malformed refusal") as info:
        client.on_reply(_refuse_carrying(hello, body))
    assert type(info.value) is handshake.HandshakeError


@pytest.mark.parametrize("extras", [b"{not json", b"[1, 2]", b"null"])
def test_accept_whose_extras_are_not_a_json_object_is_a_handshake_error(extras: bytes) -> None:
    client, hello, agent_key = _hello()
    with pytest.raises(handshake.HandshakeError, match="malformed accept"):
        client.on_reply(_accept_carrying(hello, agent_key, extras))
    assert client.accepted == {}
    assert client.on_reply(_accept_carrying(hello, agent_key, b'{"mode": "shell"}'))
    assert client.accepted == {"mode": "shell"}


# ----- enrolment: a MAC that is not ASCII text -----

CODE = "ABCDE-FGHJK-LMNPQ-RSTUV"


def test_enrolment_request_with_a_non_ascii_mac_is_a_wrong_code() -> None:
    payload = enrolment.build_request(SigningKey.generate(), bytes(PrivateKey.generate().public_key),
                                      "act-1", CODE, "web1", NOW, rand=os.urandom)
    outer = loads(payload)
    assert enrolment.verify_request(payload, CODE, NOW)["name"] == "web1"
    forged = dumps(dict(outer, mac="é" * len(outer["mac"])))
    with pytest.raises(enrolment.EnrolError, match="wrong activation code"):
        enrolment.verify_request(forged, CODE, NOW)
    with pytest.raises(enrolment.EnrolError, match="wrong activation code"):
        enrolment.verify_request(dumps(dict(outer, mac=7)), CODE, NOW)


def test_enrolment_reply_with_a_non_ascii_mac_is_not_authentic() -> None:
    device = PrivateKey.generate()
    body = dumps({"ok": True, "nonce": "n1"}).decode()
    for mac, authentic in ((enrolment._mac(CODE, body.encode()), True), ("é", False), (None, False)):
        sealed = SealedBox(device.public_key).encrypt(dumps({"body": body, "mac": mac}))
        doc = enrolment.open_reply(sealed, CODE, bytes(device), "n1")
        assert doc is not None and doc["authentic"] is authentic


# ----- audit replies: chunks that are not base64, or do not join into JSON -----


def _chunks(recorder: SigningKey, pending: auditq.PendingQuery, parts: list[str]) -> list[bytes]:
    box = SealedBox(PublicKey(bytes(pending.reply_key.public_key)))
    return [box.encrypt(sign_document(recorder, auditq.REPLY, {
        "nonce": pending.nonce, "seq": n, "total": len(parts), "data": data}))
        for n, data in enumerate(parts)]


@pytest.mark.parametrize("parts", [["!not base64!"], [b64e(b'{"ok": '), b64e(b"\xff\xfe}")], [b64e(b"[1]")]],
                         ids=["not-base64", "not-json", "not-an-object"])
def test_audit_reply_that_is_not_a_json_object_is_no_answer(parts: list[str]) -> None:
    recorder = SigningKey.generate()
    pending = auditq.PendingQuery("ab" * 16, PrivateKey.generate(), b"")
    assembler = auditq.ReplyAssembler(pending, bytes(recorder.verify_key))
    assert [assembler.offer(c) for c in _chunks(recorder, pending, parts)] == [None] * len(parts)
    good = auditq.ReplyAssembler(pending, bytes(recorder.verify_key))
    assert good.offer(_chunks(recorder, pending, [b64e(b'{"ok": true}')])[0]) == {"ok": True}


# ----- authority: a request whose type is not a string -----


@pytest.mark.parametrize("kind", [[], {}, ["grant"], 3, None])
def test_request_whose_type_is_not_a_string_is_an_unknown_type(kind: object) -> None:
    from tether.authority.requests import request_problem

    problem = request_problem({"type": kind, "mode": "shell"})
    assert problem is not None and problem.startswith("unknown request type")


# ----- recorder: an EXIT event whose code or signal SQLite cannot bind -----


@pytest.mark.parametrize("bad", [{}, [], "1", 2**63, True, 1.5])
def test_exit_status_that_sqlite_cannot_bind_is_stored_as_unknown(bad: object) -> None:
    import sqlite3

    from tether.recevents import Event, EventKind
    from tether.recorder.store import SessionFile

    row = SessionFile(sid="ab", fd=-1, events=0, log_bytes=0, chain=b"")
    row.add(Event(0, 1_000, EventKind.EXIT, dumps({"code": bad, "signal": bad})), b"c" * 32)
    assert (row.exit_code, row.exit_signal) == (None, None)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (code INTEGER, signal INTEGER)")
    db.execute("INSERT INTO t VALUES (?, ?)", (row.exit_code, row.exit_signal))  # the commit's bind
    row.add(Event(1, 2_000, EventKind.EXIT, dumps({"code": 3, "signal": 15})), b"d" * 32)
    assert (row.exit_code, row.exit_signal) == (3, 15)
