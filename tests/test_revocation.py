"""The revocation bulletin (sans-IO): signature, domain separation, ordering, forgery."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tether.edge import revocation_file
from tether.encoding import b64e
from tether.revocation import (
    BulletinTracker,
    RevocationError,
    Revocations,
    open_bulletin,
    sign_bulletin,
)
from tether.signed import sign_document

AUTH = SigningKey.generate()
AUTH_PUB = bytes(AUTH.verify_key)


def _revs(serial: int, **kw: object) -> Revocations:
    revs = Revocations(**kw)  # type: ignore[arg-type]
    revs.serial = serial
    return revs


def test_round_trip() -> None:
    revs = _revs(3, users={"alice": {"ed25519": "k", "reason": "left"}},
                 agents={"db1": {"ed25519": "a"}}, grants={"j1": {"exp": 9e9}},
                 client_keys={"ck": {}}, terminate=[{"agent": "db1", "sid": "ab", "until": 9e9}])
    got = open_bulletin(AUTH_PUB, sign_bulletin(AUTH, revs))
    assert got == revs


def test_forged_and_tampered_bulletins_are_rejected() -> None:
    forger = SigningKey.generate()
    with pytest.raises(RevocationError):
        open_bulletin(AUTH_PUB, sign_bulletin(forger, _revs(1)))
    blob = bytearray(sign_bulletin(AUTH, _revs(1, users={"alice": {}})))
    blob[-5] ^= 1
    with pytest.raises(RevocationError):
        open_bulletin(AUTH_PUB, bytes(blob))
    # The same key signing another kind of document does not make a bulletin.
    with pytest.raises(RevocationError):
        open_bulletin(AUTH_PUB, sign_document(AUTH, "presence", _revs(1).to_doc()))
    with pytest.raises(RevocationError):
        open_bulletin(AUTH_PUB, b"x" * 10)


def test_tracker_keeps_only_newer_authentic_bulletins() -> None:
    tracker = BulletinTracker(AUTH_PUB)
    assert tracker.offer(sign_bulletin(AUTH, _revs(2, users={"alice": {}}))) is not None
    assert tracker.offer(sign_bulletin(AUTH, _revs(2))) is None  # same serial
    assert tracker.offer(sign_bulletin(AUTH, _revs(1))) is None  # older: a replay
    assert "alice" in tracker.current.users
    forged = sign_bulletin(SigningKey.generate(), _revs(10**9))
    assert tracker.offer(forged) is None
    assert tracker.rejected == 1 and tracker.current.serial == 2
    assert tracker.offer(sign_bulletin(AUTH, _revs(3))) is not None
    assert tracker.current.users == {}


def test_questions() -> None:
    key = b64e(b"k" * 32)
    revs = _revs(1, users={"alice": {"reason": "left the company", "ed25519": key}},
                 agents={"db1": {"ed25519": "agentkey"}}, grants={"j1": {"exp": 100.0}},
                 client_keys={"ck": {}},
                 terminate=[{"agent": "local", "sid": "ab", "until": 50.0},
                            {"agent": "*", "sid": "cd", "until": 50.0}])
    assert revs.grant_refusal("alice", "x", "y") == "user 'alice' has been revoked (left the company)"
    assert revs.grant_refusal("bob", "j1", "y") == "grant j1 has been revoked"
    assert revs.grant_refusal("bob", "x", "ck") is not None
    assert revs.grant_refusal("alice2", "x", key) is not None  # same key under a new name
    assert revs.grant_refusal("bob", "x", "y") is None
    assert revs.agent_refusal("db1", None) == "agent 'db1' has been revoked by the authority"
    assert revs.agent_refusal("renamed", "agentkey") is not None
    assert revs.agent_refusal("db2", "other") is None
    assert revs.terminates("local", "ab", 10.0) is not None
    assert revs.terminates("other", "ab", 10.0) is None
    assert revs.terminates("other", "cd", 10.0) is not None
    assert revs.terminates("local", "ab", 60.0) is None  # expired order


def test_bump_drops_expired_entries_and_increments_serial() -> None:
    revs = _revs(4, grants={"old": {"exp": 5.0}, "new": {"exp": 50.0}},
                 terminate=[{"sid": "a", "until": 5.0}, {"sid": "b", "until": 50.0}])
    revs.bump(10.0)
    assert revs.serial == 5 and revs.issued == 10.0
    assert list(revs.grants) == ["new"] and [t["sid"] for t in revs.terminate] == ["b"]


def test_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "authority" / "revocations.json"
    assert revocation_file.load(path) == Revocations()
    revs = _revs(7, users={"alice": {}})
    revocation_file.save(path, revs)
    assert path.stat().st_mode & 0o077 == 0
    assert revocation_file.load(path) == revs


def test_malformed_documents_are_errors() -> None:
    with pytest.raises(RevocationError):
        Revocations.from_doc({"serial": "nope"})
    with pytest.raises(RevocationError):
        Revocations.from_doc({"users": []})
    with pytest.raises(RevocationError):
        Revocations.from_doc({"terminate": ["x"]})
