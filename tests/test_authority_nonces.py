"""The authority's nonce journal: a request answered once stays refused across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tether.authority.nonces import NonceJournal, ReplayCache
from tether.edge.keys import KeyFileError

NOW = 1_700_000_000.0


def test_a_nonce_is_refused_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    journal = NonceJournal(path, NOW)
    assert journal.remember("a" * 32, NOW + 120, NOW) is None
    assert journal.remember("a" * 32, NOW + 120, NOW + 1) == "replayed"
    journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = NonceJournal(path, NOW + 5)
    assert again.remember("a" * 32, NOW + 120, NOW + 5) == "replayed"
    assert again.remember("b" * 32, NOW + 120, NOW + 5) is None
    again.close()


def test_expired_nonces_are_forgotten_and_dropped_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    journal = NonceJournal(path, NOW)
    journal.remember("a" * 32, NOW + 10, NOW)
    journal.remember("b" * 32, NOW + 100, NOW)
    journal.close()
    reopened = NonceJournal(path, NOW + 50)
    assert len(reopened.cache) == 1 and "b" * 32 in reopened.cache
    assert path.read_bytes().count(b"\n") == 1  # rewritten with the live entry only
    assert reopened.remember("a" * 32, NOW + 170, NOW + 50) is None  # its time has passed
    reopened.close()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    journal = NonceJournal(path, NOW)
    journal.remember("a" * 32, NOW + 100, NOW)
    journal.close()
    with path.open("ab") as f:
        f.write(b'["bbbb')
    reopened = NonceJournal(path, NOW)
    assert len(reopened.cache) == 1
    assert reopened.remember("c" * 32, NOW + 100, NOW) is None
    reopened.close()
    assert len(NonceJournal(path, NOW).cache) == 2


def test_a_journal_others_can_touch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    NonceJournal(path, NOW).close()
    path.chmod(0o660)
    with pytest.raises(KeyFileError, match="chmod 600"):
        NonceJournal(path, NOW)


def test_the_journal_is_compacted_as_entries_expire(tmp_path: Path) -> None:
    path = tmp_path / "nonces.jsonl"
    journal = NonceJournal(path, NOW, slack=8)
    for i in range(40):
        journal.remember(f"{i:032x}", NOW + i + 1, NOW + i)  # each expires as the next comes
        assert path.read_bytes().count(b"\n") <= 8 + 3
    journal.close()


def test_the_cache_is_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    cache.add("a", NOW + 10)
    assert not cache.full
    cache.add("b", NOW + 10)
    assert cache.full
    cache.expire(NOW + 10)
    assert not cache.full and len(cache) == 0


def test_a_full_journal_refuses_new_requests(tmp_path: Path) -> None:
    journal = NonceJournal(tmp_path / "nonces.jsonl", NOW, max_entries=2)
    assert journal.remember("a" * 32, NOW + 100, NOW) is None
    assert journal.remember("b" * 32, NOW + 100, NOW) is None
    assert journal.remember("c" * 32, NOW + 100, NOW) == "too many requests in the last minutes"
    assert journal.remember("c" * 32, NOW + 200, NOW + 100) is None  # once some expired
    journal.close()
