"""The web console's Python side on real brokers (embedded amqtt and Mosquitto from the
repo's mosquitto.conf): websocket clients under the same ACL, console users, `tether up`
and `tether console` serving the page, and audit queries answered by the recorder."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from stack import TETHER, Stack, policy, statement, wait_for
from support.brokers import BROKER_KINDS, ProbeClient, connected, free_port, start_broker

from tether import auditq, authz
from tether.authority.registry import Registry
from tether.broker.files import BrokerUser, write_broker_files
from tether.console_login import broker_token, derive
from tether.edge.keys import Identity
from tether.encoding import b64d, b64e

P = "tether/v1"


# ----- websockets under the same ACL -----

@pytest.fixture(params=BROKER_KINDS)
def ws_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    write_broker_files(tmp_path / "files", [
        BrokerUser.with_password("alice.c", "user", "alice-pw", b64e(bytes(ALICE_KEY.verify_key))),
        BrokerUser.with_password("bob", "user", "bob-pw"),
        BrokerUser.with_password("rec", "recorder", "rec-pw"),
        BrokerUser.with_password("web1", "agent", "web1-pw"),
    ])
    broker = start_broker(request.param, tmp_path / "files", tmp_path / "work", websockets=True)
    yield broker
    broker.stop()


ALICE_SEED = bytes(range(32))
ALICE_KEY = SigningKey(ALICE_SEED)


def _ws(broker: Any, user: str, password: str) -> ProbeClient:
    client = ProbeClient(("127.0.0.1", broker.ws_port), user, password, transport="websockets")
    assert client.connect(), f"{user} could not connect over websockets: {client.connack}"
    return client


def test_websocket_clients_obey_the_same_acl(ws_broker: Any) -> None:
    bad = ProbeClient(("127.0.0.1", ws_broker.ws_port), "alice.c", "wrong", transport="websockets")
    try:
        assert not bad.connect()
    finally:
        bad.close()
    password = ProbeClient(("127.0.0.1", ws_broker.ws_port), "alice.c", "alice-pw", transport="websockets")
    try:
        assert not password.connect()  # a console slot takes only one-time tokens
    finally:
        password.close()
    alice = _ws(ws_broker, "alice.c", broker_token(ALICE_SEED, "alice.c", "alice.c", time.time(), os.urandom(16)))
    try:
        with connected(ws_broker, "rec", "rec-pw") as rec, connected(ws_broker, "web1", "web1-pw") as agent:
            rec.subscribe(f"{P}/rec/rec/q/+")
            agent.subscribe(f"{P}/a/web1/hs/+")
            alice.subscribe(f"{P}/rec/rec/r/alice.c")
            alice.subscribe(f"{P}/rec/rec/r/+")  # Mosquitto grants it and filters delivery
            alice.subscribe(f"{P}/a/web1/presence/#")
            # Allowed: her own query topic, her own handshake topic, her replies.
            alice.publish(f"{P}/rec/rec/q/alice.c", b"q1", qos=1)
            rec.wait_for(f"{P}/rec/rec/q/alice.c", b"q1")
            alice.publish(f"{P}/a/web1/hs/alice.c", b"hello", qos=1)
            agent.wait_for(f"{P}/a/web1/hs/alice.c", b"hello")
            rec.publish(f"{P}/rec/rec/r/bob", b"not-hers", qos=1)
            rec.publish(f"{P}/rec/rec/r/alice.c", b"r1", qos=1)
            alice.wait_for(f"{P}/rec/rec/r/alice.c", b"r1")
            # Forbidden: another principal's query and handshake topics; presence writes.
            alice.publish(f"{P}/rec/rec/q/bob", b"forged", qos=1)
            alice.publish(f"{P}/a/web1/hs/bob", b"forged", qos=1)
            alice.publish(f"{P}/rec/rec/q/alice.c", b"marker", qos=1)
            rec.wait_for(f"{P}/rec/rec/q/alice.c", b"marker")
            alice.publish(f"{P}/a/web1/hs/alice.c", b"marker", qos=1)
            agent.wait_for(f"{P}/a/web1/hs/alice.c", b"marker")
            assert rec.received(f"{P}/rec/rec/q/bob") == []
            assert agent.received(f"{P}/a/web1/hs/bob") == []
            assert alice.received(f"{P}/rec/rec/r/bob") == []
    finally:
        alice.close()


# ----- console users, grants and audit queries on a whole deployment -----

PASSPHRASE = "carol's long console passphrase"
PROMPT = rb"\[tp\]\$ "


class Console:
    """What the browser does, in Python: log in over websockets, ask for grants, query."""

    def __init__(self, stack: Stack, user: str, slot: str, key: SigningKey, password: str,
                 transport: str = "websockets") -> None:
        self.authority = Identity.load(stack.home.authority_identity).authority
        self.key = key
        self.user, self.slot = user, slot
        where = ("127.0.0.1", stack.ws_port if transport == "websockets" else stack.port)
        self.mqtt = ProbeClient(where, slot, password,
                                transport="websockets" if transport == "websockets" else "tcp")
        assert self.mqtt.connect(), f"{slot} cannot log in: {self.mqtt.connack}"
        self.mqtt.subscribe(f"{P}/authz/rep/{slot}")
        self.mqtt.subscribe(f"{P}/rec/+/r/{slot}")
        self.grant: str = ""
        self.recorder: dict[str, str] = {}

    @classmethod
    def login(cls, stack: Stack, user: str, slot: str, passphrase: str,
              transport: str = "websockets") -> Console:
        """As the browser logs in: the key from the passphrase, a one-time broker token
        (the console slot; the user's CLI slots take the derived password)."""
        authority = Identity.load(stack.home.authority_identity).authority
        keys = derive(passphrase, b64d(authority["ed25519"]), user)
        password = (broker_token(keys.seed, slot, slot, time.time(), os.urandom(16)) if slot.endswith(".c")
                    else keys.mqtt_password)
        return cls(stack, user, slot, keys.signing_key, password, transport)

    def request_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        pending = authz.build_request(self.key, self.user,
                                      b64d(self.authority["x25519"]), body, time.time(), rand=os.urandom)
        topic = f"{P}/authz/rep/{self.slot}"
        seen = len(self.mqtt.received(topic))
        self.mqtt.publish(f"{P}/authz/req/{self.slot}", pending.payload, qos=1)

        def reply() -> dict[str, Any] | None:
            for m in self.mqtt.received(topic)[seen:]:
                doc = authz.open_reply(pending, b64d(self.authority["ed25519"]), m.payload)
                if doc is not None:
                    return doc
            return None
        return dict(wait_for(reply, what="the authority's reply"))

    def audit_grant(self) -> dict[str, Any]:
        doc = self.request_grant({"type": "grant", "agent": None, "mode": "audit",
                                  "run_as": None, "reason": None, "command": None})
        if doc.get("ok"):
            self.grant, self.recorder = str(doc["grant"]), dict(doc["agent"])
        return doc

    def send(self, op: str, args: dict[str, Any], chunk: int = auditq.CHUNK_DEFAULT,
             via: str | None = None) -> auditq.PendingQuery:
        pending = auditq.build_query(self.key, self.grant, b64d(self.recorder["x25519"]),
                                     op, args, time.time(), os.urandom, chunk)
        self.mqtt.publish(f"{P}/rec/{self.recorder['name']}/q/{via or self.slot}", pending.payload,
                          qos=1)
        return pending

    def wait(self, pending: auditq.PendingQuery, timeout: float = 30) -> dict[str, Any]:
        asm = auditq.ReplyAssembler(pending, b64d(self.recorder["ed25519"]))
        topic = f"{P}/rec/{self.recorder['name']}/r/{self.slot}"
        done: list[dict[str, Any]] = []
        offered = 0

        def complete() -> bool:
            nonlocal offered
            for m in self.mqtt.received(topic)[offered:]:
                offered += 1
                got = asm.offer(m.payload)
                if got is not None:
                    done.append(got)
            return bool(done)
        wait_for(complete, timeout=timeout, what=f"the recorder's answer to {pending.nonce}")
        return done[0]

    def query(self, op: str, args: dict[str, Any], chunk: int = auditq.CHUNK_DEFAULT) -> dict[str, Any]:
        return self.wait(self.send(op, args, chunk))

    def close(self) -> None:
        self.mqtt.close()




AUDITORS = """
[[statement]]
id = "carol-audits"
effect = "allow"
users = ["carol"]
agents = ["*"]
actions = ["audit"]
"""


def test_console_user_logs_in_and_audits_recordings(stack: Stack) -> None:
    r = stack.tether("authority", "user", "add", "carol", "--console", "--passphrase-stdin",
                     "--allow", "local", input=PASSPHRASE.encode() + b"\n")
    assert r.returncode == 0, r.stderr
    assert b"carol.c" in r.stdout
    carol = Registry.load(stack.home.registry).principals["carol"]
    keys = derive(PASSPHRASE, b64d(Identity.load(stack.home.authority_identity).authority["ed25519"]),
                  "carol")
    assert carol.console and carol.ed25519 == b64e(keys.public_key)
    assert re.search(r"^carol\.c:\$7\$", (stack.home.broker_files / "passwd").read_text(), re.M)
    assert f"carol.c {carol.ed25519}\n" in (stack.home.broker_files / "console-keys").read_text()
    assert "user carol.c" in (stack.home.broker_files / "acl").read_text()
    assert 'users = ["carol"]' in stack.home.policy.read_text()
    short = stack.tether("authority", "user", "add", "dave", "--console", "--passphrase-stdin",
                         input=b"short\n")
    assert short.returncode != 0 and b"at least" in short.stderr
    stack.broker.reload()

    token = os.urandom(4).hex()
    canary = f"console-canary-{token}"
    with policy(stack, statement() + AUDITORS):
        row = stack.recorded_shell(f"echo {canary}".encode())
        console = Console.login(stack, "carol", "carol.c", PASSPHRASE)
        try:
            grant = console.audit_grant()
            assert grant["ok"], grant
            assert console.recorder["name"] == "recorder"
            listed = console.query("list", {"user": row["user"], "since": row["started"] - 1})
            assert listed["ok"], listed
            mine = [s for s in listed["result"]["sessions"] if s["sid"] == row["sid"]]
            assert mine and mine[0]["chain"] == "ok" and mine[0]["status"] == "closed"
            assert all(s["user"] == row["user"] for s in listed["result"]["sessions"])
            assert console.query("list", {"user": "nobody-at-all"})["result"]["sessions"] == []

            def hit() -> dict[str, Any] | None:
                found = console.query("search", {"text": canary})
                assert found["ok"], found
                return next((h for h in found["result"]["hits"] if h["sid"] == row["sid"]), None)
            h = wait_for(hit, timeout=30, what="the canary searchable")
            assert canary in h["snippet"] and h["spans"]
            start, end = h["spans"][0]
            assert h["snippet"][start:end] == canary

            short_q = console.query("search", {"text": "ab"})
            assert not short_q["ok"] and "at least" in short_q["error"]
            cmds = console.query("commands", {"sid": row["sid"]})
            assert cmds["ok"] and any(canary in c["command"] for c in cmds["result"]["commands"])

            # Fetch in small chunks, as over Mosquitto's websocket listener.
            before = len(console.mqtt.received(f"{P}/rec/recorder/r/carol.c"))
            pending = console.send("fetch", {"sid": row["sid"]}, chunk=auditq.CHUNK_MIN)
            fetched = console.wait(pending)
            assert fetched["ok"], fetched
            cast = fetched["result"]["asciicast"].splitlines()
            assert json.loads(cast[0])["version"] == 2
            assert any(canary in json.loads(line)[2] for line in cast[1:])
            chunks = console.mqtt.received(f"{P}/rec/recorder/r/carol.c")[before:]
            assert len(chunks) > 1  # the session does not fit one small chunk
            assert max(len(m.payload) for m in chunks) < 2048

            verified = console.query("verify", {"sid": row["sid"]})
            assert verified["ok"] and verified["result"]["ok"] and verified["result"]["ended"]
            missing = console.query("fetch", {"sid": "0" * 32})
            assert not missing["ok"] and "no recorded session" in missing["error"]

            # A replayed query gets no second answer: the next fresh one is answered first.
            topic = f"{P}/rec/recorder/r/carol.c"
            console.mqtt.publish(f"{P}/rec/recorder/q/carol.c", pending.payload, qos=1)
            assert console.query("list", {"limit": 1})["ok"]
            again = auditq.ReplyAssembler(pending, b64d(console.recorder["ed25519"]))
            answers = [again.offer(m.payload) for m in console.mqtt.received(topic)]
            assert sum(a is not None for a in answers) == 1

            # The grant is bound to the console slot: another of carol's slots is refused.
            other = Console.login(stack, "carol", "carol.3", PASSPHRASE, transport="tcp")
            try:
                other.grant, other.recorder = console.grant, console.recorder
                refused = other.query("list", {})
                assert not refused["ok"] and "another client connection" in refused["error"]
            finally:
                other.close()
        finally:
            console.close()


def test_audit_needs_the_audit_action(stack: Stack) -> None:
    bob = Identity.load(stack.bob_identity)
    with policy(stack, statement()):
        console = Console(stack, "bob", "bob", bob.signing_key, bob.broker["password"], "tcp")
        try:
            denied = console.audit_grant()
            assert not denied["ok"] and denied["error"].startswith("denied: ")
            assert "audit" in denied["error"]
        finally:
            console.close()


# ----- serving the page -----

def _fake_dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>tether console</title>")
    (dist / "console.js").write_text("console.log('tether');")
    return dist


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 30) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"{needle!r} not printed: {seen.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            seen += os.read(proc.stdout.fileno(), 4096)
    return seen


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tether_up_serves_the_console_and_a_websocket_listener(tmp_path: Path) -> None:
    env = dict(os.environ, TETHER_HOME=str(tmp_path / "home"),
               TETHER_CONSOLE_DIST=str(_fake_dist(tmp_path)))
    port, ws_port = free_port(), free_port()
    proc = subprocess.Popen(
        [TETHER, "up", "--no-agent", "--no-recorder", "--listen", f"127.0.0.1:{port}",
         "--ws-listen", f"127.0.0.1:{ws_port}", "--console-listen", "127.0.0.1:0"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = _read_until(proc, b"Stop with Ctrl-C.")
        m = re.search(rb"Web console: (http://127\.0\.0\.1:(\d+)/)", out)
        assert m, out
        url = m.group(1).decode()
        with urllib.request.urlopen(url) as resp:
            assert resp.read().startswith(b"<!doctype html>")
        with urllib.request.urlopen(url + "config.json") as resp:
            config = json.loads(resp.read())
        auth = Identity.load(tmp_path / "home" / "authority" / "identity.json")
        assert config == {"ws_url": f"ws://127.0.0.1:{ws_port}", "prefix": P,
                          "authority": {"ed25519": auth.authority["ed25519"],
                                        "x25519": auth.authority["x25519"]}}
        # The websocket listener takes the same credentials as TCP.
        user = Identity.load(tmp_path / "home" / "user.json")
        ws = ProbeClient(("127.0.0.1", ws_port), user.name, user.broker["password"],
                         transport="websockets")
        try:
            assert ws.connect()
        finally:
            ws.close()
        # A second console on the same port: a clear error, not a traceback.
        taken = subprocess.run([TETHER, "console", "--listen", f"127.0.0.1:{m.group(2).decode()}"],
                               env=env, capture_output=True, timeout=30)
        assert taken.returncode != 0
        assert b"already in use" in taken.stderr and b"Traceback" not in taken.stderr
    finally:
        _stop(proc)
