"""tether.grants at its exact limits (found by mutation testing, tools/mutation/run.py: the
other tests read the limits from the module or test far from them)."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from test_grants import (
    AGENT_PK,
    AUTHORITY_PK,
    AUTHORITY_SEED,
    CLIENT_PK,
    MQTT,
    NOW,
    check,
    checker,
    make_grant,
)

from tether.grants import GrantChecker, GrantError, command_problem, issue, new_jti
from tether.limits import MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_GRANT_BYTES


def test_the_limits_are_the_documented_ones() -> None:
    assert (MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_GRANT_BYTES) == (1024, 16 * 1024, 32 * 1024)


def test_ten_minutes_is_the_longest_grant() -> None:
    assert issue(AUTHORITY_SEED, make_grant(expires=NOW + 600.0), NOW)
    with pytest.raises(GrantError, match="at most 10 minutes"):
        issue(AUTHORITY_SEED, make_grant(expires=NOW + 600.5), NOW)


def test_a_grant_is_immutable() -> None:
    g = make_grant()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.run_as = "root"  # type: ignore[misc]


@pytest.mark.parametrize("command", ["ls -l", ("ls",), [], ["ls", 5], [None], ["ls", b"-l"]])
def test_an_exec_command_must_be_a_non_empty_list_of_strings(command: object) -> None:
    assert command_problem("exec", command) == (
        "an exec session names its command as a non-empty list of strings "
        "(tether run AGENT -- COMMAND [ARG...])")


def test_the_argument_count_limit_is_1024() -> None:
    assert command_problem("exec", ["a"] * 1024) is None
    assert command_problem("exec", ["a"] * 1025) == "the command has 1025 arguments; the limit is 1024"


def test_the_command_size_limit_counts_each_arguments_nul() -> None:
    assert command_problem("exec", ["x" * (16 * 1024 - 1)]) is None  # 16383 + NUL
    assert command_problem("exec", ["x" * (16 * 1024)]) == \
        "the command is 16385 bytes; the limit is 16384"
    assert command_problem("exec", ["x" * 8191, "y" * 8191]) is None  # 2 x 8192
    assert command_problem("exec", ["x" * 8192, "y" * 8191]) is not None


def test_a_command_that_is_not_utf8_is_refused() -> None:
    assert command_problem("exec", ["ls", "\udcff"]) == "the command is not valid UTF-8"


def test_jtis_are_128_random_bits_in_hex() -> None:
    jtis = {new_jti(os.urandom) for _ in range(20)}
    assert len(jtis) == 20 and all(re.fullmatch(r"[0-9a-f]{32}", j) for j in jtis)


def test_a_token_of_exactly_the_size_limit_is_issued() -> None:
    """A reason is padded until the token is exactly 32 KiB (the base64 length grows by one
    or two characters per byte, so some length hits it exactly)."""
    base = len(issue(AUTHORITY_SEED, make_grant(reason=""), NOW))
    exact = None
    start = (MAX_GRANT_BYTES - base) * 3 // 4
    for n in range(start - 8, start + 8):
        try:
            t = issue(AUTHORITY_SEED, make_grant(reason="r" * n), NOW)
        except GrantError:
            break
        if len(t) == MAX_GRANT_BYTES:
            exact = t
    assert exact is not None and len(exact) == 32 * 1024
    with pytest.raises(GrantError, match="at most 32768"):
        issue(AUTHORITY_SEED, make_grant(reason="r" * (start + 8)), NOW)


def test_check_takes_its_bindings_by_keyword_only() -> None:
    token = issue(AUTHORITY_SEED, make_grant(), NOW)
    with pytest.raises(TypeError):
        checker().check(token, CLIENT_PK, MQTT, NOW)  # type: ignore[misc]


def test_used_jtis_are_forgotten_at_their_expiry() -> None:
    used = {"gone": NOW - 1.0, "edge": NOW, "kept": NOW + 1.0}
    c = GrantChecker(AUTHORITY_PK, "web1", AGENT_PK, used)
    g = make_grant()
    check(c, issue(AUTHORITY_SEED, g, NOW))
    assert used == {"kept": NOW + 1.0, g.jti: g.expires}
