"""PASETO tokens (tether/paseto.py) and the grant claims inside them (tether/grants.py)."""

from __future__ import annotations

import contextlib
from dataclasses import fields

from tether import grants, paseto
from tether.encoding import dumps
from tools.fuzz import fixtures as fx
from tools.fuzz.base import Harness, expect_types, seed, text


def _paseto_raw(data: bytes) -> None:
    token = text(data)
    for footer in (None, b"kid"):
        with contextlib.suppress(paseto.PasetoError):
            paseto.verify(fx.AUTHORITY_PK, token, footer=footer, implicit=grants.IMPLICIT)
    paseto.footer_of(token)


def _paseto_signed(data: bytes) -> None:
    message, footer, implicit = fx.split(data, 3)
    token = paseto.sign(bytes(fx.AUTHORITY), message, footer, implicit)
    assert paseto.verify(fx.AUTHORITY_PK, token, footer=footer, implicit=implicit) == message
    assert paseto.footer_of(token) == footer


def _paseto_seeds() -> list[bytes]:
    token = fx.grant_token()
    return [seed(0, token.encode()), seed(0, paseto.sign(bytes(fx.AUTHORITY), b"{}", b"kid").encode()),
            seed(1, b'{"sub":"alice"}\x00kid\x00tether-grant-v1')]


PASETO = Harness("paseto", "tether/paseto.py verify, footer_of", (paseto.PasetoError,),
                 (_paseto_raw, _paseto_signed), _paseto_seeds)

_GRANT_TYPES: dict[str, tuple[type, ...]] = {
    **{f.name: (str,) for f in fields(grants.Grant) if f.type == "str"},
    "command": (list, type(None)), "max_duration": (int,), "idle_timeout": (int,),
    "recorder": (str, type(None)), "reason": (str, type(None)), "expires": (float,),
    "max_sessions": (int, type(None)), "recorder_x25519": (str, type(None)),
    "recorder_ed25519": (str, type(None)),
}


def _grant(token: str) -> None:
    grant = grants.decode(fx.AUTHORITY_PK, token)
    expect_types(grant, _GRANT_TYPES)
    assert grant.command is None or all(isinstance(a, str) for a in grant.command)
    grants.GrantChecker(fx.AUTHORITY_PK, fx.AGENT_NAME, fx.AGENT_PK).check(
        token, client_key=fx.CLIENT_PK, mqtt_name=fx.CLIENT_MQTT, now=fx.NOW)


def _grants_raw(data: bytes) -> None:
    _grant(text(data))


def _grants_signed(data: bytes) -> None:
    _grant(paseto.sign(bytes(fx.AUTHORITY), data, implicit=grants.IMPLICIT))


def _grant_seeds() -> list[bytes]:
    claims = fx.grant().claims(fx.NOW)
    return [seed(0, fx.grant_token().encode()), seed(1, dumps(claims)),
            seed(1, dumps(dict(claims, mode="exec", command=["ls", "-l"], recorder_keys=None, max_sessions=None)))]


GRANTS = Harness("grants", "tether/grants.py decode, GrantChecker.check", (grants.GrantError,),
                 (_grants_raw, _grants_signed), _grant_seeds)


HARNESSES = {h.name: h for h in (PASETO, GRANTS)}
