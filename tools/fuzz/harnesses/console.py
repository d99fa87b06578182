"""Console login tokens, as the broker checks them (tether/console_login.py)."""

from __future__ import annotations

import struct

from tether import console_login
from tether.encoding import b64e
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, seed, text

_SLOT = "alice.c"


def _checker() -> console_login.TokenChecker:
    return console_login.TokenChecker(keys={_SLOT: fx.CLIENT_PK})


def _console_raw(data: bytes) -> None:
    username, client_id, password = (text(p) for p in fx.split(data, 3))
    assert _checker().check(username, client_id, password, fx.NOW) in (True, False)


def _console_signed(data: bytes) -> None:
    """ts u64 | nonce [16] | client id, validly signed: accepted once iff the id and time fit."""
    ts_nonce = data[:24].ljust(24, b"\x00")
    client_id = data[24:].decode("utf-8", "replace")  # what an MQTT client id can be
    (ts,) = struct.unpack(">Q", ts_nonce[:8])
    sig = fx.CLIENT.sign(console_login._token_message(_SLOT, client_id, ts_nonce)).signature
    password = console_login.TOKEN_PREFIX + b64e(ts_nonce + sig)
    checker = _checker()
    ok = checker.check(_SLOT, client_id, password, fx.NOW)
    assert ok == (client_id == _SLOT and abs(fx.NOW - ts) <= console_login.TOKEN_SKEW)
    assert not checker.check(_SLOT, client_id, password, fx.NOW), "a console token was accepted twice"


def _console_seeds() -> list[bytes]:
    token = console_login.broker_token(bytes(fx.CLIENT), _SLOT, _SLOT, fx.NOW, nonce=bytes(16))
    return [seed(0, f"{_SLOT}\x00{_SLOT}\x00{token}".encode()),
            seed(1, struct.pack(">Q", int(fx.NOW)) + bytes(16) + _SLOT.encode())]


CONSOLE_TOKEN = Harness("console-token", "tether/console_login.py TokenChecker.check", (),
                        (_console_raw, _console_signed), _console_seeds)


HARNESSES = {h.name: h for h in (CONSOLE_TOKEN,)}
