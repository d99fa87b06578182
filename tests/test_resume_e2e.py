"""Issue 11 item 3, resume: a session survives a cut between the client and the broker,
between the agent and the broker, or a broker restart, of up to 60 s, with no byte lost or
duplicated either way; the user sees "reconnecting…" within 2 s of the cut and
"reconnected" after it.

The cuts are real: the client's (or the agent's) identity file points at a loopback relay
(tests/support/relay.py) that resets every connection at once and turns new ones away
until it is restored, or (a silent partition) moves nothing and closes nothing; the broker
restart is a SIGKILL of the broker process and a new one on the same port. Both brokers,
by the stack fixtures' parametrization. docs/testing.md rows 117 to 123 say what each test
asserts. The cuts are held for their length with a sleep (hold_cut): the length is the
scenario, not a wait for something; everything else waits on conditions."""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from stack import PtyClient, Stack, policy, statement, wait_for
from support.relay import Relay

from tether.edge.keys import Identity

RECONNECTING = "reconnecting\u2026"
RECONNECTED = "reconnected"
NOTICE_WITHIN = 2.0  # the bound from the cut to "reconnecting…"
BACK_WITHIN = 20.0  # restore to "reconnected": reconnect back-off (at most 5 s) and margin
MB = 1024 * 1024
BACKOFF_MAX = 5.0  # edge/mqtt.py's reconnect back-off cap, as protocol.md states it


# ----- harness -----


def relayed_identity(src: Path, dst: Path, port: int) -> Path:
    """A copy of an identity file whose broker is the relay's port."""
    ident = Identity.load(src)
    ident.broker["port"] = port
    ident.save(dst)
    return dst


class Stream:
    """A pipe read on its own thread: every chunk kept with the time it was read, or only
    hashed and counted (stdout of 50 MB)."""

    def __init__(self, pipe: Any, keep: bool = True) -> None:
        self.fd = pipe.fileno()
        self.keep = keep
        self.chunks: list[tuple[float, bytes]] = []
        self.sha = hashlib.sha256()
        self.count = 0
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while chunk := os.read(self.fd, MB):
            self.sha.update(chunk)
            self.count += len(chunk)
            if self.keep:
                self.chunks.append((time.monotonic(), chunk))

    def text(self) -> str:
        return b"".join(c for _, c in list(self.chunks)).decode(errors="replace")

    def when(self, needle: str, after: float = 0.0) -> float | None:
        """The time the first occurrence of `needle` completed that was read at `after`
        or later, or None."""
        return _when(list(self.chunks), needle.encode(), after)


def _when(chunks: list[tuple[float, bytes]], needle: bytes, after: float) -> float | None:
    data = b""
    ends: list[tuple[int, float]] = []
    for t, c in chunks:
        data += c
        ends.append((len(data), t))
    start = 0
    while (i := data.find(needle, start)) >= 0:
        end = i + len(needle)
        t = next(t for off, t in ends if off >= end)
        if t >= after:
            return t
        start = i + 1
    return None


class Feeder:
    """Writes to a process's stdin on its own thread, so a test can type while the pipe
    is full; `written` is what the pipe has taken so far."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.written = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def feed(self, data: bytes) -> None:
        self._queue.put(data)

    def finish(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        fd = self.pipe.fileno()
        try:
            while (data := self._queue.get()) is not None:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view[:65536])
                    self.written += n
                    view = view[n:]
        except OSError as exc:
            self.error = exc
        finally:
            self.pipe.close()


class Run:
    """`tether run` with its stdout hashed and stderr kept with the time of each chunk."""

    def __init__(self, stack: Stack, *args: str, env: dict[str, str], stdin: Any = subprocess.DEVNULL,
                 keep_stdout: bool = False) -> None:
        self.proc = stack.popen("run", *args, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.out = Stream(self.proc.stdout, keep=keep_stdout)
        self.err = Stream(self.proc.stderr)
        self.feeder = Feeder(self.proc.stdin) if stdin == subprocess.PIPE else None

    def wait_notice(self, text: str, after: float, timeout: float, stack: Stack) -> float:
        def seen() -> float | None:
            if self.proc.poll() is not None:
                self.out.thread.join(5)
                self.err.thread.join(5)
                t = self.err.when(text, after)
                if t is None:
                    raise AssertionError(f"tether run exited {self.proc.returncode} before {text!r}: "
                                         f"{self.err.text()!r}\n{stack.log_tail()}")
                return t
            return self.err.when(text, after)
        try:
            return float(wait_for(seen, timeout=timeout, what=f"{text!r} on stderr"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stderr so far: {self.err.text()!r}\n{stack.log_tail()}") from None

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tether run did not end in {timeout} s; got {self.out.count} bytes; "
                                 f"stderr: {self.err.text()!r}") from None
        self.out.thread.join(10)
        self.err.thread.join(10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TimedPty(PtyClient):
    """A PtyClient that remembers when each chunk of the terminal's output was read, so a
    notice's arrival can be timed."""

    def __init__(self, stack: Any, *args: str) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        super().__init__(stack, *args)

    def _read(self, timeout: float) -> bool:
        before = len(self.buffer)
        got = super()._read(timeout)
        if got:
            self.chunks.append((time.monotonic(), self.buffer[before:]))
        return got

    def wait_text(self, text: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (t := _when(self.chunks, text.encode(), after)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen in {timeout} s; last output: "
                                     f"{b''.join(c for _, c in self.chunks)[-800:]!r}")
            try:
                self._read(min(left, 0.5))
            except EOFError as exc:
                raise AssertionError(f"{text!r} not seen; the client exited: {exc}") from None
        return t


def start_shell(stack: Any) -> TimedPty:
    shell = TimedPty(stack, "shell", "local")
    shell.send(b"export PS1='[t''p]$ '\r")
    shell.expect(rb"\[tp\]\$ ", timeout=60)
    return shell


def type_lines(shell: TimedPty, log: Path, tag: str, n: int) -> list[str]:
    """Type n commands that each append one line to `log`; the lines they will write."""
    lines = [f"{tag}-{i}" for i in range(n)]
    for line in lines:
        shell.send(f"echo {line} >> {log}\r".encode())
    return lines


def check_ran_once(shell: TimedPty, log: Path, lines: list[str], marker: int) -> None:
    """Every typed line ran exactly once, in order, and the shell answers again: a command
    typed now prints its result (computed remotely, so the echo of the typing can't match)."""
    shell.send(f"echo ok-$(({marker}+1))\r".encode())
    shell.expect(rf"ok-{marker + 1}".encode(), timeout=60)
    shell.expect(rb"\[tp\]\$ ", timeout=30)
    assert log.read_text().splitlines() == lines


def hold_cut(since: float, seconds: float) -> None:
    """Keep the link down for the scenario's duration (the cut's length is what is being
    tested, not a wait for something to happen)."""
    left = since + seconds - time.monotonic()
    if left > 0:
        time.sleep(left)


@pytest.fixture
def relay(stack: Stack) -> Iterator[Relay]:
    with Relay(stack.port) as r:
        yield r


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "blob"
    data = os.urandom(50 * MB)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def client_env(stack: Stack, relay: Relay, tmp_path: Path, name: str = "user-relayed.json") -> dict[str, str]:
    ident = relayed_identity(stack.home.user_identity, tmp_path / name, relay.port)
    return dict(stack.env, TETHER_IDENTITY=str(ident))


def output_across_cut(run: Run, relay: Relay, stack: Stack, seconds: float,
                      at: int = 10 * MB) -> dict[str, float]:
    """Cut once `at` bytes have arrived, for `seconds`; the notices' timings."""
    wait_for(lambda: run.out.count >= at or run.proc.poll() is not None, timeout=120,
             what=f"{at} bytes of output")
    assert run.proc.poll() is None, run.err.text()
    got_at_cut = run.out.count
    cut = time.monotonic()
    relay.cut()
    seen = run.wait_notice(RECONNECTING, cut, NOTICE_WITHIN + 8, stack)
    hold_cut(cut, seconds)
    restored = time.monotonic()
    relay.restore()
    back = run.wait_notice(RECONNECTED, restored, BACK_WITHIN, stack)
    return {"to_notice": seen - cut, "to_back": back - restored, "at_cut": got_at_cut, "cut": cut}


# ----- a: the client's link cut during 50 MB of output -----


def test_output_survives_a_client_side_cut(stack: Stack, relay: Relay, blob: tuple[Path, str],
                                           tmp_path: Path) -> None:
    path, digest = blob
    env = client_env(stack, relay, tmp_path)
    start = time.monotonic()
    run = Run(stack, "-n", "local", "--", "cat", str(path), env=env)
    try:
        t = output_across_cut(run, relay, stack, seconds=5)
        rc = run.finish(timeout=180)
        took = time.monotonic() - start
    finally:
        run.kill()
    print(f"[{stack.kind}] client cut: reconnecting… {t['to_notice']:.2f} s after the cut, "
          f"reconnected {t['to_back']:.2f} s after the restore; 50 MiB in {took:.1f} s "
          f"({50 / (took - 5):.1f} MiB/s outside the cut); relay {relay!r}")
    assert rc == 0, run.err.text()
    assert run.out.count == 50 * MB
    assert run.out.sha.hexdigest() == digest
    assert t["to_notice"] <= NOTICE_WITHIN, t
    assert t["at_cut"] < 50 * MB  # the cut came while output was flowing
    # The client really lost its link: it was turned away during the cut, then came back.
    assert relay.refused >= 1 and relay.accepted >= 2, relay


# ----- the reconnect back-off while the link is cut -----


def test_reconnect_attempts_back_off_from_0_1_to_5_s(stack: Stack, relay: Relay, tmp_path: Path) -> None:
    """protocol.md §10 "Resume" (and architecture.md §4): both ends reconnect with backoff,
    0.1 s doubling to 5 s. Each attempt during the cut reaches the relay, which resets it;
    no gap between attempts, from the cut to the one after the restore that gets through,
    may be longer than 5 s and a margin."""
    env = client_env(stack, relay, tmp_path)
    run = Run(stack, "-n", "local", "--", "sh", "-c", "echo ready; exec sleep 600", env=env,
              keep_stdout=True)
    try:
        wait_for(lambda: run.out.text() == "ready\n" or run.proc.poll() is not None, timeout=60,
                 what="the command running")
        cut = time.monotonic()
        relay.cut()
        hold_cut(cut, 12)  # long enough for the back-off to reach its cap
        restored = time.monotonic()
        relay.restore()
        back = run.wait_notice(RECONNECTED, restored, BACK_WITHIN, stack)
    finally:
        run.kill()
    tries = [cut, *relay.attempts[1:]]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(tries)]
    print(f"[{stack.kind}] reconnect attempts: gaps {gaps} s; reconnected {back - restored:.2f} s "
          f"after the restore")
    assert len(gaps) >= 7, gaps  # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5: seven tries by 11.3 s
    # Each gap is the schedule's, 0.1 s doubling to 5 s: never shorter (a busy retry loop),
    # and longer only by what a loaded machine may add.
    schedule = [min(0.1 * 2 ** i, BACKOFF_MAX) for i in range(len(gaps))]
    assert all(s * 0.9 <= g <= s + 1.0 for g, s in zip(gaps, schedule, strict=True)), (gaps, schedule)


# ----- b: input typed during a client-side cut arrives exactly once -----


def test_input_survives_a_client_side_cut(stack: Stack, relay: Relay, tmp_path: Path) -> None:
    env = client_env(stack, relay, tmp_path)
    out = tmp_path / "received"
    parts = [os.urandom(1 * MB), os.urandom(2 * MB), os.urandom(1 * MB)]
    run = Run(stack, "local", "--", "sh", "-c", 'cat > "$1"; echo stored', "sh", str(out),
              env=env, stdin=subprocess.PIPE, keep_stdout=True)
    assert run.feeder is not None
    try:
        run.feeder.feed(parts[0])
        wait_for(lambda: out.exists() and out.stat().st_size == len(parts[0]), timeout=60,
                 what="the first MiB stored remotely")
        cut = time.monotonic()
        relay.cut()
        run.feeder.feed(parts[1])  # typed while the link is down
        seen = run.wait_notice(RECONNECTING, cut, NOTICE_WITHIN + 8, stack)
        hold_cut(cut, 5)
        taken_in_cut = run.feeder.written - len(parts[0])
        stored_in_cut = out.stat().st_size
        restored = time.monotonic()
        up_at_restore = relay.bytes_up
        relay.restore()
        back = run.wait_notice(RECONNECTED, restored, BACK_WITHIN, stack)
        run.feeder.feed(parts[2])
        run.feeder.finish()
        rc = run.finish(timeout=120)
        up_after = relay.bytes_up - up_at_restore
    finally:
        run.kill()
    print(f"[{stack.kind}] client cut, input: reconnecting… {seen - cut:.2f} s, reconnected "
          f"{back - restored:.2f} s; the client took {taken_in_cut} bytes of stdin during the cut and "
          f"sent {up_after} bytes after it")
    assert rc == 0, run.err.text()
    assert run.out.text() == "stored\n"
    assert stored_in_cut == len(parts[0])  # nothing got through the cut itself
    received = out.read_bytes()
    sent = b"".join(parts)
    if received != sent:
        first = next((i for i, (a, b) in enumerate(zip(received, sent, strict=False)) if a != b),
                     min(len(received), len(sent)))
        raise AssertionError(f"stdin differs: {len(received)} bytes stored for {len(sent)} sent, "
                             f"first difference at {first}")
    assert seen - cut <= NOTICE_WITHIN
    # What was not acknowledged at the cut is sent again once, not once per retransmission
    # timeout of the cut (queued while offline, all flushed at the reconnect).
    assert up_after <= len(parts[1]) + len(parts[2]) + MB // 2, up_after


# ----- c: the agent's link cut: output, input and a required recording survive -----


class Sessions:
    """Four sessions at once, each checking one thing across a cut: 50 MiB of output
    (sha256), 4 MiB of stdin written before, during and after the cut (stored exactly),
    a shell with lines typed during the cut (each runs exactly once), and a command that
    prints its tail and exits 7 while the cut lasts (tail and code arrive afterwards)."""

    def __init__(self, stack: Stack, env: dict[str, str], tmp_path: Path, blob: Path) -> None:
        self.stack = stack
        self.typed = tmp_path / "typed"
        self.stored = tmp_path / "received"
        self.go, self.done = tmp_path / "go", tmp_path / "done"
        self.parts = [os.urandom(MB), os.urandom(2 * MB), os.urandom(MB)]
        self.lines: list[str] = []
        self.shell = start_shell(SimpleNamespace(env=env, root=stack.root))
        self.output = Run(stack, "-n", "local", "--", "cat", str(blob), env=env)
        self.input = Run(stack, "local", "--", "sh", "-c", 'cat > "$1"; echo stored', "sh",
                         str(self.stored), env=env, stdin=subprocess.PIPE, keep_stdout=True)
        script = (f'echo started; while [ ! -e "{self.go}" ]; do sleep 0.05; done; '
                  'i=0; while [ $i -lt 2000 ]; do echo "tail line $i"; i=$((i+1)); done; '
                  f'touch "{self.done}"; exit 7')
        self.ending = Run(stack, "-n", "local", "--", "sh", "-c", script, env=env, keep_stdout=True)
        self.runs = [self.output, self.input, self.ending]
        self.tail = "started\n" + "".join(f"tail line {i}\n" for i in range(2000))

    def before_cut(self) -> None:
        assert self.input.feeder is not None
        self.input.feeder.feed(self.parts[0])
        wait_for(lambda: self.stored.exists() and self.stored.stat().st_size == len(self.parts[0]),
                 timeout=60, what="the first MiB of stdin stored remotely")
        wait_for(lambda: b"started" in b"".join(c for _, c in self.ending.out.chunks), timeout=60,
                 what="the ending command running")
        wait_for(lambda: self.output.out.count >= 10 * MB or self.output.proc.poll() is not None,
                 timeout=120, what="10 MiB of output")
        for run in self.runs:
            assert run.proc.poll() is None, run.err.text()

    def during_cut(self, cut: float) -> list[float]:
        """Type and feed; the times "reconnecting…" was shown by each client."""
        assert self.input.feeder is not None
        self.input.feeder.feed(self.parts[1])
        seen = [r.wait_notice(RECONNECTING, cut, NOTICE_WITHIN + 8, self.stack) for r in self.runs]
        seen.append(self.shell.wait_text(RECONNECTING, cut, NOTICE_WITHIN + 8))
        self.lines = type_lines(self.shell, self.typed, "cut", 3)
        self.go.touch()  # the command prints its tail and exits while the link is down
        wait_for(self.done.exists, timeout=30, what="the ending command at its end")
        return seen

    def after_restore(self, restored: float) -> list[float]:
        assert self.input.feeder is not None
        back = [r.wait_notice(RECONNECTED, restored, BACK_WITHIN, self.stack) for r in self.runs]
        back.append(self.shell.wait_text(RECONNECTED, restored, BACK_WITHIN))
        self.input.feeder.feed(self.parts[2])
        self.input.feeder.finish()
        check_ran_once(self.shell, self.typed, self.lines, 61)
        return back

    def check(self, digest: str) -> None:
        rcs = [self.output.finish(timeout=240), self.input.finish(timeout=120),
               self.ending.finish(timeout=60)]
        self.shell.send(b"exit\r")
        rcs.append(self.shell.drain_until_exit(timeout=30))
        errs = [r.err.text() for r in self.runs]
        assert rcs == [0, 0, 7, 0], (rcs, errs, self.stack.log_tail())
        assert self.output.out.count == 50 * MB and self.output.out.sha.hexdigest() == digest
        assert self.stored.read_bytes() == b"".join(self.parts)
        assert self.input.out.text() == "stored\n"
        assert self.ending.out.text() == self.tail

    def close(self) -> None:
        self.shell.close()
        for run in self.runs:
            run.kill()


# ----- c: the agent's link cut: output, input, typing, a command's end, required recording -----

AGENT_CUT = 35.0  # past the 10 s after which recorder silence freezes a required recording, and the 30 s that end it


@pytest.fixture
def relayed_agent(fresh_stack: Stack, tmp_path: Path) -> Iterator[tuple[Stack, Relay]]:
    """`tether up` without its agent; agent `local` as its own process, through a relay."""
    stack = fresh_stack
    stack.stop_up()
    stack.start_role("up", "--broker", f"127.0.0.1:{stack.port}", "--ws-listen",
                     f"127.0.0.1:{stack.ws_port}", "--no-console", "--no-agent", ready=b"tether is up")
    with Relay(stack.port) as relay:
        ident = relayed_identity(stack.home.agent_identity("local"), tmp_path / "agent-relayed.json",
                                 relay.port)
        agent = stack.start_role("agent", "--identity", str(ident), ready=b"connected to")
        wait_for(lambda: stack.agent_status("local") == "online", timeout=60, what="agent local online")
        try:
            yield stack, relay
        finally:
            agent.terminate()
            agent.wait(30)


def recorded_since(stack: Stack, wall: float) -> list[dict[str, Any]]:
    db = sqlite3.connect(stack.home.recordings / "index.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM sessions WHERE started >= ?", (wall,))]
    finally:
        db.close()


@pytest.mark.timeout(300)
def test_sessions_and_a_required_recording_survive_an_agent_side_cut(
        relayed_agent: tuple[Stack, Relay], blob: tuple[Path, str], tmp_path: Path) -> None:
    stack, relay = relayed_agent
    path, digest = blob
    wall = time.time()
    with policy(stack, statement(recording='"required"')):
        sessions = Sessions(stack, stack.env, tmp_path, path)
        try:
            sessions.before_cut()
            cut = time.monotonic()
            relay.cut()
            seen = sessions.during_cut(cut)
            hold_cut(cut, AGENT_CUT)
            assert not sessions.typed.exists()  # nothing typed ran while the agent was cut off
            restored = time.monotonic()
            relay.restore()
            back = sessions.after_restore(restored)
            sessions.check(digest)
        finally:
            sessions.close()
    print(f"[{stack.kind}] {AGENT_CUT:.0f} s agent cut: reconnecting… {[round(s - cut, 2) for s in seen]} s "
          f"after the cut, reconnected {[round(b - restored, 2) for b in back]} s after the restore; "
          f"a client's stderr: {sessions.output.err.text()!r}")
    assert max(s - cut for s in seen) <= NOTICE_WITHIN, seen
    assert relay.refused >= 1 and relay.accepted >= 2, relay
    # The recorder's silence while the agent was cut off froze nothing and ended nothing.
    for run in sessions.runs:
        assert "recording stalled" not in run.err.text() and "recording is required" not in run.err.text()
    # All four sessions were recorded (required) and closed in order.
    rows = wait_for(lambda: (r := recorded_since(stack, wall)) and len(r) == 4
                    and all(x["status"] == "closed" for x in r) and r, timeout=60,
                    what="four recorded sessions closed")
    assert {r["recording"] for r in rows} == {"required"}
    # The recorder has every byte of the output and of the input, once, and the exit code.
    execs = sorted((r["bytes_out"], r["bytes_in"], r["exit_code"]) for r in rows if r["mode"] == "exec")
    assert execs == sorted([(len("stored\n"), 4 * MB, 0), (len(sessions.tail), 0, 7), (50 * MB, 0, 0)])


# ----- d: the broker killed and restarted under open sessions -----


@pytest.mark.timeout(300)
def test_sessions_survive_a_broker_restart(fresh_stack: Stack, blob: tuple[Path, str],
                                           tmp_path: Path) -> None:
    """SIGKILL of the broker process (no clean shutdown, no will), 5 s down, a new broker
    on the same port with the same files; every link (clients, agent, authority,
    recorder) reconnects to it."""
    stack = fresh_stack
    path, digest = blob
    sessions = Sessions(stack, stack.env, tmp_path, path)
    try:
        sessions.before_cut()
        killed = time.monotonic()
        stack.broker.kill()
        seen = sessions.during_cut(killed)
        hold_cut(killed, 5)
        assert not sessions.typed.exists()  # nothing typed ran while the broker was down
        restarted = time.monotonic()
        stack.broker.start()
        back = sessions.after_restore(restarted)
        sessions.check(digest)
    finally:
        sessions.close()
    print(f"[{stack.kind}] broker restart: reconnecting… {[round(s - killed, 2) for s in seen]} s after "
          f"the kill, reconnected {[round(b - restarted, 2) for b in back]} s after the restart")
    assert max(s - killed for s in seen) <= NOTICE_WITHIN, seen


# ----- e: a 60 s cut of the clients' links: output, input, typing, a command's end -----


@pytest.mark.timeout(300)
def test_a_60_s_client_side_cut(stack: Stack, relay: Relay, blob: tuple[Path, str],
                                tmp_path: Path) -> None:
    path, digest = blob
    sessions = Sessions(stack, client_env(stack, relay, tmp_path), tmp_path, path)
    try:
        sessions.before_cut()
        assert relay.active == 4  # every client's link goes through the relay
        cut = time.monotonic()
        relay.cut()
        seen = sessions.during_cut(cut)
        hold_cut(cut, 60)
        assert not sessions.typed.exists()  # nothing typed ran during the cut
        restored = time.monotonic()
        up_at_restore = relay.bytes_up
        relay.restore()
        back = sessions.after_restore(restored)
        sessions.check(digest)
        up_after = relay.bytes_up - up_at_restore
    finally:
        sessions.close()
    print(f"[{stack.kind}] 60 s client cut: reconnecting… {[round(s - cut, 2) for s in seen]} s, "
          f"reconnected {[round(b - restored, 2) for b in back]} s after the restore; "
          f"{up_after} bytes sent by the clients after it; {relay!r}")
    assert max(s - cut for s in seen) <= NOTICE_WITHIN, seen
    # The input session's unacknowledged window goes again once, with the rest of its input
    # and the others' acks and keystrokes; not 15 retransmission rounds queued in the cut.
    assert up_after <= len(sessions.parts[1]) + len(sessions.parts[2]) + MB // 2, up_after


# ----- a silent partition of the client's link (no reset: only keepalives notice it) -----

# protocol.md §10 "Resume": CLI clients keep alive every 5 s, and paho gives up one keepalive
# after its unanswered PINGREQ, "so about 10 s"; plus the 1 s period of the edge's keepalive
# check, and the usual margin.
KEEPALIVE_NOTICE = 2 * 5.0 + 1.0 + NOTICE_WITHIN


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hold", [0, 25], ids=["short", "25s"])
def test_a_silent_client_side_partition(stack: Stack, relay: Relay, tmp_path: Path,
                                        hold: float) -> None:
    """`hold`: how long the partition lasts after it began; 0, until the client noticed.
    25 s outlasts two reconnect attempts that each wait 10 s for a CONNACK that never
    comes: the second one closes the first's socket (a paho on_socket_close late in
    the event queue, that once unhooked the next connection's socket)."""
    env = client_env(stack, relay, tmp_path)
    stop = tmp_path / "stop"
    script = (f'i=0; while [ ! -e "{stop}" ]; do echo "n $i"; i=$((i+1)); sleep 0.1; done; '
              'echo "last $i"; exit 3')
    run = Run(stack, "-n", "local", "--", "sh", "-c", script, env=env, keep_stdout=True)
    try:
        wait_for(lambda: b"n 5\n" in b"".join(c for _, c in run.out.chunks), timeout=60,
                 what="the command printing")
        cut = time.monotonic()
        relay.cut(silent=True)
        seen = run.wait_notice(RECONNECTING, cut, 90, stack)
        hold_cut(cut, hold)
        restored = time.monotonic()
        relay.restore()
        back = run.wait_notice(RECONNECTED, restored, BACK_WITHIN, stack)
        stop.touch()
        rc = run.finish(timeout=60)
    finally:
        run.kill()
    print(f"[{stack.kind}] silent partition: reconnecting… {seen - cut:.1f} s after it began, "
          f"reconnected {back - restored:.2f} s after the restore; {relay!r}")
    lines = run.out.text().splitlines()
    n = len(lines) - 1
    assert lines == [f"n {i}" for i in range(n)] + [f"last {n}"]  # none lost, none twice
    assert rc == 3, run.err.text()
    assert seen - cut <= KEEPALIVE_NOTICE, seen - cut
