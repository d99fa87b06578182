"""Agent presence and status documents (tether/presence.py, tether/signed.py)."""

from __future__ import annotations

import contextlib

from tether.presence import presence_document, read_presence, read_status, status_document
from tether.signed import BadDocument
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed


def _presence_raw(data: bytes) -> None:
    with contextlib.suppress(BadDocument):
        assert isinstance(read_presence(data), dict)
    with contextlib.suppress(BadDocument):
        assert isinstance(read_presence(data, fx.AGENT_PK), dict)
    assert isinstance(read_status(data, fx.AGENT_PK), dict)


def _presence_signed(data: bytes) -> None:
    blob = fx.sign_raw(fx.AGENT, "presence", data)
    with contextlib.suppress(BadDocument):
        assert isinstance(read_presence(blob, fx.AGENT_PK), dict)
    assert isinstance(read_presence(blob), dict)


def _status_signed(data: bytes) -> None:
    assert isinstance(read_status(fx.sign_raw(fx.AGENT, "status", data), fx.AGENT_PK), dict)


def _presence_seeds() -> list[bytes]:
    doc = presence_document(fx.AGENT, fx.AGENT_NAME, fx.AGENT_X_PUB, {"env": "prod"}, True, fx.NOW, ["shell"])
    status = status_document(fx.AGENT, True, fx.NOW)
    return [seed(0, doc), seed(0, status), seed(1, doc[64:]), seed(2, status[64:])]


PRESENCE = Harness("presence", "tether/presence.py read_presence, read_status; tether/signed.py",
                   (BadDocument,), (_presence_raw, _presence_signed, _status_signed), _presence_seeds)


HARNESSES = {h.name: h for h in (PRESENCE,)}
