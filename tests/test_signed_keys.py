"""Tests for tether.signed (domain-separated signed documents) and tether.edge.keys (identity files)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tether import presence
from tether.edge.keys import Identity, KeyFileError, read_private_file, write_private_file
from tether.signed import SIG_LEN, BadDocument, open_document, peek_document, sign_document

KEY = SigningKey(bytes(range(32)))
PK = bytes(KEY.verify_key)
DOC = {"name": "web1", "labels": {"env": "prod"}, "ts": 1_700_000_000.0, "n": 3}
DOMAINS = ["presence", "status", "grant-request", "grant-reply", "recording"]


# ----- signed documents -----


def test_sign_open_round_trip() -> None:
    blob = sign_document(KEY, "presence", DOC)
    assert open_document(PK, "presence", blob) == DOC
    assert peek_document(blob) == DOC
    assert len(blob) > SIG_LEN


def test_canonical_encoding_is_independent_of_key_order() -> None:
    a = sign_document(KEY, "presence", {"a": 1, "b": 2})
    b = sign_document(KEY, "presence", {"b": 2, "a": 1})
    assert a == b


@pytest.mark.parametrize("signed_as", DOMAINS)
@pytest.mark.parametrize("checked_as", DOMAINS)
def test_domain_separation(signed_as: str, checked_as: str) -> None:
    blob = sign_document(KEY, signed_as, DOC)
    if signed_as == checked_as:
        assert open_document(PK, checked_as, blob) == DOC
    else:
        with pytest.raises(BadDocument, match="signature"):
            open_document(PK, checked_as, blob)


def test_presence_signature_does_not_verify_as_another_domain() -> None:
    blob = presence.presence_document(KEY, "web1", bytes(32), {"env": "prod"}, True, 1_700_000_000.0, ["shell"])
    assert presence.read_presence(blob, PK)["name"] == "web1"
    assert open_document(PK, presence.DOMAIN, blob)["online"] is True
    # A status document has the same signer and an overlapping shape ("online"): a
    # presence signature must still not pass as one.
    with pytest.raises(BadDocument):
        presence.read_status(blob, PK)
    for other in ("status", "grant-request", "grant-reply", "presence2", "presenc", ""):
        with pytest.raises(BadDocument):
            open_document(PK, other, blob)
    status = presence.status_document(KEY, True, 1_700_000_000.0)
    assert presence.read_status(status, PK)["online"] is True
    with pytest.raises(BadDocument):
        presence.read_presence(status, PK)


def test_domain_label_cannot_be_shifted_into_body() -> None:
    """Without a separator, ("pres", "ence...") and ("presence", "...") could collide."""
    blob = sign_document(KEY, "grant", {"x": 1})
    with pytest.raises(BadDocument):
        open_document(PK, "gran", blob)
    with pytest.raises(BadDocument):
        open_document(PK, "grant\x00", blob)


def test_wrong_key_and_tampering_rejected() -> None:
    blob = sign_document(KEY, "presence", DOC)
    with pytest.raises(BadDocument):
        open_document(bytes(SigningKey.generate().verify_key), "presence", blob)
    for i in range(0, len(blob), 5):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(BadDocument):
            open_document(PK, "presence", bytes(bad))
    # Appending whitespace keeps the JSON valid but changes the signed bytes.
    with pytest.raises(BadDocument):
        open_document(PK, "presence", blob + b" ")


def test_malformed_documents() -> None:
    with pytest.raises(BadDocument, match="short"):
        peek_document(bytes(SIG_LEN))
    with pytest.raises(BadDocument, match="JSON"):
        peek_document(bytes(SIG_LEN) + b"{not json")
    with pytest.raises(BadDocument, match="object"):
        peek_document(bytes(SIG_LEN) + b"[1, 2]")
    with pytest.raises(BadDocument):
        open_document(b"short key", "presence", sign_document(KEY, "presence", DOC))


# ----- identity files -----


def test_identity_save_load_round_trip(tmp_path: Path) -> None:
    ident = Identity.generate("web1", "agent", with_x25519=True)
    ident.broker = {"host": "mqtt.example", "port": 8883, "password": "s3cret"}
    ident.authority = {"ed25519": "AAAA", "x25519": "BBBB"}
    ident.labels = {"env": "prod"}
    path = tmp_path / "id" / "web1.json"
    ident.save(path)
    loaded = Identity.load(path)
    assert loaded == ident
    assert loaded.public_key == ident.public_key
    assert loaded.x25519_public == ident.x25519_public


def test_identity_without_x25519(tmp_path: Path) -> None:
    ident = Identity.generate("alice", "user")
    path = tmp_path / "alice.json"
    ident.save(path)
    loaded = Identity.load(path)
    assert loaded == ident
    assert loaded.x25519_secret is None
    with pytest.raises(KeyFileError, match="X25519"):
        _ = loaded.x25519_public


def test_identity_file_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "dir" / "id.json"
        Identity.generate("a", "user").save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_replaces_an_exposed_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    path.write_text("old contents")
    path.chmod(0o644)
    ident = Identity.generate("a", "user")
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path) == ident


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"one")
    write_private_file(path, b"two")
    assert read_private_file(path) == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o700, 0o610, 0o601])
def test_load_refuses_group_or_world_accessible_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "id.json"
    Identity.generate("a", "user").save(path)
    path.chmod(mode)
    if mode & 0o077:
        with pytest.raises(KeyFileError, match="chmod 600") as info:
            Identity.load(path)
        assert str(path) in str(info.value)
        assert f"{mode:o}" in str(info.value)
    else:
        assert Identity.load(path).name == "a"


def test_load_refuses_0644_file_with_chmod_hint(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    Identity.generate("a", "user").save(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Identity.load(path)
    path.chmod(0o600)
    assert Identity.load(path).kind == "user"


def test_read_only_owner_file_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    Identity.generate("a", "user").save(path)
    path.chmod(0o400)
    assert Identity.load(path).name == "a"


def test_missing_and_malformed_identity_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        Identity.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    for content in (b"not json", b"{}", b'{"name": "a", "kind": "user", "ed25519_seed": "a=b"}', b"[]"):
        write_private_file(bad, content)
        with pytest.raises(KeyFileError, match="not a valid tether identity"):
            Identity.load(bad)


def test_identity_file_is_unpadded_base64_json(tmp_path: Path) -> None:
    ident = Identity.generate("a", "agent", with_x25519=True)
    path = tmp_path / "id.json"
    ident.save(path)
    raw = path.read_bytes()
    assert raw == ident.to_json()
    doc = json.loads(raw)
    for field in ("ed25519_seed", "x25519_secret"):
        assert "=" not in doc[field]
    assert base64.urlsafe_b64decode(doc["ed25519_seed"] + "=") == ident.signing_seed
