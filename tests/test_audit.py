"""The authority's audit trail: signed, hash-chained, and checked line by line."""

from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey

from tether.authority.audit import AuditLog, parse_since, read_audit


def _log(tmp_path: Path) -> tuple[AuditLog, bytes]:
    key = SigningKey.generate()
    log = AuditLog(tmp_path / "audit.jsonl", key)
    for i in range(5):
        log.append("grant-issued", user=f"u{i}", agent="local", jti=f"j{i}")
    return log, bytes(key.verify_key)


def test_entries_verify_and_survive_reopening(tmp_path: Path) -> None:
    log, pk = _log(tmp_path)
    AuditLog(log.path, log.key).append("grant-denied", user="bob", why="no statement")
    entries = list(read_audit(log.path, pk))
    assert [e.problem for e in entries] == [None] * 6
    assert entries[-1].record["event"] == "grant-denied"
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_an_edited_line_is_flagged(tmp_path: Path) -> None:
    log, pk = _log(tmp_path)
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"u2"', b'"u9"')
    log.path.write_bytes(b"".join(lines))
    problems = [(e.line, e.problem) for e in read_audit(log.path, pk) if e.problem]
    assert problems[0][0] == 3 and "bad signature" in (problems[0][1] or "")
    assert any(line == 4 and "chain broken" in (p or "") for line, p in problems)


def test_a_removed_line_breaks_the_chain(tmp_path: Path) -> None:
    log, pk = _log(tmp_path)
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:1] + lines[2:]))
    problems = [(e.line, e.problem) for e in read_audit(log.path, pk) if e.problem]
    assert problems == [(2, "chain broken: a line before this one was removed, reordered or altered")]


def test_a_foreign_key_fails_every_line(tmp_path: Path) -> None:
    log, _ = _log(tmp_path)
    other = bytes(SigningKey.generate().verify_key)
    assert all(e.problem for e in read_audit(log.path, other))


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_since("1970-01-01T01:00:00") == 3600.0


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    """The authority service and an admin command append to the same file."""
    key = SigningKey.generate()
    service = AuditLog(tmp_path / "audit.jsonl", key)
    admin = AuditLog(tmp_path / "audit.jsonl", key)
    for i in range(4):
        (service if i % 2 else admin).append("event", n=i)
    assert [e.problem for e in read_audit(service.path, bytes(key.verify_key))] == [None] * 4
