"""Policy decisions and agent-enforced limits, end to end on both brokers."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from stack import PtyClient, Stack, policy, statement

PROMPT = rb"\[tp\]\$ "


def test_required_reason(stack: Stack) -> None:
    with policy(stack, statement(require_reason="true")):
        r = stack.tether("run", "local", "--", "true")
        assert r.returncode == 255 and b"reason is required" in r.stderr, r.stderr
        ok = stack.tether("run", "--reason", "INC-42", "local", "--", "true")
        assert ok.returncode == 0, ok.stderr


def test_command_allow_list(stack: Stack) -> None:
    body = statement(commands='["echo *", "id -un"]').replace('actions = ["shell", "exec"]',
                                                              'actions = ["exec"]')
    with policy(stack, body):
        assert stack.tether("run", "local", "--", "echo", "hi").stdout == b"hi\n"
        r = stack.tether("run", "local", "--", "rm", "-rf", "/tmp/nothing-here")
        assert r.returncode == 255 and b"is not allowed" in r.stderr, r.stderr
        shell = stack.tether("shell", "local")
        assert shell.returncode == 255 and b"denied" in shell.stderr


def test_deny_wins_over_allow(stack: Stack) -> None:
    deny = ('[[statement]]\nid = "no-exec"\neffect = "deny"\nusers = ["*"]\nagents = ["*"]\n'
            'actions = ["exec"]\n')
    with policy(stack, statement() + deny):
        r = stack.tether("run", "local", "--", "true")
        assert r.returncode == 255 and b"no-exec" in r.stderr, r.stderr




def test_max_sessions(stack: Stack) -> None:
    with policy(stack, statement(max_sessions="1")):
        first = stack.live_session()
        try:
            second = stack.tether("run", "local", "--", "true")
            assert second.returncode == 255, (second.stderr, stack.log_tail())
            assert b"already has 1 of 1 allowed sessions" in second.stderr, second.stderr
            assert first.poll() is None, "the refusal ended the first session"
            # Ctrl-C reaches the remote command; once the client has its exit status the
            # agent no longer counts the session, so the next one is allowed at once.
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=10)
            assert first.returncode == 128 + signal.SIGINT
            started = time.monotonic()
            third = stack.tether("run", "local", "--", "true")
            took = time.monotonic() - started
            assert third.returncode == 0, (third.stderr, stack.log_tail())
            print(f"max_sessions: a new session allowed {took:.2f} s after the first ended")
            assert took <= 5.0, took
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()


def test_max_duration_ends_a_session(stack: Stack) -> None:
    with policy(stack, statement(max_duration="3")):
        # The agent starts the 3 s clock when it spawns the command: after the command was
        # launched here and before `ready` is seen here.
        launched = time.monotonic()
        proc = stack.popen("run", "local", "--", "sh", "-c", "echo ready; exec sleep 60",
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            out = b""
            while b"ready" not in out:
                assert proc.poll() is None and time.monotonic() - launched < 30, out
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    out += os.read(proc.stdout.fileno(), 4096)
            running = time.monotonic()
            _, err = proc.communicate(timeout=30)
            ended = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 128 + signal.SIGHUP, err
        assert b"maximum duration" in err, err
        print(f"max_duration 3 s: ended {ended - running:.2f} s after the command was seen "
              f"running, {ended - launched:.2f} s after launch")
        assert ended - launched >= 3.0
        assert ended - running <= 3.0 + 2.0


def _shell(stack: Stack) -> PtyClient:
    client = PtyClient(stack, "shell", "local")
    client.send(b"export PS1='[t''p]$ '\r")
    client.expect(PROMPT)
    return client


def test_idle_timeout_ends_an_idle_shell(stack: Stack) -> None:
    with policy(stack, statement(idle_timeout="2")):
        client = PtyClient(stack, "shell", "local")
        try:
            client.send(b"export PS1='[t''p]$ '\r")
            typed = time.monotonic()  # the last input; the agent's idle clock starts after it
            client.expect(PROMPT)
            prompted = time.monotonic()  # the last output was before this
            client.expect(rb"idle for 2 s", timeout=2.0 + 2.0)
            assert client.drain_until_exit() != 0
            ended = time.monotonic()
        finally:
            client.close()
        print(f"idle_timeout 2 s: ended {ended - prompted:.2f} s after the prompt was seen, "
              f"{ended - typed:.2f} s after the last input")
        assert ended - typed >= 2.0
        assert ended - prompted <= 2.0 + 2.0


def test_idle_timeout_spares_a_silent_foreground_job(stack: Stack) -> None:
    with policy(stack, statement(idle_timeout="2")):
        client = _shell(stack)
        try:
            client.send(b"sleep 5; echo sur''vived\r")
            sent = time.monotonic()
            client.expect(rb"survived", timeout=5.0 + 2.0)
            client.expect(PROMPT)
            prompted = time.monotonic()
            assert prompted - sent >= 5.0  # the silent 5 s job outlived the 2 s idle limit
            client.expect(rb"idle for 2 s", timeout=2.0 + 2.0)  # and idle again afterwards
            print(f"idle_timeout 2 s after a silent job: ended {time.monotonic() - prompted:.2f} s "
                  "after its prompt")
        finally:
            client.close()


def test_decisions_are_in_the_audit_trail(stack: Stack) -> None:
    assert stack.tether("run", "--reason", "audit-check", "local", "--", "true").returncode == 0
    bob = stack.tether("run", "--identity", str(stack.bob_identity), "local", "--", "true")
    assert bob.returncode == 255
    r = stack.tether("audit", "--since", "10m")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "grant-issued" in out and "reason='audit-check'" in out
    assert "grant-denied" in out and "user=bob" in out
    only_bob = stack.tether("audit", "--user", "bob").stdout.decode()
    assert "user=bob" in only_bob and "audit-check" not in only_bob


def test_max_duration_warns_a_minute_before(stack: Stack) -> None:
    with policy(stack, statement(max_duration="61")):
        r = stack.tether("run", "local", "--", "sleep", "3", timeout=30)
        assert r.returncode == 0, r.stderr
        assert b"this session ends in 60 s" in r.stderr, r.stderr
