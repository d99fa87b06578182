"""Web console broker logins (protocol.md §13.1) on both real brokers: the console slot
NAME.c logs in only with a one-time token signed by the user's registered key, each
token once; a reload keeps a live console connected while its key is registered. The
embedded broker checks tokens itself, Mosquitto through tether's plugin
(broker/mosquitto-plugin/, built by ./install.sh)."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from support.brokers import BROKER_KINDS, BrokerProcess, RawClient, poll, start_broker

from tether.broker.files import BrokerUser, read_console_keys, write_broker_files
from tether.console_login import TOKEN_SKEW, TOKENS_PER_SLOT, TokenChecker, broker_token
from tether.encoding import b64e

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
CY_SEED = bytes(range(2, 34))
CONNACK_OK, CONNACK_NOT_AUTHORISED = 0, 5


def users(seed: bytes = SEED) -> list[BrokerUser]:
    key = b64e(bytes(SigningKey(seed).verify_key))
    return [BrokerUser.with_password("ann.c", "user", "a password that must not open it", key),
            BrokerUser.with_password("cy.c", "user", "nor this one", b64e(bytes(SigningKey(CY_SEED).verify_key))),
            BrokerUser.with_password("bob", "user", "bob's password")]


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    write_broker_files(tmp_path / "files", users())
    b = start_broker(request.param, tmp_path / "files", tmp_path / "work")
    try:
        yield b
    finally:
        b.stop()


def login(broker: BrokerProcess, username: str, password: str, client_id: str | None = None) -> RawClient:
    client = RawClient("127.0.0.1", broker.port)
    client.rc = client.connect(client_id or username, username, password, keepalive=60)  # type: ignore[attr-defined]
    return client


def rc(broker: BrokerProcess, username: str, password: str, client_id: str | None = None) -> int | None:
    with login(broker, username, password, client_id) as client:
        code: int | None = client.rc  # type: ignore[attr-defined]
        return code


def test_a_token_logs_in_once(broker: BrokerProcess) -> None:
    token = broker_token(SEED, "ann.c", "ann.c", time.time(), os.urandom(16))
    first = login(broker, "ann.c", token)
    try:
        assert first.rc == CONNACK_OK  # type: ignore[attr-defined]
        first.close()
        # Whoever saw it (the broker, a proxy) cannot log in with it again.
        assert rc(broker, "ann.c", token) == CONNACK_NOT_AUTHORISED
    finally:
        first.close()
    assert rc(broker, "ann.c", broker_token(SEED, "ann.c", "ann.c", time.time(), os.urandom(16))) == CONNACK_OK
    assert rc(broker, "bob", "bob's password") == CONNACK_OK  # other principals: passwords as before


@pytest.mark.parametrize("case", ["password", "other key", "too old", "from the future", "other slot",
                                  "garbled"])
def test_what_does_not_log_in(broker: BrokerProcess, case: str) -> None:
    now = time.time()
    username = "ann.c"  # (both brokers replace the client id with the username)
    password = {
        "password": "a password that must not open it",
        "other key": broker_token(OTHER_SEED, "ann.c", "ann.c", now, os.urandom(16)),
        "too old": broker_token(SEED, "ann.c", "ann.c", now - TOKEN_SKEW - 30, os.urandom(16)),
        "from the future": broker_token(SEED, "ann.c", "ann.c", now + TOKEN_SKEW + 30, os.urandom(16)),
        "other slot": broker_token(SEED, "bob.c", "bob.c", now, os.urandom(16)),
        "garbled": broker_token(SEED, "ann.c", "ann.c", now, os.urandom(16))[:-3] + "AAA",
    }[case]
    if case == "other slot":
        username = "bob.c"
    assert rc(broker, username, password) != CONNACK_OK


def hung_up(client: RawClient, within: float) -> bool:
    """The broker closed the connection (EOF or reset) within `within` seconds; a read that
    merely times out is not a close."""
    client.sock.settimeout(within)
    try:
        while client.sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_reload_keeps_a_live_console_until_its_key_goes(broker: BrokerProcess, tmp_path: Path) -> None:
    client = login(broker, "ann.c", broker_token(SEED, "ann.c", "ann.c", time.time(), os.urandom(16)))
    try:
        assert client.rc == CONNACK_OK  # type: ignore[attr-defined]
        write_broker_files(tmp_path / "files", users())  # rewritten (new unusable hash), same key
        broker.reload()
        client.send(b"\xc0\x00")  # PINGREQ: still connected
        pong = client.read_packet()
        assert pong is not None and pong.type == 13
        write_broker_files(tmp_path / "files", users(OTHER_SEED))  # a new passphrase: new key
        broker.reload()
        assert hung_up(client, within=5.0)
    finally:
        client.close()


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def timed_login(broker: BrokerProcess, seed: bytes, slot: str) -> tuple[int | None, float]:
    started = time.monotonic()
    code = rc(broker, slot, broker_token(seed, slot, slot, time.time(), os.urandom(16)))
    return code, time.monotonic() - started


def test_one_user_flooding_logins_locks_out_no_one(broker: BrokerProcess) -> None:
    # The attack (issue 9, hole 3): ann's registered key makes 5,000 logins in a few
    # seconds. The old plugin remembered every token in one table of 4,096 for 240 s: it
    # refused every console user for minutes. Now each slot has its own bounded table.
    assert broker.pid is not None
    rss_before = rss_kib(broker.pid)
    flood = 5000
    done: list[tuple[str, int | None]] = []

    def ann_floods() -> None:  # one connection at a time, as fast as the broker answers
        for _ in range(flood):
            token = broker_token(SEED, "ann.c", "ann.c", time.time(), os.urandom(16))
            done.append((token, rc(broker, "ann.c", token)))

    def flood_reached(n: int) -> bool:
        return len(done) >= n or not flooder.is_alive()

    flooder = threading.Thread(target=ann_floods)
    flooder.start()
    cy: list[tuple[int | None, float]] = []
    try:
        for progress in (1000, 2000, 3000, 4000):  # cy logs in while the flood runs
            poll(functools.partial(flood_reached, progress), timeout=60)
            cy.append(timed_login(broker, CY_SEED, "cy.c"))
    finally:
        flooder.join(120)
    assert len(done) == flood
    cy.append(timed_login(broker, CY_SEED, "cy.c"))  # and right after it
    print(f"{broker.kind}: cy's logins during and after the flood: {[round(t, 3) for _, t in cy]} s; "
          f"ann's logins accepted {sum(code == CONNACK_OK for _, code in done)} of {flood}")
    assert all(code == CONNACK_OK for code, _ in cy), cy
    assert max(took for _, took in cy) < 1.0, cy
    accepted = [token for token, code in done if code == CONNACK_OK]
    assert len(accepted) >= TOKENS_PER_SLOT  # ann's newest tokens log in: one per second at least
    for token in (accepted[0], accepted[len(accepted) // 2], accepted[-1]):
        assert rc(broker, "ann.c", token) == CONNACK_NOT_AUTHORISED  # replays stay refused
    ahead = broker_token(SEED, "ann.c", "ann.c", time.time() + 2, os.urandom(16))  # newer than all it holds
    assert rc(broker, "ann.c", ahead) == CONNACK_OK
    if broker.kind == "mosquitto":  # (the embedded table's bound: test_console_token_table.py)
        grown = rss_kib(broker.pid) - rss_before
        assert grown < 1024, f"Mosquitto grew by {grown} KiB over {flood} console logins"


def test_console_keys_file_round_trip(tmp_path: Path) -> None:
    write_broker_files(tmp_path, users())
    keys = read_console_keys(tmp_path)
    assert keys == {"ann.c": bytes(SigningKey(SEED).verify_key), "cy.c": bytes(SigningKey(CY_SEED).verify_key)}
    assert (tmp_path / "console-keys").stat().st_mode & 0o777 == 0o600
    checker = TokenChecker(keys)
    token = broker_token(SEED, "ann.c", "ann.c", 1_700_000_000, os.urandom(16))
    assert checker.check("ann.c", "ann.c", token, 1_700_000_050)
    assert not checker.check("ann.c", "ann.c", token, 1_700_000_051)
