"""The brokers' tables of taken console tokens (issue 9, hole 3), without a broker: the
embedded broker's `TokenChecker` and the Mosquitto plugin's C core
(broker/mosquitto-plugin/console_token.c, built here and called through ctypes) go
through the same scenarios, and must decide alike.

Each console slot has its own bounded table; one slot logging in without pause fills
only its own, and every token still logs in at most once."""

from __future__ import annotations

import ctypes
import itertools
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from nacl.signing import SigningKey

from tether.console_login import (
    FORGET_AFTER,
    TOKEN_SKEW,
    TOKENS_PER_SLOT,
    TokenChecker,
    broker_token,
)

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "broker" / "mosquitto-plugin"
T0 = 1_700_000_000
TC_ACCEPT, TC_RECHECK = 0, 1


def seed(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


_NONCES = itertools.count(1)


def token(user: str, ts: int, nonce: bytes | None = None) -> str:
    """A token with the given nonce, or with one no other token here has."""
    return broker_token(seed(user), user, user, ts, next(_NONCES).to_bytes(16, "big") if nonce is None else nonce)


class Table(Protocol):
    def login(self, user: str, password: str, now: int, client: int = 0) -> bool: ...

    def remembered(self) -> int: ...


class PythonTable:
    def __init__(self, users: list[str]) -> None:
        self.checker = TokenChecker({u: bytes(SigningKey(seed(u)).verify_key) for u in users})

    def login(self, user: str, password: str, now: int, client: int = 0) -> bool:
        return self.checker.check(user, user, password, now)

    def remembered(self) -> int:
        return self.checker.remembered()


class _CTable(ctypes.Structure):
    _fields_ = [("slots", ctypes.c_void_p), ("count", ctypes.c_size_t), ("cap", ctypes.c_size_t)]


class CTable:
    """The plugin's core: tc_check on a table of its own."""

    def __init__(self, lib: ctypes.CDLL, users: list[str]) -> None:
        self.lib = lib
        self.table = _CTable()
        self.keys = {u: bytes(SigningKey(seed(u)).verify_key) for u in users}

    def verdict(self, user: str, password: str, now: int, client: int = 0) -> int:
        result: int = self.lib.tc_check(ctypes.byref(self.table), self.keys.get(user), user.encode(),
                                        user.encode(), password.encode(), now, ctypes.c_void_p(client or None))
        return result

    def login(self, user: str, password: str, now: int, client: int = 0) -> bool:
        return self.verdict(user, password, now, client) in (TC_ACCEPT, TC_RECHECK)

    def disconnected(self, client: int) -> None:
        self.lib.tc_disconnected(ctypes.byref(self.table), ctypes.c_void_p(client))

    def remembered(self) -> int:
        n: int = self.lib.tc_remembered(ctypes.byref(self.table))
        return n

    def close(self) -> None:
        self.lib.tc_table_free(ctypes.byref(self.table))


@pytest.fixture(scope="module")
def c_core(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    out = tmp_path_factory.mktemp("console-token") / "console_token.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                    str(PLUGIN_DIR / "console_token.c"), "-lsodium"], check=True)
    lib = ctypes.CDLL(str(out))
    assert lib.sodium_init() >= 0
    lib.tc_check.argtypes = [ctypes.POINTER(_CTable), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p]
    lib.tc_check.restype = ctypes.c_int
    lib.tc_disconnected.argtypes = [ctypes.POINTER(_CTable), ctypes.c_void_p]
    lib.tc_remembered.argtypes = [ctypes.POINTER(_CTable)]
    lib.tc_remembered.restype = ctypes.c_size_t
    lib.tc_table_free.argtypes = [ctypes.POINTER(_CTable)]
    return lib


@pytest.fixture(params=["embedded", "mosquitto-plugin"])
def make(request: pytest.FixtureRequest, c_core: ctypes.CDLL) -> Iterator[Callable[[list[str]], Table]]:
    made: list[CTable] = []

    def factory(users: list[str]) -> Table:
        if request.param == "embedded":
            return PythonTable(users)
        table = CTable(c_core, users)
        made.append(table)
        return table

    yield factory
    for table in made:
        table.close()


def test_a_flooding_slot_fills_only_its_own_table(make: Callable[[list[str]], Table]) -> None:
    # The attack: ann logs in 5,000 times within 5 s. The old plugin's shared table
    # (4,096 entries for 240 s) then refused everyone; the old embedded one grew by 5,000.
    table = make(["ann.c", "cy.c"])
    accepted = []
    for i in range(5000):
        now = T0 + i // 1000
        t = token("ann.c", now)
        if table.login("ann.c", t, now):
            accepted.append(t)
    assert len(accepted) >= TOKENS_PER_SLOT  # ann's own newest tokens keep logging in
    assert table.remembered() <= TOKENS_PER_SLOT
    assert table.login("cy.c", token("cy.c", T0 + 5), T0 + 5)
    assert table.remembered() <= 2 * TOKENS_PER_SLOT
    # Every token that logged in, from the first to the last, is refused the second time.
    assert not any(table.login("ann.c", t, T0 + 5) for t in accepted)
    assert table.login("ann.c", token("ann.c", T0 + 6), T0 + 6)


def test_an_over_full_slot_refuses_only_its_oldest_tokens(make: Callable[[list[str]], Table]) -> None:
    table = make(["ann.c"])
    for i in range(TOKENS_PER_SLOT):
        assert table.login("ann.c", token("ann.c", T0 + i), T0 + 100)
    # Full: a never-seen token older than all it remembers would be the one to go: refused.
    assert not table.login("ann.c", token("ann.c", T0), T0 + 100)
    # A newer one lets go of the oldest (ts T0), which raises the floor past it ...
    assert table.login("ann.c", token("ann.c", T0 + 100), T0 + 100)
    assert table.remembered() == TOKENS_PER_SLOT
    # ... so a fresh token of that second is refused too, and the next second's is not.
    assert not table.login("ann.c", token("ann.c", T0), T0 + 100)
    assert table.login("ann.c", token("ann.c", T0 + 1 + TOKENS_PER_SLOT), T0 + 100)


def test_stale_tokens_make_room_without_refusing_fresh_ones(make: Callable[[list[str]], Table]) -> None:
    table = make(["ann.c"])
    for _ in range(TOKENS_PER_SLOT):
        assert table.login("ann.c", token("ann.c", T0), T0)
    later = T0 + int(FORGET_AFTER) + 1
    assert table.login("ann.c", token("ann.c", later), later)
    assert table.remembered() == 1


def test_records_of_slots_gone_quiet_are_reused(make: Callable[[list[str]], Table]) -> None:
    first, second = [f"a{i}.c" for i in range(150)], [f"b{i}.c" for i in range(150)]
    table = make(first + second)
    for user in first:
        assert table.login(user, token(user, T0), T0)
    assert table.remembered() == 150
    later = T0 + int(FORGET_AFTER + TOKEN_SKEW) + 1
    for user in second:
        assert table.login(user, token(user, later), later)
    assert table.remembered() == 150


def test_both_brokers_decide_alike(c_core: ctypes.CDLL) -> None:
    # Three slots, tokens out of order within the clock's window, repeated nonces and
    # replays: every decision is the same, and no token logs in twice.
    rng = random.Random(9)
    users = ["ann.c", "bo.c", "cy.c"]
    py, c = PythonTable(users), CTable(c_core, users)
    taken: set[str] = set()
    sent: list[tuple[str, str]] = []
    try:
        now = T0
        for _ in range(3000):
            now += rng.choice([0, 0, 0, 1, 2, 30])
            if sent and rng.random() < 0.2:
                user, t = rng.choice(sent)
            else:
                user = rng.choice(users)
                t = token(user, now + rng.randint(-int(TOKEN_SKEW) - 5, int(TOKEN_SKEW) + 5),
                          bytes([rng.randrange(4)]) * 16)
                sent.append((user, t))
            verdict = py.login(user, t, now)
            assert verdict == c.login(user, t, now), (user, t, now)
            if verdict:
                assert t not in taken, "a token logged in twice"
                taken.add(t)
        assert len(taken) > 500
    finally:
        c.close()


def test_the_plugin_passes_a_recheck_only_for_the_live_connection(c_core: ctypes.CDLL) -> None:
    # Mosquitto re-checks live connections after a reload with the password they sent.
    table = CTable(c_core, ["ann.c"])
    try:
        first = token("ann.c", T0)
        assert table.verdict("ann.c", first, T0, client=1) == TC_ACCEPT
        assert table.verdict("ann.c", first, T0 + 1000, client=1) == TC_RECHECK
        assert not table.login("ann.c", first, T0, client=2)  # another connection: a replay
        table.disconnected(1)
        assert not table.login("ann.c", first, T0, client=1)
        second = token("ann.c", T0 + 1)
        assert table.verdict("ann.c", second, T0 + 1, client=3) == TC_ACCEPT
        # A newer login of the slot takes over: the older connection's token no longer passes.
        assert table.verdict("ann.c", token("ann.c", T0 + 2), T0 + 2, client=4) == TC_ACCEPT
        assert not table.login("ann.c", second, T0 + 2, client=3)
    finally:
        table.close()
