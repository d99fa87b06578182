"""Watch and join (issue 11 item 5) on both brokers, in real PTYs: another user, allowed by
the policy's `watch`/`join`, finds the session in `tether sessions --live`, watches it
read-only (what the watcher types never reaches the shell), joins it as a second writer,
and everyone is told; a moderated shell starts only once a moderator watches, and the
moderator can end it. The recording holds the whole session and verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from stack import OS_USER, PtyClient, Stack, policy, statement, wait_for

from tether.authority.registry import Registry
from tether.recevents import EventKind, iter_log

PROMPT = rb"\[tp\]\$ "
BOB = f"""
[[statement]]
id = "bob-watches"
effect = "allow"
users = ["bob"]
agents = ["local"]
actions = ["watch", "join"]
run_as = ["{OS_USER}"]
"""


def _bob(stack: Stack) -> dict[str, str]:
    return dict(stack.env, TETHER_IDENTITY=str(stack.bob_identity))


def _live(stack: Stack, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    r = stack.tether("sessions", "--live", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _shell(stack: Stack) -> PtyClient:
    shell = PtyClient(stack, "shell", "local")
    shell.send(b"export PS1='[t''p]$ '\r")
    shell.expect(PROMPT)
    return shell


def _own_sids(stack: Stack) -> set[str]:
    return {str(s["sid"]) for s in _live(stack)}


def _sid_seen_by_bob(stack: Stack, action: str, before: set[str]) -> str:
    """The session started since `before` (the owner's live sessions then), once bob is
    offered to `action` it."""
    def found() -> str | None:
        for s in _live(stack, _bob(stack)):
            if s["sid"] not in before and action in (s.get("actions") or []):  # type: ignore[operator]
                return str(s["sid"])
        return None
    return str(wait_for(found, timeout=30, what=f"bob offered to {action} the session"))


@pytest.fixture
def bob_may_watch(stack: Stack) -> Iterator[None]:
    with policy(stack, statement() + BOB):
        yield


def test_watch_is_read_only_and_join_writes(stack: Stack, bob_may_watch: None) -> None:
    before = _own_sids(stack)
    owner = _shell(stack)
    watcher = joiner = None
    try:
        owner.send(b"echo before-$((6*7))\r")
        owner.expect(rb"before-42")
        owner.expect(PROMPT)
        sid = _sid_seen_by_bob(stack, "watch", before)

        watcher = PtyClient(stack, "watch", sid[:10], env=_bob(stack))
        watcher.expect(rb"before-42")  # the screen as it is
        owner.expect(rb"bob from \S+ started watching")
        owner.send(b"echo during-$((6*7))\r")
        watcher.expect(rb"during-42")
        # Read-only: what the watcher types goes nowhere.
        watcher.send(b"echo evil-$((6*7))\r")
        owner.send(b"echo check-$((6*7))\r")
        owner.expect(rb"check-42")
        watcher.expect(rb"check-42")
        watcher.send(b"~.")
        assert watcher.drain_until_exit() == 0
        owner.expect(rb"bob from \S+ stopped watching")

        joiner = PtyClient(stack, "join", sid, env=_bob(stack))
        owner.expect(rb"bob from \S+ joined")
        joiner.send(b"echo joined-$((6*7))\r")
        owner.expect(rb"joined-42")
        joiner.expect(rb"joined-42")
        joiner.send(b"~.")
        assert joiner.drain_until_exit() == 0
        owner.expect(rb"bob from \S+ left")
        owner.send(b"exit\r")
        assert owner.drain_until_exit(timeout=30) == 0
    finally:
        for c in (owner, watcher, joiner):
            if c is not None:
                c.close()
    assert b"evil-42" not in owner.buffer
    row = stack.wait_recorded("closed", after=0)
    assert row["sid"] == sid and row["chain"] == "ok"
    events = list(iter_log(stack.log_bytes(sid)))
    typed = b"".join(r.event.data for r in events if r.event.kind == EventKind.INPUT)
    assert b"joined-" in typed and b"evil" not in typed
    v = stack.tether("verify", sid)
    assert v.returncode == 0 and b"verified: intact" in v.stdout, v.stdout


def test_a_user_without_watch_is_not_offered_and_is_refused(stack: Stack) -> None:
    before = _own_sids(stack)
    owner = _shell(stack)
    try:
        new = wait_for(lambda: _own_sids(stack) - before, timeout=30,
                       what="the session listed for its owner")
        sid = next(iter(new))
        assert not [s for s in _live(stack, _bob(stack)) if s["sid"] == sid]
        r = stack.tether("watch", sid, env=_bob(stack))
        assert r.returncode == 255 and b"no live session you may watch matches" in r.stderr, r.stderr
        assert b"Traceback" not in r.stderr
        owner.send(b"exit\r")
        assert owner.drain_until_exit(timeout=30) == 0
    finally:
        owner.close()


def test_a_moderated_shell_starts_when_a_moderator_watches_and_the_moderator_ends_it(
        stack: Stack) -> None:
    registry = Registry.load(stack.home.registry)
    bob = registry.principals["bob"]
    saved = list(bob.groups)
    bob.groups = [*saved, "leads"]
    registry.save()
    try:
        with policy(stack, statement(require_moderator='["leads"]') + BOB):
            before = _own_sids(stack)
            owner = PtyClient(stack, "shell", "local")
            moderator = None
            try:
                owner.expect(rb"it starts when a moderator \(leads\) watches it")
                owner.send(b"echo held-$((6*7))\r")  # held until the shell runs
                sid = _sid_seen_by_bob(stack, "watch", before)
                # Moderators can pick out the sessions that wait for one.
                assert [s.get("awaiting_moderator") for s in _live(stack, _bob(stack))
                        if s["sid"] == sid] == [True]
                moderator = PtyClient(stack, "watch", sid, env=_bob(stack))
                try:
                    owner.expect(rb"held-42")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nmoderator: {moderator.buffer[-800:]!r}\n"
                                         f"{stack.log_tail()}") from None
                moderator.expect(rb"held-42")
                moderator.send(b"~k")
                owner.expect(rb"session ended by moderator bob")
                assert moderator.drain_until_exit() == 0
                owner.drain_until_exit(timeout=30)
            finally:
                for c in (owner, moderator):
                    if c is not None:
                        c.close()
    finally:
        registry = Registry.load(stack.home.registry)
        registry.principals["bob"].groups = saved
        registry.save()


def test_a_watcher_that_never_reads_does_not_slow_the_session(stack: Stack) -> None:
    """A watcher that completes its handshake and then never acks anything: 20 MB of
    output (twenty credit windows) still reach the owner, complete, while it watches."""
    import asyncio
    import hashlib
    import subprocess

    from support.agent_peer import Peer

    before = _own_sids(stack)
    owner = stack.popen("run", "local", "--", "sh", "-c",
                        "read go; head -c 20000000 /dev/zero | tr '\\0' 'w'; echo done",
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        new = wait_for(lambda: _own_sids(stack) - before, timeout=30, what="the session listed")
        sid = next(iter(new))

        async def stalled_watch() -> None:
            async with Peer(stack, slot_no=6) as peer:
                request = peer.request(mode="watch", command=None, attach=sid,
                                       grant=peer.grant(mode="watch", command=None, attach=sid))
                answer = await peer.hello(request, confirm=True)
                assert answer.accepted, answer.refused
                # Watching, never reading: start the flood and wait for the owner's copy.
                assert owner.stdin is not None
                owner.stdin.write(b"go\n")
                owner.stdin.flush()
                out, err = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: owner.communicate(timeout=120))
                assert out == b"w" * 20_000_000 + b"done\n", hashlib.sha256(out).hexdigest()
                assert b"started watching" in err, err  # it was there all along

        asyncio.run(stalled_watch())
        assert owner.returncode == 0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_watching_counts_against_max_sessions(stack: Stack) -> None:
    """docs/policy.md: `max_sessions` counts watch and join sessions too. bob may have one:
    a second watch at once is refused clearly; once he stops watching, he may again."""
    limited = BOB.replace('actions = ["watch", "join"]', 'actions = ["watch", "join"]\nmax_sessions = 1')
    assert limited != BOB
    with policy(stack, statement() + limited):
        before = _own_sids(stack)
        owner = _shell(stack)
        watcher = None
        try:
            sid = _sid_seen_by_bob(stack, "watch", before)
            watcher = PtyClient(stack, "watch", sid, env=_bob(stack))
            owner.expect(rb"bob from \S+ started watching")
            second = stack.tether("watch", sid, env=_bob(stack), timeout=60)
            assert second.returncode != 0
            assert b"already has 1 of 1 allowed sessions" in second.stderr, second.stderr
            assert b"Traceback" not in second.stderr
            watcher.send(b"~.")
            assert watcher.drain_until_exit() == 0
            owner.expect(rb"bob from \S+ stopped watching")
            again = PtyClient(stack, "watch", sid, env=_bob(stack))
            try:
                owner.expect(rb"bob from \S+ started watching")
                again.send(b"~.")
                assert again.drain_until_exit() == 0
            finally:
                again.close()
            owner.send(b"exit\r")
            assert owner.drain_until_exit(timeout=30) == 0
        finally:
            owner.close()
            if watcher is not None:
                watcher.close()


def test_a_join_that_policy_requires_recorded_is_refused_on_an_unrecorded_session(
        stack: Stack) -> None:
    """The owner's shell is unrecorded (recording "off"); bob's join statement requires
    recording: what bob typed would escape the recording his policy demands, so the join
    is refused clearly and the session goes on untouched."""
    joins_recorded = BOB + 'recording = "required"\n'
    with policy(stack, statement(recording='"off"') + joins_recorded):
        before = _own_sids(stack)
        owner = _shell(stack)
        try:
            sid = _sid_seen_by_bob(stack, "join", before)
            r = stack.tether("join", sid, env=_bob(stack), timeout=60)
            assert r.returncode != 0
            assert b"this session is not recorded, so you cannot join it" in r.stderr, r.stderr
            assert b"Traceback" not in r.stderr
            owner.send(b"echo still-$((6*7))\r")
            owner.expect(rb"still-42")
            assert b"joined" not in owner.buffer
            owner.send(b"exit\r")
            assert owner.drain_until_exit(timeout=30) == 0
        finally:
            owner.close()
