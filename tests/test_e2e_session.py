"""End to end: real broker, real `tether up`, real PTYs, real processes. Each test runs on
the embedded amqtt broker and on Mosquitto configured from the repository's mosquitto.conf."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stack import OS_USER, PtyClient, Spy, Stack, policy, statement, wait_for

PROMPT = rb"\[tp\]\$ "


def open_shell(stack: Stack, cols: int = 80, rows: int = 24) -> PtyClient:
    client = PtyClient(stack, "shell", "local", cols=cols, rows=rows)
    # Quoted so that the local echo of what we type (before raw mode) cannot match PROMPT.
    client.send(b"export PS1='[t''p]$ '\r")
    client.expect(PROMPT)
    return client


def test_shell_runs_commands_follows_resize_and_propagates_exit(stack: Stack) -> None:
    client = open_shell(stack, cols=91, rows=27)
    try:
        client.send(b"echo hello-$((6*7))\r")
        client.expect(rb"hello-42")
        client.expect(PROMPT)
        client.send(b"stty size\r")
        client.expect(rb"27 91")
        client.expect(PROMPT)
        client.resize(132, 43)
        # The kernel sends SIGWINCH to the client; the remote size must follow.
        deadline = time.monotonic() + 10
        while True:
            client.send(b"stty size\r")
            m = client.expect(rb"(\d+) (\d+)\r\n")
            client.expect(PROMPT)
            if m.group(0).startswith(b"43 132"):
                break
            assert time.monotonic() < deadline, f"remote size stayed {m.group(0)!r}"
        client.send(b"exit 3\r")
        assert client.drain_until_exit() == 3
    finally:
        client.close()


def test_shell_escape_disconnects(stack: Stack) -> None:
    client = open_shell(stack)
    try:
        client.send(b"\r~.")
        assert client.drain_until_exit() == 255
        assert b"closed" in client.buffer
    finally:
        client.close()


def test_ctrl_c_stops_yes_within_one_second(stack: Stack) -> None:
    client = open_shell(stack)
    try:
        client.send(b"yes\r")
        client.expect(rb"(y\r\n){200}")
        start = time.monotonic()
        client.send(b"\x03")
        client.expect(PROMPT, timeout=5)
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"prompt came back after {elapsed:.2f} s"
        client.send(b"echo still-$((1+1))\r")
        client.expect(rb"still-2")
        client.send(b"exit\r")
        assert client.drain_until_exit() == 0
    finally:
        client.close()


def test_shell_full_screen_programs_work(stack: Stack) -> None:
    client = open_shell(stack, cols=100, rows=30)
    try:
        client.send(b"printf 'line-%s\\n' $(seq 1 200) > /tmp/tether-less-$$.txt; "
                    b"less /tmp/tether-less-$$.txt\r")
        client.expect(rb"line-1\r?\n")
        client.expect(rb"line-2\d")  # less fills the 30-row screen
        client.send(b"q")
        client.expect(PROMPT)
        client.send(b"top -b -n 1 | head -3\r")
        client.expect(rb"Tasks:")
        client.expect(PROMPT)
        client.send(b"exit\r")
        assert client.drain_until_exit() == 0
    finally:
        client.close()


def test_run_exit_codes_and_separate_streams(stack: Stack) -> None:
    r = stack.tether("run", "local", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"
    assert stack.tether("run", "local", "--", "true").returncode == 0
    killed = stack.tether("run", "local", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM
    missing = stack.tether("run", "local", "--", "no-such-command-xyz")
    assert missing.returncode == 127
    assert b"not found" in missing.stderr


def test_run_streams_stdin(stack: Stack) -> None:
    data = b"".join(b"%d\n" % i for i in range(1, 100001))
    r = stack.tether("run", "local", "--", "wc", "-l", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"100000"


def test_run_50_mb_byte_exact(stack: Stack, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(50 * 1024 * 1024))
    r = stack.tether("run", "local", "--", "cat", str(blob), timeout=120)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_concurrent_sessions(stack: Stack) -> None:
    procs = [stack.popen("run", "local", "--", "sh", "-c", f"sleep 0.5; echo n{i}",
                         stdout=-1, stderr=-1) for i in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    assert sorted(o[0] for o in outs) == sorted(b"n%d\n" % i for i in range(6))


def test_run_as(stack: Stack) -> None:
    if os.geteuid() == 0:
        r = stack.tether("run", "--as", "nobody", "local", "--", "id", "-un")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == b"nobody"
        groups = stack.tether("run", "--as", "nobody", "local", "--", "id", "-u")
        assert groups.stdout.strip() != b"0"
    denied = stack.tether("run", "--as", "daemon", "local", "--", "true")
    assert denied.returncode == 255
    assert b"may not run as 'daemon'" in denied.stderr
    me = stack.tether("run", "local", "--", "id", "-un")
    assert me.stdout.strip() == OS_USER.encode()


def test_no_plaintext_on_the_broker(stack: Stack) -> None:
    spy = Spy(stack)
    typed = "typed-" + secrets.token_hex(8)
    printed = "printed-" + secrets.token_hex(8)
    try:
        client = open_shell(stack)
        try:
            client.send(f"echo {typed}; echo {printed[:8]}''{printed[8:]}\r".encode())
            client.expect(printed.encode())
            client.send(b"exit\r")
            assert client.drain_until_exit() == 0
        finally:
            client.close()
        r = stack.tether("run", "local", "--", "sh", "-c", f"echo {printed}; cat", input=typed.encode())
        assert r.stdout == f"{printed}\n{typed}".encode()
        captured = spy.snapshot()
    finally:
        spy.close()
    session_payloads = [p for t, p in captured if "/s/" in t]
    assert len(session_payloads) > 10, "the spy saw no session traffic; the test proves nothing"
    for canary in (typed, printed):
        for form in (canary.encode(), canary.encode().hex().encode(), canary.encode("utf-16-le")):
            assert not any(form in payload for _, payload in captured), f"{canary} leaked"


def test_ls_shows_agents(stack: Stack) -> None:
    r = stack.tether("ls")
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "LABELS", "PLATFORM", "VERSION", "LAST", "SEEN"]
    row = next(line for line in lines if line.startswith("local "))
    assert " online " in row and "host=" in row and "linux/" in row and "0.1.0" in row


def test_errors_are_clear(stack: Stack) -> None:
    unknown = stack.tether("shell", "nosuch")
    assert unknown.returncode == 255
    assert b"unknown agent 'nosuch'" in unknown.stderr and b"tether ls" in unknown.stderr
    assert b"Traceback" not in unknown.stderr
    bob = stack.tether("run", "--identity", str(stack.bob_identity), "local", "--", "true")
    assert bob.returncode == 255
    assert b"denied: no policy statement allows 'bob'" in bob.stderr
    env = dict(stack.env)
    unreachable = stack.tether("ls", "--identity", str(stack.root / "nowhere.json"), env=env)
    assert b"no identity at" in unreachable.stderr
    no_cmd = stack.tether("run", "local")
    assert no_cmd.returncode != 0 and b"no command given" in no_cmd.stderr


def test_unreachable_broker_names_the_address(stack: Stack, tmp_path: Path) -> None:
    from support.brokers import free_port

    from tether.edge.keys import Identity

    ident = Identity.load(stack.home.user_identity)
    port = free_port()
    ident.broker["port"] = port
    path = tmp_path / "id.json"
    ident.save(path)
    r = stack.tether("run", "--identity", str(path), "local", "--", "true")
    assert r.returncode == 255
    assert f"127.0.0.1:{port}".encode() in r.stderr and b"connection refused" in r.stderr.lower()


def test_offline_agent_points_to_ls(fresh_stack: Stack) -> None:
    fresh_stack.stop_up()
    wait_for(lambda: fresh_stack.agent_status("local") == "offline", what="agent offline")
    r = fresh_stack.tether("run", "local", "--", "true")
    # The authority is down too (it ran in the same `tether up`), which must also be clear.
    assert r.returncode == 255
    assert b"agent 'local' is offline" in r.stderr, r.stderr
    assert b"authority did not answer" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr


def test_slow_reader_stops_the_remote_writer(stack: Stack, tmp_path: Path) -> None:
    """Credit-window backpressure: while the client does not read, the remote program
    blocks in write() after about one window, instead of the agent buffering it all."""
    progress = tmp_path / "progress"
    script = (f"i=0; while [ $i -lt 4000 ]; do head -c 65536 /dev/zero; i=$((i+1)); "
              f"echo $i > {progress}; done")
    proc = stack.popen("run", "local", "--", "sh", "-c", script, stdout=-1, stderr=-1)
    try:
        wait_for(lambda: progress.exists() and progress.read_text().strip(), what="writer started")
        last = [-1, time.monotonic()]

        def stalled() -> bool:
            text = progress.read_text().strip()
            now_value = int(text) if text else 0
            if now_value != last[0]:
                last[:] = [now_value, time.monotonic()]
                return False
            return time.monotonic() - float(last[1]) > 1.0

        wait_for(stalled, timeout=30, what="the remote writer to block")
        written = int(progress.read_text()) * 64  # KiB the remote command got past write()
        print(f"slow reader: the remote writer blocked after {written} KiB")
        # The 1 MiB window, plus at most about one more of buffers on the way (the agent's
        # 64 KiB read buffer, two 64 KiB pipes, a partly written chunk); 250 MiB would be
        # produced if nothing pushed back.
        assert written <= 2 * 1024, f"{written} KiB written"
        # Ctrl-C is forwarded even though output is backed up; draining lets it through.
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def test_no_leaked_fds_or_zombies(stack: Stack) -> None:
    assert stack.up is not None
    pid = stack.up.pid
    stack.tether("run", "local", "--", "true")  # warm up lazily opened files
    before = len(os.listdir(f"/proc/{pid}/fd"))
    procs = [stack.popen("run", "local", "--", "sh", "-c", "echo x; sleep 0.2", stdout=-1, stderr=-1)
             for _ in range(8)]
    for p in procs:
        p.communicate(timeout=60)
    client = open_shell(stack)
    client.send(b"exit\r")
    assert client.drain_until_exit() == 0
    client.close()
    wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= before, timeout=15,
             what=f"fds back to {before}")
    zombies = [k for k in _children(pid) if Path(f"/proc/{k}/stat").read_text().split()[2] == "Z"]
    # The recorder's screen indexer is tether up's one long-lived child; no session leaves one.
    others = [k for k in _children(pid)
              if b"tether.recorder.index_process" not in Path(f"/proc/{k}/cmdline").read_bytes()]
    assert zombies == [] and others == []


@pytest.mark.parametrize("detach", [0, 4])
def test_session_ends_when_its_client_vanishes(fresh_stack: Stack, detach: int) -> None:
    """detach_timeout 0: it ends once the client has been silent for --client-timeout; 4:
    it is detached then, and ends 4 s later with nobody attached."""
    fresh_stack.stop_up()
    fresh_stack.start_up("--client-timeout", "3")
    with policy(fresh_stack, statement(detach_timeout=str(detach))):
        _vanish(fresh_stack, detach)


def _vanish(fresh_stack: Stack, detach: int) -> None:
    marker = "tether-vanish-" + secrets.token_hex(4)
    # The shell waits for its sleep, so the marker stays in a live command line. (`exec -a`
    # is not in POSIX sh: with dash the command failed at once, and the session "ended".)
    proc = fresh_stack.popen("run", "local", "--", "sh", "-c", f"sleep 600; : {marker}",
                             stdin=subprocess.PIPE, stdout=-1, stderr=-1)
    assert proc.stdin is not None

    def remote_alive() -> bool:
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and marker.encode() in (p / "cmdline").read_bytes():
                    return True
            except OSError:
                continue  # the process went away while we looked
        return False

    wait_for(remote_alive, what="remote command running")
    # A client that keeps talking (stdin) keeps its session past the timeout: the timeout
    # is about silence, not age. (The keepalive, every 30 s, is slower than this 3 s.)
    talking = time.monotonic()
    while time.monotonic() - talking < 3 + 3:
        proc.stdin.write(b"x")
        proc.stdin.flush()
        time.sleep(0.25)  # the pace of the typing, not a wait for anything
        assert remote_alive(), ("the agent ended a session whose client was talking",
                                proc.poll(), fresh_stack.log_tail())
    proc.kill()  # no CLOSE, no goodbye: the client is simply gone
    proc.wait()
    killed = time.monotonic()
    # It ends once the client has been silent for the timeout; the agent checks every
    # quarter of it.
    if detach:
        # Detached, not ended, after the silence: it runs on until the detach timeout.
        wait_for(lambda: "detached (client silent" in fresh_stack.log_tail(20000), timeout=10,
                 what="the agent to detach the session")
        assert remote_alive(), "a detached session ended before its detach_timeout"
    wait_for(lambda: not remote_alive(), timeout=3 + 3 / 4 + detach + 2.0,
             what="the agent to end the orphaned session")
    ended = time.monotonic() - killed
    print(f"client vanished (detach_timeout {detach}): the remote command ended {ended:.2f} s "
          "after the kill")
    assert ended >= 3 + detach - 0.5, ended


def test_local_terminal_is_restored_after_sigterm(stack: Stack) -> None:
    import termios

    client = open_shell(stack)
    try:
        lflag = client.local_lflag()
        assert not lflag & termios.ECHO, "the client should have put the terminal in raw mode"
        client.proc.send_signal(signal.SIGTERM)
        client.drain_until_exit()
        lflag = client.local_lflag()
        assert lflag & termios.ECHO and lflag & termios.ICANON, "terminal left in raw mode"
    finally:
        client.close()


def test_local_terminal_is_restored_after_an_error(stack: Stack) -> None:
    import termios

    client = PtyClient(stack, "shell", "nosuch")
    try:
        assert client.drain_until_exit() == 255
        lflag = client.local_lflag()
        assert lflag & termios.ECHO and lflag & termios.ICANON
        assert b"unknown agent" in client.buffer
    finally:
        client.close()
