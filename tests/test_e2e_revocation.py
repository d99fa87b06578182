"""Revocation and terminate, end to end on both brokers: the signed bulletin closes live
sessions and blocks new ones; terminate orders end one session; forgeries do nothing."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

from nacl.signing import SigningKey
from stack import Spy, Stack, wait_for
from test_e2e_attacks import _grant, _handshake

from tether.authority.registry import Registry
from tether.edge.keys import Identity
from tether.revocation import RevocationError, Revocations, open_bulletin, sign_bulletin
from tether.topics import Topics

TOPICS = Topics()


def _session_ids(spy: Spy) -> set[str]:
    sids = set()
    for topic, _ in spy.snapshot():
        parsed = TOPICS.parse_session(topic)
        if parsed is not None:
            sids.add(parsed[2])
    return sids


def _authority_bulletins(stack: Stack, spy: Spy, skip: int = 0) -> list[Revocations]:
    """The bulletins the spy saw (after the first `skip` messages) that the authority signed."""
    key = Identity.load(stack.home.authority_identity).public_key
    out = []
    for topic, payload in spy.snapshot()[skip:]:
        if topic == TOPICS.bulletin():
            with contextlib.suppress(RevocationError):
                out.append(open_bulletin(key, payload))
    return out


# Agents close covered live sessions "within about a second" of the bulletin
# (docs/threat-model.md §7); a terminate order travels in the same bulletin.
CLAIM = 1.0
MARGIN = 2.0


def _exited_within(proc: subprocess.Popen[bytes], since: float, what: str) -> tuple[int, bytes]:
    """The session's exit, which must come within the claim (plus a margin) of `since`: the
    moment the revoke or terminate command returned."""
    bound = CLAIM + MARGIN
    try:
        _, err = proc.communicate(timeout=max(0.0, since + bound - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the session was still running {bound} s after {what}") from None
    took = time.monotonic() - since
    print(f"{what}: the session ended {took:.2f} s after the command returned")
    assert took <= bound, took
    return proc.returncode, err


def test_revoking_a_user_closes_live_sessions_and_blocks_new_ones(fresh_stack: Stack) -> None:
    stack = fresh_stack
    user = Identity.load(stack.home.user_identity).name
    proc = stack.live_session()
    done = stack.tether("authority", "revoke", "user", user, "--reason", "left the team")
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert b"tether broker reload" in done.stdout
    code, err = _exited_within(proc, returned, "revoke user")
    assert code != 0
    assert f"user {user!r} has been revoked".encode() in err, err
    # The broker still accepts the old credentials until `tether broker reload`, so the
    # denial comes from the authority, with the reason.
    again = stack.tether("run", "local", "--", "true")
    assert again.returncode == 255
    assert f"user {user!r} has been revoked".encode() in again.stderr, again.stderr
    registry = Registry.load(stack.home.registry)
    assert user not in registry.principals
    assert all(not u.name.startswith(user) for u in registry.broker_users())
    audit = stack.tether("audit", "--json").stdout.decode()
    assert '"event":"revoked"' in audit and '"reason":"left the team"' in audit
    # After the broker reload the old credentials stop working at the broker as well.
    stack.broker.reload()
    gone = stack.tether("run", "local", "--", "true")
    assert gone.returncode == 255 and b"refused" in gone.stderr, gone.stderr


def test_revoking_an_agent_makes_clients_refuse_it(fresh_stack: Stack) -> None:
    stack = fresh_stack
    assert stack.tether("run", "local", "--", "true").returncode == 0
    done = stack.tether("authority", "revoke", "agent", "local", "--reason", "disk stolen")
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    # A run that starts once the bulletin is out (about a second) must refuse the agent.
    while True:
        started = time.monotonic() - returned
        out = stack.tether("run", "local", "--", "true")
        if out.returncode == 255 and b"agent 'local' has been revoked by the authority" in out.stderr:
            break
        assert out.returncode == 0, out.stderr
        assert started <= CLAIM + MARGIN, f"a run started {started:.2f} s after the revocation was allowed"
    print(f"revoke agent: refused by a run started {started:.2f} s after the command returned")


def test_a_revoked_grant_is_refused_by_the_agent(stack: Stack) -> None:
    user = Identity.load(stack.home.user_identity)
    token = _grant(stack, user, f"{user.name}.7", jti="revokedjti0001")
    spy = Spy(stack)
    try:
        done = stack.tether("authority", "revoke", "grant", "revokedjti0001")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: any("revokedjti0001" in b.grants for b in _authority_bulletins(stack, spy)),
                 timeout=CLAIM + MARGIN, what="the bulletin revoking the grant")
    finally:
        spy.close()
    result, _ = asyncio.run(_handshake(stack, token))
    assert "grant revokedjti0001 has been revoked" in result


def test_forged_bulletin_is_ignored_and_terminate_ends_a_session(stack: Stack) -> None:
    user = Identity.load(stack.home.user_identity).name
    spy = Spy(stack)
    try:
        before = _session_ids(spy)
        proc = stack.live_session()
        sid = wait_for(lambda: _session_ids(spy) - before, what="the session id").pop()
        # A forged bulletin (right shape, wrong key) and garbage, both retained, from a
        # principal with full broker access: neither may end the session or revoke the user.
        forged = Revocations(serial=10**9, users={user: {}},
                             terminate=[{"agent": "*", "sid": sid, "until": time.time() + 600}])
        seen = len(spy.snapshot())
        for blob in (sign_bulletin(SigningKey.generate(), forged), b"\x00" * 80):
            spy.client.publish(TOPICS.bulletin(), blob, 1, retain=True).wait_for_publish(10)
        # The authority notices its retained bulletin was replaced and puts it back.
        # It republishes as soon as it sees the replacement: well within the bulletin's second.
        wait_for(lambda: _authority_bulletins(stack, spy, seen), timeout=CLAIM + MARGIN,
                 what="the authority to restore its bulletin")
        assert proc.poll() is None, "a forged bulletin ended the session"
        assert stack.tether("run", "local", "--", "true").returncode == 0
    finally:
        spy.close()
    # A plain user without the `admin` action may not terminate sessions.
    denied = stack.tether("sessions", "terminate", sid, "--agent", "local")
    assert denied.returncode == 255 and b"denied" in denied.stderr, denied.stderr
    assert proc.poll() is None
    # The admin can; the agent checks the authority's signature and ends it.
    done = stack.tether("sessions", "terminate", sid, "--identity", str(stack.spy_identity))
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    code, err = _exited_within(proc, returned, "terminate")
    assert code == 129, (code, err)
    assert b"session terminated by spy" in err, err
