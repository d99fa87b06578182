"""The authority's defences end to end, on both brokers: exec grants bind the command, an
unsafe policy or registry stops being used, requests are checked and bounded before
anything from them is logged or audited."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack import OS_USER, Stack, policy, statement, wait_for
from support.requester import Requester

from tether import authz, grants
from tether.authority.requests import MAX_ACCESS_AGENTS
from tether.edge.keys import Identity
from tether.encoding import b64d
from tether.limits import MAX_COMMAND_BYTES, MAX_REASON_BYTES, MAX_RUN_AS_BYTES

DENY_RM = ('[[statement]]\nid = "no-rm"\neffect = "deny"\nusers = ["*"]\nagents = ["*"]\n'
           'actions = ["exec"]\ncommands = ["rm *"]\n')


@pytest.fixture
def alice(stack: Stack) -> Iterator[Requester]:
    """The stack's user, asking the authority directly."""
    requester = Requester(stack.port, stack.home.user_identity)
    try:
        yield requester
    finally:
        requester.close()


def exec_body(**changes: Any) -> dict[str, Any]:
    return dict({"type": "grant", "agent": "local", "mode": "exec", "run_as": None,
                 "reason": None, "command": ["true"]}, **changes)


def audit_records(stack: Stack) -> list[dict[str, Any]]:
    r = stack.tether("audit", "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def grant_claims(stack: Stack, reply: dict[str, Any] | None) -> grants.Grant:
    assert reply is not None and reply.get("ok"), reply
    authority = Identity.load(stack.home.user_identity).authority["ed25519"]
    return grants.decode(b64d(authority), str(reply["grant"]))


# ----- hole 1: an exec grant always binds the exact argv ---------------------------------

@pytest.mark.parametrize("command", [None, [], "missing"])
def test_exec_request_without_a_command_is_refused(stack: Stack, alice: Requester,
                                                   command: object) -> None:
    body = exec_body(command=command)
    if command == "missing":
        del body["command"]
    reply = alice.ask(body)
    assert reply is not None and not reply["ok"], reply
    assert "names its command as a non-empty list of strings" in reply["error"]
    assert "grant" not in reply


def test_deny_commands_cannot_be_bypassed(stack: Stack, alice: Requester) -> None:
    with policy(stack, statement() + DENY_RM):
        r = stack.tether("run", "local", "--", "rm", "-rf", "/tmp/tether-not-there")
        assert r.returncode == 255 and b"no-rm" in r.stderr, r.stderr
        # Without a command (the old bypass: the grant bound none, the HELLO named rm).
        reply = alice.ask(exec_body(command=None))
        assert reply is not None and not reply["ok"] and "grant" not in reply
        reply = alice.ask(exec_body(command=["rm", "-rf", "/"]))
        assert reply is not None and not reply["ok"] and "no-rm" in reply["error"]
        # An allowed command is granted, bound to exactly that argv.
        granted = grant_claims(stack, alice.ask(exec_body(command=["ls", "-l"])))
        assert granted.command == ["ls", "-l"]


def test_audit_trail_has_the_command(stack: Stack) -> None:
    r = stack.tether("run", "local", "--", "echo", "audit-the-command")
    assert r.returncode == 0 and r.stdout == b"audit-the-command\n", r.stderr
    issued = [e for e in audit_records(stack) if e["event"] == "grant-issued"]
    assert issued[-1]["command"] == ["echo", "audit-the-command"]


# ----- hole 9: a policy or registry made unsafe after start stops being used -------------

@contextlib.contextmanager
def mode(path: Path, new: int) -> Iterator[None]:
    old = path.stat().st_mode & 0o777
    path.chmod(new)
    try:
        yield
    finally:
        path.chmod(old)


@pytest.mark.parametrize(("which", "unsafe"), [("policy", 0o620), ("registry", 0o640)])
def test_a_file_made_unsafe_after_start_denies_every_grant(stack: Stack, which: str,
                                                           unsafe: int) -> None:
    path = stack.home.policy if which == "policy" else stack.home.registry
    assert stack.tether("run", "local", "--", "true").returncode == 0
    logged_before = stack.log_tail(200_000).count(f"{which} not used")
    with mode(path, unsafe):
        for _ in range(2):
            r = stack.tether("run", "local", "--", "true")
            assert r.returncode == 255, r.stderr
            assert f"chmod 600 {path}".encode() in r.stderr, r.stderr
        assert stack.log_tail(200_000).count(f"{which} not used") == logged_before + 1  # once
    r = stack.tether("run", "local", "--", "true")
    assert r.returncode == 0, r.stderr


# ----- hole 4: names and modes are checked before anything is logged or audited ----------

@pytest.mark.parametrize("changes", [
    {"agent": "local\x1b]0;pwned\x07"}, {"agent": "../../local"}, {"agent": "x" * 65},
    {"mode": "exec\x1b[2Jpwned"}, {"type": "grant\npwned"}, {"run_as": "-oProxyCommand=pwned"},
    {"reason": "pwned\r\x1b[1A"},
], ids=["agent-escape", "agent-path", "agent-long", "mode", "type", "run-as", "reason"])
def test_invalid_fields_are_refused_before_they_reach_the_log_or_audit(
        stack: Stack, alice: Requester, changes: dict[str, Any]) -> None:
    def logged() -> int:
        return stack.log_tail(200_000).count("refused a malformed request")

    before = logged()
    reply = alice.ask(exec_body(**changes))
    assert reply is not None and not reply["ok"], reply
    assert reply["error"].startswith("refused: ") and "pwned" not in reply["error"]
    wait_for(lambda: logged() > before, what="the refusal logged")
    assert "pwned" not in stack.log_tail(200_000)
    last = audit_records(stack)[-1]
    assert last["event"] == "request-refused" and last["why"] == reply["error"][len("refused: "):]
    assert "pwned" not in json.dumps(last)


# ----- bounded inputs: each limit exactly, then one past --------------------------------

def test_reason_limit(stack: Stack) -> None:
    at_limit = "é" * (MAX_REASON_BYTES // 2)
    r = stack.tether("run", "--reason", at_limit, "local", "--", "true")
    assert r.returncode == 0, r.stderr
    r = stack.tether("run", "--reason", at_limit + "x", "local", "--", "true")
    assert r.returncode == 255 and f"longer than {MAX_REASON_BYTES} bytes".encode() in r.stderr
    assert stack.tether("run", "local", "--", "true").returncode == 0


def test_command_limit(stack: Stack) -> None:
    # echo + its NUL is 5 bytes; the argument and its NUL take the rest.
    arg = "x" * (MAX_COMMAND_BYTES - 5 - 1)
    r = stack.tether("run", "local", "--", "echo", arg)
    assert r.returncode == 0 and r.stdout == arg.encode() + b"\n", r.stderr
    r = stack.tether("run", "local", "--", "echo", arg + "x")
    assert r.returncode == 255, r.stderr
    assert f"the command is {MAX_COMMAND_BYTES + 1} bytes; the limit is {MAX_COMMAND_BYTES}".encode() in r.stderr
    assert stack.tether("run", "local", "--", "true").returncode == 0


def test_run_as_and_access_limits(stack: Stack, alice: Requester) -> None:
    reply = alice.ask(exec_body(run_as="u" * MAX_RUN_AS_BYTES))
    assert reply is not None and "may not run as" in reply["error"]  # judged by the policy
    reply = alice.ask(exec_body(run_as="u" * (MAX_RUN_AS_BYTES + 1)))
    assert reply is not None and "run-as user is not a valid user name" in reply["error"]
    names = ["local"] + [f"nope{i}" for i in range(MAX_ACCESS_AGENTS - 1)]
    reply = alice.ask({"type": "access", "agents": names, "mode": "shell"})
    assert reply is not None and reply["ok"] and reply["access"]["local"]["default"] == OS_USER
    reply = alice.ask({"type": "access", "agents": [*names, "local2"], "mode": "shell"})
    assert reply is not None and not reply["ok"] and f"at most {MAX_ACCESS_AGENTS}" in reply["error"]
    assert grant_claims(stack, alice.ask(exec_body())).command == ["true"]


def test_request_size_limit(stack: Stack, alice: Requester) -> None:
    def sized(size: int) -> authz.PendingRequest:
        pad = 0
        while len((pending := alice.request(exec_body(pad="p" * pad))).payload) != size:
            pad += size - len(pending.payload)
        return pending

    at_limit = sized(authz.MAX_REQUEST_BYTES)
    alice.send(at_limit.payload)
    assert grant_claims(stack, alice.answer(at_limit)).command == ["true"]
    past = sized(authz.MAX_REQUEST_BYTES + 1)
    alice.send(past.payload)
    wait_for(lambda: f"over the {authz.MAX_REQUEST_BYTES}-byte limit" in stack.log_tail(),
             what="the oversized request logged")
    assert alice.answer(past, timeout=0.5) is None
    assert stack.tether("run", "local", "--", "true").returncode == 0



def test_a_request_over_the_size_limit_is_stopped_by_the_client(stack: Stack) -> None:
    # Within the command limit, but JSON escapes each control character to six bytes.
    r = stack.tether("run", "local", "--", "echo", "\x01" * 10_000)
    assert r.returncode == 255
    assert f"over the authority's limit of {authz.MAX_REQUEST_BYTES}".encode() in r.stderr, r.stderr
