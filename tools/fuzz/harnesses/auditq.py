"""Audit queries and their chunked replies (tether/auditq.py)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

from nacl.public import SealedBox

from tether import auditq
from tether.encoding import b64e, dumps
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed


def _audit_query(payload: bytes) -> None:
    query = auditq.open_query(bytes(fx.RECORDER_X), fx.AUTHORITY_PK, payload, fx.NOW)
    assert isinstance(query.nonce, str) and isinstance(query.op, str) and isinstance(query.args, dict)
    assert auditq.CHUNK_MIN <= query.chunk <= auditq.CHUNK_MAX and len(query.reply_key) == 32
    with contextlib.suppress(auditq.QueryRefused):
        auditq.authorise(query, recorder=fx.RECORDER_NAME, recorder_key=fx.RECORDER_PK,
                         client=fx.CLIENT_MQTT, now=fx.NOW)
    auditq.build_replies(fx.RECORDER, query, {"ok": True}, fx.fixed_random(fx.AGENT_EPH))


def _audit_query_raw(data: bytes) -> None:
    _audit_query(data)


def _audit_query_sealed(data: bytes) -> None:
    _audit_query(fx.seal_to(fx.RECORDER_X_PUB, data))


def _audit_query_signed(data: bytes) -> None:
    _audit_query(fx.seal_to(fx.RECORDER_X_PUB, fx.sign_raw(fx.CLIENT, auditq.QUERY, data)))


def _audit_query_doc() -> dict[str, Any]:
    return {"type": auditq.QUERY, "grant": fx.grant_token("audit"), "op": "search",
            "args": {"q": "rm -rf", "limit": 10}, "nonce": fx.REPLY_NONCE, "ts": fx.NOW,
            "reply_key": b64e(fx.REPLY_X_PUB), "chunk": auditq.CHUNK_SMALL}


def _audit_query_seeds() -> list[bytes]:
    pending = auditq.build_query(fx.CLIENT, fx.grant_token("audit"), fx.RECORDER_X_PUB, "list", {}, fx.NOW, rand=fx.fixed_random(fx.REPLY_X))
    doc = _audit_query_doc()
    return [seed(0, pending.payload), seed(1, fx.sign_raw(fx.CLIENT, auditq.QUERY, dumps(doc))),
            seed(2, dumps(doc))]


AUDITQ_QUERY = Harness("auditq-query", "tether/auditq.py open_query, authorise, Query",
                       (auditq.QueryDropped, auditq.QueryRefused),
                       (_audit_query_raw, _audit_query_sealed, _audit_query_signed), _audit_query_seeds)

_AUDIT_PENDING = auditq.PendingQuery(fx.REPLY_NONCE, fx.REPLY_X, b"")


def _offer(payloads: Sequence[bytes]) -> None:
    assembler = auditq.ReplyAssembler(_AUDIT_PENDING, fx.RECORDER_PK)
    for payload in payloads:
        response = assembler.offer(payload)
        assert response is None or isinstance(response, dict)


def _audit_reply_raw(data: bytes) -> None:
    _offer([data])


def _audit_reply_sealed(data: bytes) -> None:
    _offer([fx.seal_to(fx.REPLY_X_PUB, data)])


@functools.lru_cache(maxsize=4096)
def _signed_chunk(doc: bytes) -> bytes:
    """A reply chunk as the recorder sends it; cached, as mutations repeat most chunks."""
    return fx.seal_to(fx.REPLY_X_PUB, fx.sign_raw(fx.RECORDER, auditq.REPLY, doc))


def _audit_reply_signed(data: bytes) -> None:
    """Up to 4 signed chunks, NUL-separated (JSON never holds a raw NUL)."""
    _offer([_signed_chunk(part) for part in data.split(b"\x00")[:4]])


def _audit_reply_seeds() -> list[bytes]:
    query = auditq.Query(dict(_audit_query_doc(), chunk=auditq.CHUNK_MIN), fx.grant("audit"))
    replies = auditq.build_replies(fx.RECORDER, query, {"ok": True, "sessions": [{"sid": "ab" * 16}] * 40}, fx.fixed_random(fx.AGENT_EPH))

    docs = [SealedBox(fx.REPLY_X).decrypt(r)[64:] for r in replies]
    return [seed(0, replies[0]), seed(1, fx.sign_raw(fx.RECORDER, auditq.REPLY, docs[0])),
            seed(2, b"\x00".join(docs))]


AUDITQ_REPLY = Harness("auditq-reply", "tether/auditq.py ReplyAssembler.offer", (),
                       (_audit_reply_raw, _audit_reply_sealed, _audit_reply_signed), _audit_reply_seeds)


HARNESSES = {h.name: h for h in (AUDITQ_QUERY, AUDITQ_REPLY)}
