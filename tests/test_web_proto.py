"""The web console's JS protocol port (client/web/src/proto) against the Python reference.

1. `node --test client/web/test/` checks byte-for-byte vectors that Python makes here
   (tests/support/web_vectors.py): encodings, KDF, frames across epochs, the handshake,
   signed documents, grants and the login derivation.
2. A live session: the JS client (client/web/test/interop_driver.mjs, on a pipe) against
   Python playing authority (tether.authz, as authority/service.py uses it) and agent
   (AgentHandshake, Channel): grant request and reply, handshake, frames both ways, loss
   and retransmission, the credit window held by the consumer, exit and close.

Node and the npm packages are required: this fails, never skips, without them.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tests.support.web_vectors import vectors
from tether import authz, grants
from tether.channel import Channel
from tether.encoding import b64d, b64e
from tether.frames import Direction, FrameCipher, FrameType
from tether.handshake import AgentHandshake, PendingSession
from tether.presence import status_document
from tether.topics import Topics

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "client" / "web"
TOPICS = Topics()
USER, SLOT, AGENT = "alice", "alice.c", "web1"
CLIENT = SigningKey(bytes([7]) * 32)
AUTHORITY = SigningKey(bytes([8]) * 32)
AUTHORITY_X = PrivateKey(bytes([9]) * 32)
AGENT_KEY = SigningKey(bytes([10]) * 32)
AGENT_X = PrivateKey(bytes([11]) * 32)
TIMEOUT = 20.0


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is required for the web console tests: install Debian's `nodejs` and `npm`, "
                    "then run `npm ci` in client/web")
    if not (WEB / "node_modules" / "libsodium-wrappers-sumo").is_dir():
        pytest.fail("client/web/node_modules is missing: run `npm ci` in client/web")
    return path


def test_node_vectors(tmp_path: Path) -> None:
    vec = tmp_path / "vectors.json"
    vec.write_text(json.dumps(vectors()))
    env = dict(os.environ, TETHER_WEB_VECTORS=str(vec))
    tests = sorted(str(p.relative_to(WEB)) for p in (WEB / "test").glob("*.test.mjs"))
    assert tests
    proc = subprocess.run([node(), "--test", *tests], cwd=WEB, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout


class Driver:
    """The JS console session on a pipe; `expect` reads lines until one matches."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([node(), "test/interop_driver.mjs"], cwd=WEB, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buf = b""
        self.seen: list[dict[str, Any]] = []

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def deliver(self, topic: str, payload: bytes) -> None:
        self.send(op="msg", topic=topic, b64=b64e(payload))

    def read(self, timeout: float) -> dict[str, Any] | None:
        """One line from the driver; the pipe is read unbuffered, so select() stays true."""
        while b"\n" not in self.buf:
            if not self.sel.select(timeout):
                return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                assert self.proc.stderr is not None
                raise AssertionError(f"the node driver exited: {self.proc.stderr.read()[-3000:]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        assert "error" not in msg, msg["error"]
        self.seen.append(msg)
        return msg

    def messages(self, timeout: float = TIMEOUT, idle: float | None = None) -> Iterator[dict[str, Any]]:
        """Messages from the driver; with `idle`, also {} after that long without one (a
        timer tick for the Python agent, whose channel retransmits on its RTO)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.read(min(left, idle) if idle else left)
            if msg is not None:
                yield msg
            elif idle:
                yield {}
        raise AssertionError(f"timed out; last messages: {self.seen[-5:]}")

    def expect_pub(self, topic: str) -> bytes:
        for msg in self.messages():
            if msg.get("pub") == topic:
                return b64d(msg["b64"])
        raise AssertionError("unreachable")

    def expect_event(self, kind: str) -> dict[str, Any]:
        for msg in self.messages():
            if msg.get("event", {}).get("type") == kind:
                return dict(msg["event"])
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send(op="exit")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def driver() -> Iterator[Driver]:
    d = Driver()
    try:
        yield d
    finally:
        d.close()


def start(d: Driver, request: dict[str, Any] | None = None, consume: str = "auto") -> None:
    d.send(op="start", user=USER, slot=SLOT, seed=(bytes([7]) * 32).hex(), agent=AGENT, consume=consume,
           authority={"ed25519": b64e(bytes(AUTHORITY.verify_key)), "x25519": b64e(bytes(AUTHORITY_X.public_key))},
           request=request or {"run_as": None, "reason": None, "term": "xterm-256color", "cols": 100, "rows": 30,
                               "env": {"LANG": "C.UTF-8"}})


def authority_answers(d: Driver, answer: dict[str, Any] | None = None) -> dict[str, Any]:
    """What authority/service.py does with a request: open, check sender and signature, reply."""
    payload = d.expect_pub(TOPICS.authz_request(SLOT))
    claimed, blob = authz.open_request_envelope(bytes(AUTHORITY_X), payload)
    assert claimed == USER
    request = authz.verify_request(bytes(CLIENT.verify_key), blob, time.time())
    if answer is None:
        grant = grants.Grant(user=USER, agent=AGENT, agent_key=b64e(bytes(AGENT_KEY.verify_key)),
                             client_key=b64e(bytes(CLIENT.verify_key)), mqtt_name=SLOT, mode="shell",
                             run_as="alice", command=None, max_duration=3600, idle_timeout=0, recording="off",
                             recorder=None, reason=request.get("reason"), jti="cd" * 16, expires=time.time() + 300)
        answer = {"ok": True, "grant": grants.issue(bytes([8]) * 32, grant, time.time()),
                  "agent": {"name": AGENT, "ed25519": b64e(bytes(AGENT_KEY.verify_key)),
                            "x25519": b64e(bytes(AGENT_X.public_key))}}
    d.deliver(TOPICS.authz_reply(SLOT), authz.build_reply(AUTHORITY, request, answer, os.urandom))
    return request


class Agent:
    """The agent's end with the reference code: handshake, then a Channel (a2c out)."""

    def __init__(self, d: Driver, extra: dict[str, Any]) -> None:
        self.d = d
        hello = AgentHandshake(AGENT_KEY, bytes(AGENT_X), rand=os.urandom).open_hello(d.expect_pub(TOPICS.handshake(AGENT, SLOT)),
                                                                     time.time())
        self.hello = hello
        self.sid = hello.sid.hex()
        self.c2a = TOPICS.session(AGENT, SLOT, self.sid, "c2a")
        self.a2c = TOPICS.session(AGENT, SLOT, self.sid, "a2c")
        self.pending = PendingSession(hello, AGENT_KEY, extra, os.urandom)
        d.deliver(self.a2c, self.pending.accept)
        keys = self.pending.on_confirm(d.expect_pub(self.c2a))
        self.channel = Channel(FrameCipher(keys.a2c, Direction.A2C), FrameCipher(keys.c2a, Direction.C2A),
                               auto_consume=False)
        self.received: list[tuple[FrameType, bytes]] = []
        self.drop_next = 0

    def flush(self) -> None:
        for blob, _qos in self.channel.take_outgoing():
            if self.drop_next:
                self.drop_next -= 1
                continue
            self.d.deliver(self.a2c, blob)

    def on(self, msg: dict[str, Any]) -> None:
        """Feed one driver message to the agent's channel, as the broker would."""
        now = time.monotonic()
        if msg.get("pub") == self.c2a:
            for f in self.channel.receive(b64d(msg["b64"]), now):
                self.received.append((f.type, f.payload))
                self.channel.consume(f.seq, now)
        self.channel.tick(now)
        self.flush()

    def send(self, ftype: FrameType, payload: bytes) -> None:
        self.channel.send(ftype, payload, time.monotonic())
        self.flush()

    def pump(self, until: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        for msg in self.d.messages(timeout, idle=0.05):
            self.on(msg)
            if until(msg):
                return msg
        raise AssertionError("unreachable")

    def input_text(self) -> bytes:
        return b"".join(p for t, p in self.received if t == FrameType.DATA)


def test_js_grant_request_is_accepted_by_the_authority_code(driver: Driver) -> None:
    body = {"type": "grant", "agent": AGENT, "mode": "shell", "run_as": "root", "reason": "ticket 42 é",
            "command": None}
    driver.send(op="request", seed=(bytes([7]) * 32).hex(), user=USER,
                authority_x25519=b64e(bytes(AUTHORITY_X.public_key)), body=body)
    msg = next(m for m in driver.messages() if "request" in m)
    claimed, blob = authz.open_request_envelope(bytes(AUTHORITY_X), b64d(msg["request"]))
    assert claimed == USER
    req = authz.verify_request(bytes(CLIENT.verify_key), blob, time.time())
    assert {k: req[k] for k in body} == body
    assert req["user"] == USER and req["nonce"] == msg["nonce"] and len(b64d(req["reply_key"])) == 32
    with pytest.raises(authz.AuthzError):  # signed by alice, so nobody else's key verifies it
        authz.verify_request(bytes(AGENT_KEY.verify_key), blob, time.time())


def test_live_session_both_directions(driver: Driver) -> None:
    start(driver)
    request = authority_answers(driver)
    assert request["mode"] == "shell" and request["agent"] == AGENT
    driver.deliver(TOPICS.status(AGENT), status_document(AGENT_KEY, True, time.time()))
    agent = Agent(driver, {"max_duration": 3600, "mode": "shell", "recorded": True, "run_as": "alice"})
    body = agent.hello.body
    assert (body["term"], body["cols"], body["rows"], body["env"]) == ("xterm-256color", 100, 30, {"LANG": "C.UTF-8"})
    assert grants.decode(bytes(AUTHORITY.verify_key), body["grant"]).mqtt_name == SLOT
    accepted = driver.expect_event("accepted")
    assert accepted["recorded"] is True and accepted["extra"]["run_as"] == "alice"

    # a2c output, with one frame lost on the way: the JS client NACKs, the agent resends
    agent.send(FrameType.DATA, b"first\r\n")
    agent.drop_next = 1
    agent.send(FrameType.DATA, b"lost once\r\n")
    agent.send(FrameType.DATA, b"third\r\n")
    outputs: list[bytes] = []

    def got_all(msg: dict[str, Any]) -> bool:
        if "output" in msg:
            outputs.append(b64d(msg["output"]))
        return b"third" in b"".join(outputs) and agent.channel.all_acked

    agent.pump(got_all)
    assert b"".join(outputs) == b"first\r\nlost once\r\nthird\r\n"
    assert agent.channel.stats.frames_resent >= 1

    # c2a input, a resize and a signal, in order
    driver.send(op="input", b64=b64e("echo héllo\r".encode()))
    driver.send(op="resize", cols=132, rows=43)
    driver.send(op="signal", n=2)
    agent.pump(lambda m: len(agent.received) >= 3)
    assert agent.received == [(FrameType.DATA, "echo héllo\r".encode()),
                              (FrameType.RESIZE, struct.pack(">HH", 132, 43)),
                              (FrameType.SIGNAL, b"\x02")]

    # NOTICE, EXIT, CLOSE: the JS client reports exit 5 and closes with the final ack
    agent.send(FrameType.NOTICE, b"session ends in 60 s")
    agent.send(FrameType.EXIT, b'{"code":5,"signal":null}')
    agent.send(FrameType.CLOSE, b"")
    seen: dict[str, dict[str, Any]] = {}

    def closed(msg: dict[str, Any]) -> bool:
        evt: dict[str, Any] = msg.get("event", {})
        seen[str(evt.get("type", ""))] = evt
        return evt.get("type") == "closed"

    agent.pump(closed)
    assert seen["notice"]["text"] == "session ends in 60 s"
    assert (seen["exit"]["code"], seen["exit"]["signal"]) == (5, None)
    assert seen["closed"]["exit"]["code"] == 5
    agent.pump(lambda m: agent.channel.peer_closed, timeout=5)
    assert agent.channel.all_acked


def test_credit_is_returned_only_when_the_page_has_written_the_output(driver: Driver) -> None:
    start(driver, consume="manual")
    authority_answers(driver)
    agent = Agent(driver, {"max_duration": 3600, "mode": "shell", "run_as": "alice"})
    driver.expect_event("accepted")
    chunk = b"y\n" * 30000  # 60,000 bytes a frame, as the agent's output path sends
    sent = 0
    while agent.channel.send_capacity() >= len(chunk):
        agent.send(FrameType.DATA, chunk)
        sent += 1
    assert sent == (1 << 20) // len(chunk)
    outputs = 0

    def all_delivered(msg: dict[str, Any]) -> bool:
        nonlocal outputs
        outputs += "output" in msg
        return outputs == sent

    agent.pump(all_delivered)
    # Everything arrived, nothing is written yet: the agent must still be held back.
    for msg in driver.messages(timeout=1.0, idle=0.05):  # acks of receipt come and go; credit does not
        agent.on(msg)
        if agent.channel.all_acked:
            break
    assert agent.channel.send_capacity() < len(chunk)
    driver.send(op="consume", n=sent // 2)
    agent.pump(lambda m: agent.channel.send_capacity() >= len(chunk))
    assert agent.channel.send_capacity() < 1 << 20
    driver.send(op="consume")
    agent.pump(lambda m: agent.channel.send_capacity() == 1 << 20)


def test_queued_input_goes_out_when_an_ack_opens_the_window(driver: Driver) -> None:
    """Input beyond the credit window waits in the page's queue; the agent's ACK alone (no
    output for the page to ack back, as with echo off) sends the rest."""
    start(driver, request={"run_as": None, "reason": None, "term": "xterm-256color", "cols": 80, "rows": 24,
                           "env": {}, "window": 8192})
    authority_answers(driver)
    agent = Agent(driver, {"max_duration": 3600, "mode": "shell", "run_as": "alice"})
    driver.expect_event("accepted")
    data = bytes(range(256)) * 100  # 25,600 bytes: more than three windows
    driver.send(op="input", b64=b64e(data))
    agent.pump(lambda m: len(agent.input_text()) >= len(data))
    assert agent.input_text() == data


def test_denial_carries_the_reason_and_whether_one_is_required(driver: Driver) -> None:
    start(driver)
    authority_answers(driver, {"ok": False, "error": "denied: statement #2 'prod': a reason is required"})
    evt = driver.expect_event("denied")
    assert evt["message"] == "denied: statement #2 'prod': a reason is required"
    assert evt["reasonRequired"] is True


def test_refusal_by_the_agent(driver: Driver) -> None:
    start(driver)
    authority_answers(driver)
    hello = AgentHandshake(AGENT_KEY, bytes(AGENT_X), rand=os.urandom).open_hello(
        driver.expect_pub(TOPICS.handshake(AGENT, SLOT)), time.time())
    driver.deliver(TOPICS.session(AGENT, SLOT, hello.sid.hex(), "a2c"), hello.refuse("user 'alice' has been revoked"))
    evt = driver.expect_event("refused")
    assert evt["message"] == "agent 'web1' refused the session: user 'alice' has been revoked"


def test_reply_from_a_forger_is_ignored(driver: Driver) -> None:
    start(driver)
    payload = driver.expect_pub(TOPICS.authz_request(SLOT))
    _, blob = authz.open_request_envelope(bytes(AUTHORITY_X), payload)
    request = authz.verify_request(bytes(CLIENT.verify_key), blob, time.time())
    forged = authz.build_reply(AGENT_KEY, request, {"ok": False, "error": "denied: forged"}, os.urandom)
    driver.deliver(TOPICS.authz_reply(SLOT), forged)
    driver.deliver(TOPICS.authz_reply(SLOT), authz.build_reply(AUTHORITY, request, {"ok": False, "error": "denied: real"}, os.urandom))
    assert driver.expect_event("denied")["message"] == "denied: real"


def test_offline_status_stops_before_the_handshake(driver: Driver) -> None:
    start(driver)
    driver.deliver(TOPICS.status(AGENT), status_document(AGENT_KEY, False, time.time()))
    authority_answers(driver)
    assert driver.expect_event("offline")["message"] == "agent 'web1' is offline"
    assert not any(m.get("pub") == TOPICS.handshake(AGENT, SLOT) for m in driver.seen)


# ----- presence bounds: the console takes exactly what tether ls takes -----


def _presence_variants() -> list[tuple[str, bytes, bytes | None]]:
    """(what, signed blob, status key) for documents at and one past every bound."""
    from tether import presence
    from tether.signed import sign_document

    key = SigningKey(bytes([9]) * 32)
    good = {"name": "web1", "online": True, "seen": 1.0e9, "ed25519": b64e(bytes(key.verify_key)),
            "x25519": b64e(bytes(32)), "labels": {"env": "prod"}, "platform": "linux/x86_64 6.1",
            "version": "0.1.0", "capabilities": ["shell", "exec"]}
    labels_at = {f"k{i}": "v" for i in range(presence.MAX_LABELS)}
    changes: list[tuple[str, dict[str, Any]]] = [
        ("good", {}),
        ("labels at the limit", {"labels": labels_at}),
        ("one label too many", {"labels": {**labels_at, "extra": "v"}}),
        ("label key at the limit", {"labels": {"k" * presence.MAX_LABEL_KEY: "v"}}),
        ("label key one past", {"labels": {"k" * (presence.MAX_LABEL_KEY + 1): "v"}}),
        ("label value one past (code points)", {"labels": {"k": "é" * (presence.MAX_LABEL_VALUE + 1)}}),
        ("label value at the limit (astral)", {"labels": {"k": "😀" * presence.MAX_LABEL_VALUE}}),
        ("empty label key", {"labels": {"": "v"}}),
        ("label value not text", {"labels": {"k": 3}}),
        ("labels null", {"labels": None}),
        ("labels a list", {"labels": ["a"]}),
        ("platform one past", {"platform": "p" * (presence.MAX_TEXT + 1)}),
        ("version null", {"version": None}),
        ("capabilities one too many", {"capabilities": ["c"] * (presence.MAX_CAPABILITIES + 1)}),
        ("capability one past", {"capabilities": ["c" * (presence.MAX_CAPABILITY + 1)]}),
        ("seen a string", {"seen": "yesterday"}),
        ("seen a boolean", {"seen": True}),
        ("online a number", {"online": 1}),
        ("name not valid", {"name": "-web1"}),
        ("name 'all'", {"name": "all"}),
        ("x25519 short", {"x25519": b64e(bytes(31))}),
    ]
    out: list[tuple[str, bytes, bytes | None]] = []
    for what, change in changes:
        out.append((what, sign_document(key, presence.DOMAIN, {**good, **change}), None))
    big = sign_document(key, presence.DOMAIN, {**good, "labels": {"k": "v" * 250},
                                               "platform": "p" * 250, "pad": "x" * presence.MAX_PRESENCE_BYTES})
    out.append(("document over 32 KiB", big, None))
    vk = bytes(key.verify_key)
    out.append(("status", status_document(key, True, 1.0e9), vk))
    out.append(("status over 1 KiB", sign_document(key, presence.STATUS_DOMAIN,
                                                   {"online": True, "ts": 1.0, "pad": "x" * 1024}), vk))
    out.append(("status ts a string", sign_document(key, presence.STATUS_DOMAIN, {"online": True, "ts": "x"}), vk))
    return out


def test_console_and_cli_take_the_same_presence_documents(driver: Driver) -> None:
    from tether.presence import parse_presence, read_status
    from tether.signed import BadDocument

    taken_by_both = 0
    for what, blob, status_key in _presence_variants():
        try:
            if status_key is None:
                parse_presence(blob)
            else:
                read_status(blob, status_key)
            python_takes = True
        except BadDocument:
            python_takes = False
        if status_key is None:
            driver.send(op="presence", b64=b64e(blob))
        else:
            driver.send(op="presence", b64=b64e(blob), status=True, key=b64e(status_key))
        reply = next(m for m in driver.messages() if "taken" in m)
        assert reply["taken"] is python_takes, (what, reply)
        taken_by_both += python_takes
    assert taken_by_both == 5  # good, the three "at the limit" documents, and the status
