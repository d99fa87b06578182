"""Bounds on what the authority takes (sans-IO): each limit exactly (accepted) and one
past it (refused with a reason that names it), and exec grants that bind no command."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import authz, grants, paseto
from tether.authority.requests import MAX_ACCESS_AGENTS, request_problem
from tether.encoding import b64e, dumps
from tether.limits import MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_REASON_BYTES, MAX_RUN_AS_BYTES

NOW = 1_700_000_000.0
AUTHORITY = SigningKey(bytes(range(32)))
AUTHORITY_X = PrivateKey(bytes(range(1, 33)))
ALICE = SigningKey(bytes(range(2, 34)))
GRANT = grants.Grant(
    user="alice", agent="web1", agent_key=b64e(bytes(32)), client_key=b64e(bytes(ALICE.verify_key)),
    mqtt_name="alice", mode="exec", run_as="alice", command=["true"], max_duration=60,
    idle_timeout=0, recording="off", recorder=None, reason=None, jti="ab" * 16, expires=NOW + 60)


def exec_request(**changes: Any) -> dict[str, Any]:
    return dict({"type": "grant", "agent": "web1", "mode": "exec", "run_as": None,
                 "reason": None, "command": ["true"]}, **changes)


# ----- exec grants bind the command -----------------------------------------------------

@pytest.mark.parametrize("command", [None, [], "rm -rf /", [1, 2], ["ok", None]])
def test_exec_request_without_a_proper_command_is_refused(command: object) -> None:
    problem = request_problem(exec_request(command=command))
    assert problem is not None and "non-empty list of strings" in problem


def test_only_exec_names_a_command() -> None:
    assert request_problem(exec_request(mode="shell", command=None)) is None
    assert request_problem(exec_request(mode="shell", command=["ls"])) == "only exec sessions name a command"


def test_an_exec_grant_without_a_command_is_neither_issued_nor_honoured() -> None:
    with pytest.raises(grants.GrantError, match="non-empty list of strings"):
        grants.issue(bytes(AUTHORITY), dataclasses.replace(GRANT, command=None), NOW)
    # One signed by the authority's key all the same (as an older authority issued them):
    claims = dict(GRANT.claims(NOW), command=None)
    token = paseto.sign(bytes(AUTHORITY), dumps(claims), implicit=grants.IMPLICIT)
    with pytest.raises(grants.GrantError, match="grant is malformed"):
        grants.decode(bytes(AUTHORITY.verify_key), token)
    claims["command"] = "id"  # not a list: the old decoder made it ['i', 'd']
    token = paseto.sign(bytes(AUTHORITY), dumps(claims), implicit=grants.IMPLICIT)
    with pytest.raises(grants.GrantError, match="grant is malformed"):
        grants.decode(bytes(AUTHORITY.verify_key), token)


def test_grant_claims_that_are_not_an_object_are_malformed() -> None:
    token = paseto.sign(bytes(AUTHORITY), dumps(["a", "list"]), implicit=grants.IMPLICIT)
    with pytest.raises(grants.GrantError, match="not an object"):
        grants.decode(bytes(AUTHORITY.verify_key), token)


# ----- the command's bounds (those the agent applies too) --------------------------------

def test_command_argument_count_limit() -> None:
    assert request_problem(exec_request(command=["x"] * MAX_COMMAND_ARGS)) is None
    problem = request_problem(exec_request(command=["x"] * (MAX_COMMAND_ARGS + 1)))
    assert problem == f"the command has {MAX_COMMAND_ARGS + 1} arguments; the limit is {MAX_COMMAND_ARGS}"


def test_command_byte_limit_counts_as_execve_does() -> None:
    at_limit = ["a" * (MAX_COMMAND_BYTES - 1)]  # plus its NUL
    assert request_problem(exec_request(command=at_limit)) is None
    grants.decode(bytes(AUTHORITY.verify_key), grants.issue(
        bytes(AUTHORITY), dataclasses.replace(GRANT, command=at_limit), NOW))
    problem = request_problem(exec_request(command=["a" * MAX_COMMAND_BYTES]))
    assert problem == f"the command is {MAX_COMMAND_BYTES + 1} bytes; the limit is {MAX_COMMAND_BYTES}"


def test_nul_in_an_argument_is_refused() -> None:
    assert "NUL" in str(request_problem(exec_request(command=["echo", "a\x00b"])))


def test_a_grant_agents_would_refuse_for_its_size_is_not_issued() -> None:
    # Within the command limit, but JSON escapes each control character to six bytes.
    command = ["\x01" * (MAX_COMMAND_BYTES - 1)]
    assert request_problem(exec_request(command=command)) is None
    with pytest.raises(grants.GrantError, match="agents accept at most"):
        grants.issue(bytes(AUTHORITY), dataclasses.replace(GRANT, command=command), NOW)


# ----- the other fields -----------------------------------------------------------------

def test_reason_limit() -> None:
    assert request_problem(exec_request(reason="é" * (MAX_REASON_BYTES // 2))) is None
    problem = request_problem(exec_request(reason="é" * (MAX_REASON_BYTES // 2) + "x"))
    assert problem is not None and f"longer than {MAX_REASON_BYTES} bytes" in problem
    assert "control characters" in str(request_problem(exec_request(reason="a\nb")))
    assert "must be text" in str(request_problem(exec_request(reason=["x"])))


def test_run_as_limit_and_shape() -> None:
    assert request_problem(exec_request(run_as="u" * MAX_RUN_AS_BYTES)) is None
    assert request_problem(exec_request(run_as="machine$")) is None
    assert request_problem(exec_request(run_as="jo@corp.example")) is None
    for bad in ("u" * (MAX_RUN_AS_BYTES + 1), "-oProxyCommand", "a b", "a\x1b[2J", 7):
        assert "run-as user is not a valid user name" in str(request_problem(exec_request(run_as=bad)))


@pytest.mark.parametrize("agent", ["", "-x", ".hidden", "a/b", "a+b", "all", "x" * 65, "é", None, 3,
                                   "web1\x1b]0;pwned\x07"])
def test_invalid_agent_names_are_refused_without_quoting_them(agent: object) -> None:
    problem = request_problem(exec_request(agent=agent))
    assert problem is not None and problem.startswith("the agent name is not valid")
    assert "pwned" not in problem


def test_unknown_modes_and_types_are_refused_without_quoting_them() -> None:
    problem = request_problem(exec_request(mode="shell\x1b[31m"))
    assert problem is not None and problem.startswith("unknown session mode") and "\x1b" not in problem
    problem = request_problem({"type": "grant\n"})
    assert problem is not None and problem.startswith("unknown request type") and "\n" not in problem


def test_audit_grant_may_leave_the_recorder_out() -> None:
    assert request_problem(exec_request(mode="audit", agent=None, command=None)) is None
    assert request_problem(exec_request(mode="audit", agent="rec", command=None)) is None


def test_access_request_bounds() -> None:
    names = [f"web{i}" for i in range(MAX_ACCESS_AGENTS)]
    assert request_problem({"type": "access", "agents": names, "mode": "shell"}) is None
    assert request_problem({"type": "access", "agents": [*names, "one-more"]}) is not None
    assert request_problem({"type": "access", "agents": ["bad name"]}) is not None


def test_terminate_and_rotate_fields() -> None:
    assert request_problem({"type": "terminate", "sid": "ab" * 16, "agent": None}) is None
    assert request_problem({"type": "terminate", "sid": "ab" * 33}) is not None
    assert request_problem({"type": "terminate", "sid": "XYZ"}) is not None
    assert request_problem({"type": "terminate", "sid": "ab", "agent": "a b"}) is not None
    key, sig = b64e(bytes(32)), b64e(bytes(64))
    assert request_problem({"type": "rotate", "new_key": key, "new_sig": sig}) is None
    assert request_problem({"type": "rotate", "new_key": key, "new_sig": sig, "new_x25519": key}) is None
    assert request_problem({"type": "rotate", "new_key": key + "AA", "new_sig": sig}) is not None
    assert request_problem({"type": "rotate", "new_key": "x" * 10_000, "new_sig": sig}) is not None


# ----- the sealed request ---------------------------------------------------------------

def _sealed(body: dict[str, Any]) -> authz.PendingRequest:
    return authz.build_request(ALICE, "alice", bytes(AUTHORITY_X.public_key), body, NOW, rand=os.urandom)


def _sized(size: int) -> authz.PendingRequest:
    """A genuine request padded to exactly `size` bytes once sealed."""
    pad = 0
    while True:
        pending = _sealed(dict(exec_request(), pad="p" * pad))
        if len(pending.payload) == size:
            return pending
        pad += size - len(pending.payload)


def test_request_size_limit() -> None:
    at_limit = _sized(authz.MAX_REQUEST_BYTES)
    claimed, blob = authz.open_request_envelope(bytes(AUTHORITY_X), at_limit.payload)
    assert claimed == "alice"
    assert authz.verify_request(bytes(ALICE.verify_key), blob, NOW)["nonce"] == at_limit.nonce
    with pytest.raises(authz.AuthzError, match=f"over the {authz.MAX_REQUEST_BYTES}-byte limit"):
        authz.open_request_envelope(bytes(AUTHORITY_X), _sized(authz.MAX_REQUEST_BYTES + 1).payload)


def test_claimed_sender_must_be_a_valid_name() -> None:
    pending = authz.build_request(ALICE, "alice\n[fake log line]", bytes(AUTHORITY_X.public_key),
                                  exec_request(), NOW, rand=os.urandom)
    with pytest.raises(authz.AuthzError, match="not a valid principal name"):
        authz.open_request_envelope(bytes(AUTHORITY_X), pending.payload)


@pytest.mark.parametrize("nonce", ["", "ab", "AB" * 16, "ab" * 16 + "\n", "g" * 32, 12])
def test_nonce_must_be_what_clients_make(nonce: object) -> None:
    from tether.signed import sign_document

    doc = dict(exec_request(), user="alice", nonce=nonce, ts=NOW, reply_key=b64e(bytes(32)))
    with pytest.raises(authz.AuthzError, match="bad nonce"):
        authz.verify_request(bytes(ALICE.verify_key), sign_document(ALICE, authz.REQUEST, doc), NOW)
