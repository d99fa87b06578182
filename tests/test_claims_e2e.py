"""Claims of docs/testing.md's table that need real processes, on both brokers: the
authority's nonce journal is durable before its reply leaves (row 20), and tether's roles
open no listening socket (row 50)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from stack import TETHER, PtyClient, Spy, Stack, running_stack, wait_for
from support.requester import Requester

from tether import authz
from tether.encoding import b64d
from tether.limits import AUTHORITY_REQUEST_BURST, AUTHORITY_REQUEST_RATE
from tether.topics import Topics

SLOW_FSYNC = Path(__file__).parent / "support" / "slow_fsync.py"
FSYNC_DELAY = 0.2  # seconds each fsync takes on the slowed disk


def fsyncs(path: Path) -> list[tuple[float, int, str]]:
    """(CLOCK_MONOTONIC when it returned, file size when called, path) of each fsync."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        done, size, name = line.split(" ", 2)
        out.append((float(done), int(size), name))
    return out


def start_role(stack: Stack, *args: str, ready: bytes | None = None,
               env: dict[str, str] | None = None, slow_disk: bool = False) -> subprocess.Popen[bytes]:
    """A tether role as a process of its own (killed with the stack), its output drained;
    with `ready`, once that text has been printed."""
    cmd = [sys.executable, str(SLOW_FSYNC), *args] if slow_disk else [TETHER, *args]
    proc = subprocess.Popen(cmd, env=env or stack.env, cwd=stack.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stack.procs.append(proc)
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    while ready is not None and ready not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"{args} did not start: {seen.decode(errors='replace')}")
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            seen += os.read(proc.stdout.fileno(), 4096)
    stack._drain_log(proc, seen)
    return proc


class TimedRequester(Requester):
    """Notes when (CLOCK_MONOTONIC) each reply reached it."""

    def __init__(self, port: int, identity: Path) -> None:
        super().__init__(port, identity)
        self.timed: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self.client.on_message = lambda _c, _u, msg: self.timed.put((time.monotonic(), bytes(msg.payload)))

    def timed_answer(self, pending: authz.PendingRequest, timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, payload = self.timed.get(timeout=left)
            except queue.Empty:
                return None
            doc = authz.open_reply(pending, b64d(self.identity.authority["ed25519"]), payload)
            if doc is not None:
                return at, doc
        return None


EXEC_TRUE = {"type": "grant", "agent": "local", "mode": "exec", "run_as": None, "reason": None,
             "command": ["true"]}
ACCESS = {"type": "access", "agents": ["local"], "mode": "shell"}


# ----- row 20: the nonce journal is fsync'd before the reply -----


def test_the_nonce_journal_is_synced_before_the_reply_leaves(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()  # `tether up` holds the authority; run it alone, on a slow disk
    fsync_log = stack.root / "fsyncs.txt"
    env = dict(stack.env, TETHER_TEST_FSYNC_LOG=str(fsync_log), TETHER_TEST_FSYNC_DELAY=str(FSYNC_DELAY))
    start_role(stack, "authority", env=env, slow_disk=True)
    journal = stack.home.root / "authority" / "nonces.jsonl"
    asker = TimedRequester(stack.port, stack.bob_identity)
    try:
        # The authority is up once it answers (requests sent before it subscribed wait in
        # its persistent session, or are lost with a clean one: ask again).
        def first_answer() -> Any:
            pending = asker.request(dict(EXEC_TRUE))
            asker.send(pending.payload)
            return asker.timed_answer(pending, 3)

        wait_for(first_answer, timeout=60, what="the authority's first answer")
        answers: list[tuple[str, float, float]] = []  # nonce, sent, reply arrived
        # Access questions write nothing else before answering (grants are audited, and the
        # audit trail's own fsync could hide a late one of the journal); grants too.
        for body in [ACCESS, EXEC_TRUE] * 3:
            pending = asker.request(dict(body))
            sent = time.monotonic()
            asker.send(pending.payload)
            got = asker.timed_answer(pending, 30)
            assert got is not None, stack.log_tail()
            at, doc = got
            assert "ok" in doc, doc
            answers.append((pending.nonce, sent, at))
    finally:
        asker.close()
    text = journal.read_bytes()
    syncs = [(done, size) for done, size, name in fsyncs(fsync_log) if name == str(journal)]
    late, margins = [], []
    for nonce, _sent, at in answers:
        line = re.search(rb'\["' + nonce.encode() + rb'",[^\]]*\]\n', text)
        assert line is not None, f"nonce {nonce} not in the journal"
        if not any(done <= at and size >= line.end() for done, size in syncs):
            late.append((nonce, at, line.end()))
        else:
            margins.append(at - min(done for done, size in syncs if size >= line.end()))
    assert not late, (late, syncs)
    assert all(at - sent >= FSYNC_DELAY for _, sent, at in answers)  # each waited for the disk
    print(f"{len(answers)} replies, each after its nonce's fsync (by {min(margins) * 1000:.1f}.."
          f"{max(margins) * 1000:.1f} ms); {len(syncs)} journal fsyncs")


# ----- row 50: outbound only -----

TCP_LISTEN, TCP_ESTABLISHED = "0A", "01"
UNIX_ACCEPTCON = 0x10000


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            out.add(int(m.group(1)))
    return out


def _children(pid: int) -> list[int]:
    """pid and all its descendants (the recorder's indexer, the agent's session shell)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in os.listdir(f"/proc/{p}/task"):
            with contextlib.suppress(OSError):  # the task ended meanwhile
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return out


def _sockets(pid: int) -> dict[str, list[tuple[str, str, str]]]:
    """The process's sockets by table: (local, remote, state) for TCP and UDP, (path, flags,
    state) for UNIX. Read from the process's own network namespace."""
    inodes = _socket_inodes(pid)
    found: dict[str, list[tuple[str, str, str]]] = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if int(f[9]) in inodes:
                found.setdefault(table, []).append((f[1], f[2], f[3]))
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[6]) in inodes:
            found.setdefault("unix", []).append((f[7] if len(f) > 7 else "", f[3], f[5]))
    return found


def _listening(found: dict[str, list[tuple[str, str, str]]]) -> list[Any]:
    bad: list[Any] = []
    for table in ("tcp", "tcp6"):
        bad += [(table, s) for s in found.get(table, []) if s[2] == TCP_LISTEN]
    bad += [(t, s) for t in ("udp", "udp6") for s in found.get(t, [])]  # a bound UDP socket receives
    bad += [("unix", s) for s in found.get("unix", []) if int(s[1], 16) & UNIX_ACCEPTCON]
    return bad


def test_the_roles_open_no_listening_socket(fresh_stack: Stack) -> None:
    stack = fresh_stack
    stack.stop_up()  # `tether up` embeds a broker and the console: run each role alone instead
    broker_port = f"{stack.port:04X}"
    roles = {
        "authority": start_role(stack, "authority"),
        "recorder": start_role(stack, "recorder", ready=b"recorder is up"),
        "agent": start_role(stack, "agent", "--identity", str(stack.home.agent_identity("local")),
                            ready=b"connected to"),
    }
    wait_for(lambda: stack.agent_status("local") == "online", timeout=60, what="agent local online")
    # A command in progress and a shell at its prompt.
    run = stack.popen("run", "local", "--", "sh", "-c", "echo running; exec cat",
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shell = PtyClient(stack, "shell", "local")
    try:
        assert run.stdout is not None
        r, _, _ = select.select([run.stdout], [], [], 60)
        assert r and run.stdout.readline() == b"running\n", stack.log_tail()
        shell.send(b"export PS1='[t''p]$ '\r")
        shell.expect(rb"\[tp\]\$ ", timeout=60)
        roles["tether run"] = run
        roles["tether shell"] = shell.proc
        for role, proc in roles.items():
            assert proc.poll() is None, (role, stack.log_tail())
            pids = _children(proc.pid)
            found = {pid: _sockets(pid) for pid in pids}
            bad = {pid: _listening(f) for pid, f in found.items() if _listening(f)}
            assert not bad, (role, bad)
            # The check sees the role's sockets: its own connection to the broker is there.
            conns = [s for s in found[proc.pid].get("tcp", []) + found[proc.pid].get("tcp6", [])
                     if s[2] == TCP_ESTABLISHED and s[1].endswith(f":{broker_port}")]
            assert conns, (role, found[proc.pid])
            print(f"{role}: {len(pids)} processes, {sum(len(v) for f in found.values() for v in f.values())} "
                  f"sockets, none listening")
    finally:
        shell.close()
        if run.poll() is None:
            run.kill()
            run.wait()
        for proc in roles.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


# ----- row 99: the embedded broker's flood guard on requests to the authority -----

FLOOD = 3000


def test_the_embedded_broker_drops_requests_over_twice_the_authoritys_rate(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mosquitto has no such guard (the claim is the embedded broker's): there the authority's
    own limit (row 98) is all there is."""
    with running_stack("amqtt", tmp_path_factory.mktemp("flood-amqtt")) as stack:
        spy = Spy(stack)
        bob = Requester(stack.port, stack.bob_identity)
        alice = Requester(stack.port, stack.home.user_identity)
        try:
            flood_topic = Topics().authz_request(f"{bob.identity.name}.6")
            # Each request is a fresh valid one (the broker cannot tell them apart anyway).
            payloads = [bob.request(dict(ACCESS)).payload for _ in range(50)]
            took: list[float] = []
            flood = threading.Thread(target=lambda: took.append(bob.flood(payloads, FLOOD, stack.port)))
            flood.start()
            # Another principal asks meanwhile: every one of its requests gets through.
            mine = [alice.request(dict(ACCESS)).payload for _ in range(20)]
            for payload in mine:
                alice.send(payload)
            flood.join(120)
            assert not flood.is_alive() and took
            wait_for(lambda: set(mine) <= {p for _, p in spy.snapshot()}, timeout=30,
                     what="alice's 20 requests at the subscriber")
            # A marker from bob's other connection, published once the flood's connection has
            # closed, reaches the spy after everything of the flood that got through.
            marker = bob.request(dict(ACCESS)).payload
            bob.send(marker)
            wait_for(lambda: any(p == marker for _, p in spy.snapshot()), timeout=30,
                     what="the marker after the flood")
            passed = sum(1 for t, _ in spy.snapshot() if t == flood_topic)
        finally:
            alice.close()
            bob.close()
            spy.close()
        rate, burst = 2 * AUTHORITY_REQUEST_RATE, 2 * AUTHORITY_REQUEST_BURST
        print(f"flood of {FLOOD} in {took[0]:.2f} s: {passed} reached a subscriber "
              f"(bound {burst} + {rate:g}/s x t = {burst + rate * took[0]:.0f})")
        assert burst <= passed <= burst + rate * took[0] + 1, (passed, took)
