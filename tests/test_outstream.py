"""tether.outstream: one sealed output stream, read by many, each reader accepting only what
the agent's digest over its own link vouches for."""

from __future__ import annotations

import os

import pytest

from tether.outstream import HEADER, MAX_HELD, OutReader, OutSealer, OutStreamError, digest


def _stream(n: int) -> tuple[bytes, list[tuple[int, bytes, bytes]]]:
    key = os.urandom(32)
    sealer = OutSealer(key)
    return key, [sealer.seal(b"payload %d" % i) for i in range(1, n + 1)]


def test_in_order_each_once_whichever_half_comes_first() -> None:
    key, msgs = _stream(3)
    r = OutReader(key)
    assert r.offer_message(msgs[0][1]) == []  # no digest yet: held
    assert r.offer_digest(1, msgs[0][2]) == [b"payload 1"]
    assert r.offer_digest(3, msgs[2][2]) == []
    assert r.offer_message(msgs[2][1]) == []  # 2 missing: held
    assert r.offer_message(msgs[1][1]) == []
    assert r.offer_digest(2, msgs[1][2]) == [b"payload 2", b"payload 3"]
    assert r.offer_message(msgs[1][1]) == [] and r.offer_digest(2, msgs[1][2]) == []  # replays


def test_a_reader_with_the_key_cannot_make_another_accept_a_forgery() -> None:
    key, msgs = _stream(2)
    thief = OutSealer(key)  # a watcher or recorder holds the output key
    _seq, forged, _ = thief.seal(b"rm -rf / # forged output")
    victim = OutReader(key)
    assert victim.offer_message(forged) == []  # held: no digest vouches for it yet
    assert victim.offer_digest(1, msgs[0][2]) == []  # the agent's digest does not match it
    assert victim.rejected == 1
    assert victim.offer_message(msgs[0][1]) == [b"payload 1"]  # the genuine one still gets in
    # After the digest, a forgery is refused at once.
    assert victim.offer_digest(2, msgs[1][2]) == []
    _seq, forged2, _ = thief.seal(b"x")  # seq 2 from the thief's own counter
    assert victim.offer_message(forged2) == [] and victim.rejected == 2
    assert victim.offer_message(msgs[1][1]) == [b"payload 2"]


def test_reordering_by_the_broker_or_a_key_holder_changes_nothing() -> None:
    key, msgs = _stream(2)
    r = OutReader(key)
    # Message 2 relabelled as 1 (its header rewritten) fails both the digest and the AEAD.
    relabelled = HEADER.pack(2, 1) + msgs[1][1][HEADER.size:]
    r.offer_digest(1, msgs[0][2])
    assert r.offer_message(relabelled) == [] and r.rejected == 1
    assert r.offer_message(msgs[0][1]) == [b"payload 1"]


def test_a_digest_that_matches_an_undecryptable_message_delivers_nothing() -> None:
    key, _ = _stream(0)
    other = OutSealer(os.urandom(32))
    _seq, message, value = other.seal(b"sealed with another key")
    r = OutReader(key)
    r.offer_digest(1, value)
    assert r.offer_message(message) == [] and r.rejected == 1 and r.delivered == 0


def test_bounds_and_malformed_messages() -> None:
    key, msgs = _stream(1)
    r = OutReader(key)
    with pytest.raises(OutStreamError):
        r.offer_message(b"\x02" + bytes(8))
    with pytest.raises(OutStreamError):
        r.offer_message(b"\x01" + msgs[0][1][1:])
    far = HEADER.pack(2, MAX_HELD + 1) + bytes(16)
    assert r.offer_message(far) == [] and r.offer_digest(MAX_HELD + 1, digest(far)) == []
    assert r.offer_digest(1, b"short") == []
    with pytest.raises(ValueError):
        OutSealer(b"short")
