"""Web console broker logins (protocol.md §17.1) on both real brokers: the console slot
NAME.c logs in only with a one-time token signed by the user's registered key, each
token once; a reload keeps a live console connected while its key is registered. The
embedded broker checks tokens itself, Mosquitto through tether's plugin
(broker/mosquitto-plugin/, built by ./install.sh)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from support.brokers import BROKER_KINDS, BrokerProcess, RawClient, start_broker

from tether.broker.files import BrokerUser, read_console_keys, write_broker_files
from tether.console_login import TOKEN_SKEW, TokenChecker, broker_token
from tether.encoding import b64e

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
CONNACK_OK, CONNACK_NOT_AUTHORISED = 0, 5


def users(seed: bytes = SEED) -> list[BrokerUser]:
    key = b64e(bytes(SigningKey(seed).verify_key))
    return [BrokerUser.with_password("ann.c", "user", "a password that must not open it", key),
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
    token = broker_token(SEED, "ann.c", "ann.c", time.time())
    first = login(broker, "ann.c", token)
    try:
        assert first.rc == CONNACK_OK  # type: ignore[attr-defined]
        first.close()
        # Whoever saw it (the broker, a proxy) cannot log in with it again.
        assert rc(broker, "ann.c", token) == CONNACK_NOT_AUTHORISED
    finally:
        first.close()
    assert rc(broker, "ann.c", broker_token(SEED, "ann.c", "ann.c", time.time())) == CONNACK_OK
    assert rc(broker, "bob", "bob's password") == CONNACK_OK  # other principals: passwords as before


@pytest.mark.parametrize("case", ["password", "other key", "too old", "from the future", "other slot",
                                  "garbled"])
def test_what_does_not_log_in(broker: BrokerProcess, case: str) -> None:
    now = time.time()
    username = "ann.c"  # (both brokers replace the client id with the username)
    password = {
        "password": "a password that must not open it",
        "other key": broker_token(OTHER_SEED, "ann.c", "ann.c", now),
        "too old": broker_token(SEED, "ann.c", "ann.c", now - TOKEN_SKEW - 30),
        "from the future": broker_token(SEED, "ann.c", "ann.c", now + TOKEN_SKEW + 30),
        "other slot": broker_token(SEED, "bob.c", "bob.c", now),
        "garbled": broker_token(SEED, "ann.c", "ann.c", now)[:-3] + "AAA",
    }[case]
    if case == "other slot":
        username = "bob.c"
    assert rc(broker, username, password) != CONNACK_OK


def test_reload_keeps_a_live_console_until_its_key_goes(broker: BrokerProcess, tmp_path: Path) -> None:
    client = login(broker, "ann.c", broker_token(SEED, "ann.c", "ann.c", time.time()))
    try:
        assert client.rc == CONNACK_OK  # type: ignore[attr-defined]
        write_broker_files(tmp_path / "files", users())  # rewritten (new unusable hash), same key
        broker.reload()
        client.send(b"\xc0\x00")  # PINGREQ: still connected
        pong = client.read_packet()
        assert pong is not None and pong.type == 13
        write_broker_files(tmp_path / "files", users(OTHER_SEED))  # a new passphrase: new key
        broker.reload()
        assert client.closed_by_peer()
    finally:
        client.close()


def test_console_keys_file_round_trip(tmp_path: Path) -> None:
    write_broker_files(tmp_path, users())
    keys = read_console_keys(tmp_path)
    assert keys == {"ann.c": bytes(SigningKey(SEED).verify_key)}
    assert (tmp_path / "console-keys").stat().st_mode & 0o777 == 0o600
    checker = TokenChecker(keys)
    token = broker_token(SEED, "ann.c", "ann.c", 1_700_000_000)
    assert checker.check("ann.c", "ann.c", token, 1_700_000_050)
    assert not checker.check("ann.c", "ann.c", token, 1_700_000_051)
