"""Revocation bulletins (tether/revocation.py)."""

from __future__ import annotations

from tether.encoding import b64e
from tether.revocation import DOMAIN as REVOCATION
from tether.revocation import (
    BulletinTracker,
    RevocationError,
    Revocations,
    open_bulletin,
    sign_bulletin,
)
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed


def _bulletin(blob: bytes) -> None:
    BulletinTracker(fx.AUTHORITY_PK).offer(blob)
    revoked = open_bulletin(fx.AUTHORITY_PK, blob)
    revoked.grant_refusal("alice", "0" * 32, b64e(fx.CLIENT_PK))
    revoked.agent_refusal(fx.AGENT_NAME, b64e(fx.AGENT_PK))
    revoked.terminates(fx.AGENT_NAME, fx.SID.hex(), fx.NOW)
    revoked.bump(fx.NOW)


def _bulletin_raw(data: bytes) -> None:
    _bulletin(data)


def _bulletin_signed(data: bytes) -> None:
    _bulletin(fx.sign_raw(fx.AUTHORITY, REVOCATION, data))


def _bulletin_seeds() -> list[bytes]:
    r = Revocations(serial=3, issued=fx.NOW, users={"mallory": {"ed25519": "k", "reason": "left", "at": fx.NOW}},
                    agents={"db9": {"ed25519": b64e(fx.AGENT_PK), "reason": "stolen"}},
                    grants={"0" * 32: {"exp": fx.NOW + 60}}, client_keys={b64e(fx.CLIENT_PK): {"at": fx.NOW}},
                    terminate=[{"agent": "*", "sid": fx.SID.hex(), "until": fx.NOW + 60, "nonce": "n", "by": "root"}])
    blob = sign_bulletin(fx.AUTHORITY, r)
    return [seed(0, blob), seed(1, blob[64:])]


REVOCATION_BULLETIN = Harness("revocation", "tether/revocation.py open_bulletin, BulletinTracker.offer",
                              (RevocationError,), (_bulletin_raw, _bulletin_signed), _bulletin_seeds)


HARNESSES = {h.name: h for h in (REVOCATION_BULLETIN,)}
