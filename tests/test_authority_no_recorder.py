"""The authority's no-recorder denial, end to end on both brokers: when the policy requires
recording and no recorder is registered, no grant is issued (with the reason), instead of
a grant that silently records nothing."""

from __future__ import annotations

import json

from stack import Stack, policy, statement
from support.requester import Requester

from tether.authority.provision import commit
from tether.authority.registry import Registry

NO_RECORDER = ("denied: policy #1 'test' requires recording, and no recorder is registered (an "
               "administrator adds one with `tether authority recorder add`)")


def _exec(command: list[str]) -> dict[str, object]:
    return {"type": "grant", "agent": "local", "mode": "exec", "run_as": None, "reason": None,
            "command": command}


def test_required_recording_without_a_registered_recorder_is_denied(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()
    registry = Registry.load(stack.home.registry)
    recorders = [p.name for p in registry.principals.values() if p.kind == "recorder"]
    assert recorders == ["recorder"]  # the one `tether up` registered
    registry.remove("recorder")
    commit(stack.home, registry)
    # The identity file stays, so `tether up` does not register the recorder again.
    stack.start_up("--no-recorder")
    marker = stack.root / "ran"
    requester = Requester(stack.port, stack.home.user_identity)
    try:
        with policy(stack, statement(recording='"required"')):
            reply = requester.ask(_exec(["true"]))
            assert reply is not None and reply["ok"] is False and reply["error"] == NO_RECORDER, reply
            assert "grant" not in reply
            r = stack.tether("run", "local", "--", "touch", str(marker))
            assert r.returncode == 255, r.stderr
            assert NO_RECORDER.encode() in r.stderr, r.stderr
            assert not marker.exists()
        # The same request under a policy that only wants recording is granted, unrecorded:
        # the denial is the required recording's, not something else about the request.
        with policy(stack, statement(recording='"optional"')):
            reply = requester.ask(_exec(["true"]))
            assert reply is not None and reply.get("ok") is True, reply
            r = stack.tether("run", "local", "--", "touch", str(marker))
            assert r.returncode == 0, r.stderr
            assert marker.exists()
    finally:
        requester.close()
    audit = stack.tether("audit", "--json")
    assert audit.returncode == 0, audit.stderr
    denied = [json.loads(line) for line in audit.stdout.decode().splitlines()]
    denied = [e for e in denied if e["event"] == "grant-denied"]
    assert [e["why"] for e in denied] == [NO_RECORDER, NO_RECORDER]
