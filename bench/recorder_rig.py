"""Shared by the recorder benches: a stand-in agent that streams recordings to a real
`tether recorder` through a real Mosquitto, with real grants and keys."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from stack import Stack, running_stack  # noqa: E402

from tether import grants  # noqa: E402
from tether.authority.provision import authority_identity, commit, new_principal  # noqa: E402
from tether.authority.registry import Registry  # noqa: E402
from tether.edge.keys import Identity  # noqa: E402
from tether.encoding import b64e  # noqa: E402
from tether.recording import RecordingSender, session_body  # noqa: E402


def grant_token(agent: Identity, recorder: Identity, authority: Identity) -> str:
    now = time.time()
    g = grants.Grant(
        user="bench", agent=agent.name, agent_key=b64e(agent.public_key),
        client_key=b64e(os.urandom(32)), mqtt_name="bench-client", mode="exec", run_as="nobody",
        command=["cat"], max_duration=3600, idle_timeout=0, recording="required",
        recorder=recorder.name, reason="bench", jti=grants.new_jti(os.urandom), expires=now + 300,
        recorder_x25519=b64e(recorder.x25519_public), recorder_ed25519=b64e(recorder.public_key))
    return grants.issue(authority.signing_seed, g, now)


def new_sender(agent: Identity, recorder: Identity, authority: Identity) -> RecordingSender:
    sid = os.urandom(16)
    return RecordingSender(
        sid=sid, signing_key=agent.signing_key, recorder_x25519=recorder.x25519_public,
        recorder_ed25519=recorder.public_key,
        body=session_body(sid=sid, grant_token=grant_token(agent, recorder, authority),
                          agent=agent.name, client="bench-client", cols=80, rows=24, term=None,
                          started=time.time()),
        now=time.monotonic(), rand=os.urandom, required=True)


@dataclass
class Rig:
    stack: Stack
    agent: Identity
    recorder: Identity
    authority: Identity


@contextlib.contextmanager
def recorder_rig() -> Iterator[Rig]:
    """Mosquitto, `tether up --no-recorder`, a separate `tether recorder`, and an agent
    principal `benchagent` for the bench to act as."""
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp, \
            running_stack("mosquitto", Path(tmp)) as stack:
        stack.stop_up()
        registry = Registry.load(stack.home.registry)
        authority = authority_identity(stack.home)
        agent = new_principal(stack.home, registry, authority, "benchagent", "agent",
                              host="127.0.0.1", port=stack.port)
        commit(stack.home, registry)
        assert stack.broker is not None
        stack.broker.reload()
        stack.start_up("--no-recorder")
        proc = stack.start_recorder()
        try:
            yield Rig(stack, agent, Identity.load(stack.home.recorder_identity()), authority)
        finally:
            proc.terminate()
            proc.wait()
