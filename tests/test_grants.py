"""Tests for tether.grants: PASETO grants and the agent's offline GrantChecker."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from tether import paseto
from tether.encoding import b64e, dumps, loads
from tether.grants import (
    IMPLICIT,
    ISSUER,
    MAX_LIFETIME,
    MODES,
    Grant,
    GrantChecker,
    GrantError,
    decode,
    issue,
    new_jti,
)

NOW = 1_700_000_000.0
AUTHORITY = SigningKey(bytes(range(32)))
AUTHORITY_SEED = bytes(AUTHORITY)
AUTHORITY_PK = bytes(AUTHORITY.verify_key)
AGENT = SigningKey(bytes(range(1, 33)))
AGENT_PK = bytes(AGENT.verify_key)
CLIENT = SigningKey(bytes(range(2, 34)))
CLIENT_PK = bytes(CLIENT.verify_key)
MQTT = "u-alice-7f3a"


def make_grant(**changes: Any) -> Grant:
    g = Grant(
        user="alice",
        agent="web1",
        agent_key=b64e(AGENT_PK),
        client_key=b64e(CLIENT_PK),
        mqtt_name=MQTT,
        mode="shell",
        run_as="alice",
        command=None,
        max_duration=3600,
        idle_timeout=900,
        recording="off",
        recorder=None,
        reason="deploy hotfix",
        jti=new_jti(os.urandom),
        expires=NOW + 300,
    )
    return dataclasses.replace(g, **changes)


def checker(name: str = "web1", key: bytes = AGENT_PK) -> GrantChecker:
    return GrantChecker(AUTHORITY_PK, name, key)


def check(c: GrantChecker, token: str, **kw: Any) -> Grant:
    args: dict[str, Any] = {"client_key": CLIENT_PK, "mqtt_name": MQTT, "now": NOW}
    args.update(kw)
    return c.check(token, **args)


# ----- issue and decode -----


def test_issue_decode_round_trip() -> None:
    g = make_grant(command=["systemctl", "restart", "nginx"], mode="exec", recorder="rec1", recording="required")
    token = issue(AUTHORITY_SEED, g, NOW)
    assert token.startswith("v4.public.")
    assert decode(AUTHORITY_PK, token) == g


def test_claims_are_standard_paseto_claims() -> None:
    g = make_grant()
    claims = loads(paseto.verify(AUTHORITY_PK, issue(AUTHORITY_SEED, g, NOW), implicit=IMPLICIT))
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == "web1"
    assert claims["cnf"] == {"ed25519": b64e(CLIENT_PK)}
    assert claims["jti"] == g.jti
    assert claims["iat"] == "2023-11-14T22:13:20Z"
    assert claims["exp"] == "2023-11-14T22:18:20Z"


@given(
    user=st.text(min_size=1, max_size=20),
    mode=st.sampled_from(MODES),
    command=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                             max_size=10), min_size=1, max_size=4),
    lifetime=st.integers(min_value=1, max_value=int(MAX_LIFETIME)),
    max_duration=st.integers(min_value=0, max_value=10**6),
    reason=st.none() | st.text(max_size=30),
)
@settings(max_examples=50, deadline=None)
def test_round_trip_property(
    user: str, mode: str, command: list[str], lifetime: int, max_duration: int, reason: str | None
) -> None:
    g = make_grant(user=user, mode=mode, command=command if mode == "exec" else None, expires=NOW + lifetime,
                   max_duration=max_duration, reason=reason)
    assert decode(AUTHORITY_PK, issue(AUTHORITY_SEED, g, NOW)) == g


def test_fractional_expiry_is_rounded_down_never_up() -> None:
    g = make_grant(expires=NOW + 299.9)
    decoded = decode(AUTHORITY_PK, issue(AUTHORITY_SEED, g, NOW))
    assert decoded.expires == NOW + 299


@pytest.mark.parametrize("lifetime", [MAX_LIFETIME + 1, MAX_LIFETIME + 0.5, 3600.0, 86400.0])
def test_grants_longer_than_ten_minutes_are_refused_at_issue(lifetime: float) -> None:
    with pytest.raises(GrantError, match="10 minutes"):
        issue(AUTHORITY_SEED, make_grant(expires=NOW + lifetime), NOW)


def test_ten_minutes_exactly_is_allowed() -> None:
    g = make_grant(expires=NOW + MAX_LIFETIME)
    assert decode(AUTHORITY_PK, issue(AUTHORITY_SEED, g, NOW)).expires == NOW + MAX_LIFETIME


def test_forged_signature_rejected() -> None:
    mallory = SigningKey.generate()
    token = issue(bytes(mallory), make_grant(), NOW)
    with pytest.raises(GrantError, match="signature"):
        decode(AUTHORITY_PK, token)
    with pytest.raises(GrantError, match="signature"):
        check(checker(), token)


def test_tampered_token_rejected() -> None:
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    prefix = len("v4.public.")
    for i in range(prefix, len(token), 7):
        c = token[i]
        alt = "A" if c != "A" else "B"
        with pytest.raises(GrantError):
            decode(AUTHORITY_PK, token[:i] + alt + token[i + 1 :])


def test_claims_changed_and_resigned_by_another_key_rejected() -> None:
    """Swap the cnf key in the payload (as an attacker would) and re-sign with any other key."""
    g = make_grant()
    claims = g.claims(NOW)
    claims["cnf"] = {"ed25519": b64e(bytes(SigningKey.generate().verify_key))}
    token = paseto.sign(bytes(SigningKey.generate()), dumps(claims), implicit=IMPLICIT)
    with pytest.raises(GrantError, match="signature"):
        decode(AUTHORITY_PK, token)


def test_authority_token_for_another_purpose_is_not_a_grant() -> None:
    """The implicit assertion separates grants from other tokens the authority signs."""
    claims = make_grant().claims(NOW)
    token = paseto.sign(AUTHORITY_SEED, dumps(claims))  # no implicit assertion
    with pytest.raises(GrantError, match="signature"):
        decode(AUTHORITY_PK, token)
    token = paseto.sign(AUTHORITY_SEED, dumps(claims), implicit=b"tether-something-else")
    with pytest.raises(GrantError, match="signature"):
        decode(AUTHORITY_PK, token)


def test_wrong_issuer_rejected() -> None:
    claims = make_grant().claims(NOW)
    claims["iss"] = "someone-else"
    token = paseto.sign(AUTHORITY_SEED, dumps(claims), implicit=IMPLICIT)
    with pytest.raises(GrantError, match="issuer"):
        decode(AUTHORITY_PK, token)


@pytest.mark.parametrize("missing", ["sub", "aud", "cnf", "mqtt", "mode", "jti", "exp", "agent_key"])
def test_malformed_claims_rejected(missing: str) -> None:
    claims = make_grant().claims(NOW)
    del claims[missing]
    token = paseto.sign(AUTHORITY_SEED, dumps(claims), implicit=IMPLICIT)
    with pytest.raises(GrantError, match="malformed"):
        decode(AUTHORITY_PK, token)


def test_garbage_tokens_rejected() -> None:
    for token in ("", "v4.public.", "v4.public.AAAA", "v3.public." + "A" * 100, "not a token"):
        with pytest.raises(GrantError):
            decode(AUTHORITY_PK, token)


# ----- GrantChecker -----


def test_checker_accepts_a_good_grant() -> None:
    g = make_grant()
    assert check(checker(), issue(AUTHORITY_SEED, g, NOW)) == g


def test_checker_rejects_wrong_agent_name() -> None:
    token = issue(AUTHORITY_SEED, make_grant(agent="db1"), NOW)
    with pytest.raises(GrantError, match="agent"):
        check(checker(), token)


def test_checker_rejects_wrong_agent_key() -> None:
    """Same agent name, but the grant names another key (e.g. a re-provisioned host)."""
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    other = bytes(SigningKey.generate().verify_key)
    with pytest.raises(GrantError, match="agent"):
        check(checker(key=other), token)


@pytest.mark.parametrize("offset", [0.0, 1.0, 3600.0])
def test_checker_rejects_expired(offset: float) -> None:
    g = make_grant(expires=NOW + 60)
    token = issue(AUTHORITY_SEED, g, NOW)
    with pytest.raises(GrantError, match="expired"):
        check(checker(), token, now=NOW + 60 + offset)
    assert check(checker(), token, now=NOW + 59).jti == g.jti


def test_checker_rejects_wrong_client_key() -> None:
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    with pytest.raises(GrantError, match="client key"):
        check(checker(), token, client_key=bytes(SigningKey.generate().verify_key))


def test_checker_rejects_wrong_mqtt_name() -> None:
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    with pytest.raises(GrantError, match="another client connection"):
        check(checker(), token, mqtt_name="u-mallory-0001")


def test_checker_rejects_unknown_mode() -> None:
    token = issue(AUTHORITY_SEED, make_grant(mode="root-everything"), NOW)
    with pytest.raises(GrantError, match="mode"):
        check(checker(), token)


def test_jti_is_single_use() -> None:
    c = checker()
    g = make_grant()
    token = issue(AUTHORITY_SEED, g, NOW)
    check(c, token)
    with pytest.raises(GrantError, match="already used"):
        check(c, token, now=NOW + 10)
    # Even a differently-encoded token with the same jti (issued again) is refused.
    again = issue(AUTHORITY_SEED, g, NOW + 1)
    assert again != token
    with pytest.raises(GrantError, match="already used"):
        check(c, again, now=NOW + 20)
    # Another grant is fine.
    check(c, issue(AUTHORITY_SEED, make_grant(), NOW), now=NOW + 30)


def test_jti_remembered_until_expiry_even_with_many_others() -> None:
    c = checker()
    first = issue(AUTHORITY_SEED, make_grant(expires=NOW + 600), NOW)
    check(c, first)
    for i in range(1, 200):
        t = NOW + i
        check(c, issue(AUTHORITY_SEED, make_grant(expires=t + 10), t), now=t)
    with pytest.raises(GrantError, match="already used"):
        check(c, first, now=NOW + 599)


def test_failed_check_does_not_burn_the_jti() -> None:
    c = checker()
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    with pytest.raises(GrantError):
        check(c, token, mqtt_name="u-mallory-0001")
    with pytest.raises(GrantError):
        check(c, token, client_key=bytes(32))
    assert check(c, token).mqtt_name == MQTT


def test_jti_use_is_per_agent() -> None:
    """Each agent has its own cache; but the grant names one agent, so the other refuses it."""
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    check(checker(), token)
    with pytest.raises(GrantError, match="agent"):
        check(checker(name="db1"), token)
