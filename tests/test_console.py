"""The Python side of the web console, without a broker: login derivation (with the
vectors the browser is tested against), console slots, ACL rules, the static server and
the audit-query messages."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import nacl.hash
import nacl.pwhash.argon2id
import pytest
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import auditq, grants
from tether.acl import Action, parse_acl, permits, render_mosquitto_acl
from tether.authority.registry import Principal, Registry, slot_names
from tether.client.console_server import (
    ConsoleServer,
    console_config,
    content_security_policy,
    resolve,
    ws_source,
)
from tether.console_login import console_slot, derive, salt
from tether.edge.keys import Identity
from tether.encoding import b64d, b64e

VECTORS = Path(__file__).parent / "vectors" / "console_login.json"
P = "tether/v1"


# ----- login derivation -----

def test_vectors_match_the_derivation() -> None:
    doc = json.loads(VECTORS.read_text())
    assert doc["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert doc["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    assert len(doc["vectors"]) >= 4
    for v in doc["vectors"]:
        auth = b64d(v["authority_ed25519"])
        # The salt as libsodium computes it (what the browser calls), not hashlib.
        personal = b"tether-console".ljust(16, b"\0")
        sodium_salt = nacl.hash.blake2b(auth + v["user"].encode(), digest_size=16,
                                        person=personal, encoder=RawEncoder)
        assert sodium_salt.hex() == salt(auth, v["user"]).hex() == v["salt_hex"]
        keys = derive(v["passphrase"], auth, v["user"])
        assert keys.seed.hex() == v["seed_hex"] == v["out_hex"][:64]
        assert keys.mqtt_password == v["mqtt_password"] == b64e(bytes.fromhex(v["out_hex"][64:]))
        assert b64e(keys.public_key) == v["ed25519_public"]
        assert console_slot(v["user"]) == v["slot"] == v["user"] + ".c"


def test_derivation_is_bound_to_passphrase_user_and_authority() -> None:
    auth = bytes(range(32))
    base = derive("correct horse battery staple", auth, "alice")
    others = [derive("correct horse battery staplf", auth, "alice"),
              derive("correct horse battery staple", auth, "alicf"),
              derive("correct horse battery staple", bytes(31) + b"\x01", "alice")]
    assert len({base.seed, *(o.seed for o in others)}) == 4
    assert len({base.mqtt_password, *(o.mqtt_password for o in others)}) == 4
    with pytest.raises(ValueError):
        salt(b"short", "alice")


# ----- slots and rules -----

def test_console_users_get_one_console_slot() -> None:
    assert slot_names("alice", "user") == ["alice"] + [f"alice.{i}" for i in range(1, 8)]
    assert slot_names("alice", "user", console=True)[-1] == "alice.c"
    assert len(slot_names("alice", "user", console=True)) == 9
    assert slot_names("root", "admin", console=True) == ["root", "root.c"]
    assert slot_names("web1", "agent", console=True) == ["web1"]


def test_registry_maps_the_console_slot_and_reserves_it(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.json")
    key = b64e(bytes(32))
    reg.add(Principal("alice", "user", key, "$7$x", console=True))
    found = reg.principal_for_mqtt("alice.c")
    assert found is not None and found.name == "alice"
    from tether.authority.registry import RegistryError

    with pytest.raises(RegistryError, match=r"alice\.c"):
        reg.add(Principal("alice.c", "user", key, "$7$x"))
    assert "alice.c" in {u.name for u in reg.broker_users()}


def _acl() -> Any:
    return parse_acl(render_mosquitto_acl({"alice.c": "user", "alice": "user", "bob": "user",
                                           "rec": "recorder", "web1": "agent"}))


@pytest.mark.parametrize(("who", "topic", "action", "allowed"), [
    ("alice.c", f"{P}/rec/rec/q/alice.c", Action.PUBLISH, True),
    ("alice.c", f"{P}/rec/rec/q/bob", Action.PUBLISH, False),
    ("alice.c", f"{P}/rec/rec/r/alice.c", Action.RECEIVE, True),
    ("alice.c", f"{P}/rec/rec/r/alice", Action.RECEIVE, False),
    ("alice.c", f"{P}/rec/rec/r/alice.c", Action.PUBLISH, False),
    ("alice.c", f"{P}/a/web1/hs/alice.c", Action.PUBLISH, True),
    ("alice.c", f"{P}/a/web1/s/alice/00/a2c", Action.RECEIVE, False),
    ("rec", f"{P}/rec/rec/q/+", Action.SUBSCRIBE, True),
    ("rec", f"{P}/rec/rec/q/alice.c", Action.RECEIVE, True),
    ("rec", f"{P}/rec/other/q/alice.c", Action.RECEIVE, False),
    ("rec", f"{P}/rec/rec/r/alice.c", Action.PUBLISH, True),
    ("rec", f"{P}/rec/other/r/alice.c", Action.PUBLISH, False),
    ("web1", f"{P}/rec/rec/q/web1", Action.PUBLISH, False),
    ("bob", f"{P}/rec/rec/q/+", Action.SUBSCRIBE, False),
])
def test_audit_query_acl(who: str, topic: str, action: Action, allowed: bool) -> None:
    assert permits(_acl(), who, topic, action) is allowed


# ----- the static server -----

def _dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>tether</title>")
    (dist / "console.js").write_text("export {};")
    (dist / "assets" / "x.css").write_text("body{}")
    (dist / ".hidden").write_text("no")
    (tmp_path / "secret.txt").write_text("outside")
    (dist / "link.txt").symlink_to(tmp_path / "secret.txt")
    return dist


def test_resolve_refuses_traversal(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    assert resolve(dist, "/") == (dist / "index.html").resolve()
    assert resolve(dist, "/assets/x.css?v=1") == (dist / "assets" / "x.css").resolve()
    for bad in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt",
                "/.hidden", "/link.txt", "/nope.js", "/..%5csecret.txt", "/a\x00b",
                "relative.js"):
        assert resolve(dist, bad) is None, bad


async def _get(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_server_serves_bundle_and_config(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    config = console_config("ws://127.0.0.1:8083", {"ed25519": "E", "x25519": "X"}, P)

    async def main() -> None:
        server = ConsoleServer(dist, config, "127.0.0.1", 0)
        await server.start()
        try:
            port = server.port
            assert server.url == f"http://127.0.0.1:{port}/"
            close = b"Connection: close\r\n\r\n"
            status, headers, body = await _get(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + close)
            assert status == 200 and body.startswith(b"<!doctype html>")
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert headers["x-content-type-options"] == "nosniff"
            status, headers, body = await _get(port, b"GET /console.js HTTP/1.1\r\n" + close)
            assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
            status, headers, body = await _get(port, b"GET /config.json HTTP/1.1\r\n" + close)
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body) == {"ws_url": "ws://127.0.0.1:8083", "prefix": P,
                                        "authority": {"ed25519": "E", "x25519": "X"}}
            assert headers["cache-control"] == "no-store"
            status, _, body = await _get(port, b"GET /../secret.txt HTTP/1.1\r\n" + close)
            assert status == 404 and b"outside" not in body
            status, _, body = await _get(port, b"GET /%2e%2e/secret.txt HTTP/1.1\r\n" + close)
            assert status == 404 and b"outside" not in body
            status, headers, _ = await _get(port, b"POST / HTTP/1.1\r\n" + close)
            assert status == 405 and headers["allow"] == "GET, HEAD"
            status, headers, body = await _get(port, b"HEAD /console.js HTTP/1.1\r\n" + close)
            assert status == 200 and body == b"" and headers["content-length"] == "10"
            status, _, _ = await _get(port, b"garbage\r\n\r\n")
            assert status == 400
            # Keep-alive: two requests on one connection.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /console.js HTTP/1.1\r\n\r\nGET /config.json HTTP/1.1\r\n" + close)
            data = await reader.read()
            writer.close()
            assert data.count(b"HTTP/1.1 200 OK") == 2 and data.endswith(body_of(config))
        finally:
            await server.stop()

    asyncio.run(main())


def body_of(config: dict[str, Any]) -> bytes:
    from tether.encoding import dumps

    return dumps(config)


CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'; connect-src 'self' ws://127.0.0.1:8083")


def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    # Issue 9, hole 8: the console page had no Content-Security-Policy, so an injected
    # script or a framing page would have met no browser-side limit.
    config = console_config("ws://127.0.0.1:8083", {"ed25519": "E", "x25519": "X"}, P)

    async def main() -> None:
        server = ConsoleServer(_dist(tmp_path), config, "127.0.0.1", 0)
        await server.start()
        try:
            close = b"Connection: close\r\n\r\n"
            requests = [b"GET / HTTP/1.1\r\n", b"GET /console.js HTTP/1.1\r\n", b"GET /config.json HTTP/1.1\r\n",
                        b"HEAD / HTTP/1.1\r\n", b"GET /nope HTTP/1.1\r\n", b"POST / HTTP/1.1\r\n",
                        b"GET / HTTP/1.1\r\nContent-Length: 1\r\n", b"garbage\r\n",
                        b"GET / HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n"]
            statuses = set()
            for request in requests:
                status, headers, _ = await _get(server.port, request + close)
                statuses.add(status)
                assert headers["content-security-policy"] == CSP, request[:30]
                assert headers["x-content-type-options"] == "nosniff"
                assert headers["referrer-policy"] == "no-referrer"
                assert headers["x-frame-options"] == "DENY"
            assert statuses == {200, 400, 404, 405, 431}
            # The policy follows the broker URL the page is given.
            server.config = console_config("wss://broker.example/mqtt", {"ed25519": "E", "x25519": "X"}, P)
            _, headers, _ = await _get(server.port, b"GET / HTTP/1.1\r\n" + close)
            assert headers["content-security-policy"].endswith("; connect-src 'self' wss://broker.example/mqtt")
        finally:
            await server.stop()

    asyncio.run(main())


@pytest.mark.parametrize("url", ["ws://h:1/x; script-src *", "ws://h:1,https://evil", "http://h:1",
                                 "ws://h:1/?q=1", "ws://u@h:1", "ws://h:nope", "ws://::1:8083", "ws:///x"])
def test_a_broker_url_a_policy_cannot_name_is_refused(url: str) -> None:
    # A URL that would add directives or sources to the policy: never copied into it.
    with pytest.raises(ValueError):
        ws_source(url)
    assert content_security_policy(url).endswith("; connect-src 'self'")


def test_console_refuses_such_a_ws_url_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tether.commands.main", "console", "--dist", str(_dist(tmp_path)),
                        "--listen", "127.0.0.1:0", "--ws-url", "ws://h:1/x; script-src *"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 255
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("tether console: --ws-url: "), r.stderr


def test_server_reports_a_taken_port(tmp_path: Path) -> None:
    async def main() -> None:
        first = ConsoleServer(_dist(tmp_path), {}, "127.0.0.1", 0)
        await first.start()
        try:
            second = ConsoleServer(tmp_path / "dist", {}, "127.0.0.1", first.port)
            with pytest.raises(OSError) as info:
                await second.start()
            import errno

            assert info.value.errno == errno.EADDRINUSE
        finally:
            await first.stop()

    asyncio.run(main())


# ----- audit query messages -----

AUTH = Identity.generate("authority", "authority", with_x25519=True)
REC = Identity.generate("rec", "recorder", with_x25519=True)
ALICE = SigningKey.generate()


def _grant(mode: str = "audit", agent: str = "rec", mqtt: str = "alice.c",
           expires: float | None = None, key: SigningKey = ALICE) -> str:
    now = time.time()
    return grants.issue(AUTH.signing_seed, grants.Grant(
        user="alice", agent=agent, agent_key=b64e(REC.public_key),
        client_key=b64e(bytes(key.verify_key)), mqtt_name=mqtt, mode=mode, run_as="",
        command=None, max_duration=3600, idle_timeout=0, recording="off", recorder=None,
        reason=None, jti=grants.new_jti(os.urandom), expires=expires or now + 300), now)


def _open(pending: auditq.PendingQuery, now: float | None = None) -> auditq.Query:
    return auditq.open_query(REC.x25519_secret or b"", AUTH.public_key, pending.payload,
                             time.time() if now is None else now)


def test_query_round_trip_in_small_chunks() -> None:
    pending = auditq.build_query(ALICE, _grant(), REC.x25519_public, "list", {"user": "bob"},
                                 time.time(), chunk=10, rand=os.urandom)
    query = _open(pending)
    auditq.authorise(query, recorder="rec", recorder_key=REC.public_key, client="alice.c",
                     now=time.time())
    assert (query.op, query.args, query.chunk) == ("list", {"user": "bob"}, auditq.CHUNK_MIN)
    response = {"ok": True, "op": "list", "result": {"text": "é" * 3000}}
    replies = auditq.build_replies(REC.signing_key, query, response, os.urandom)
    assert len(replies) == 6  # 6000+ bytes of JSON in 1024-byte chunks
    assert all(len(r) < 1024 * 4 // 3 + 300 for r in replies)
    asm = auditq.ReplyAssembler(pending, REC.public_key)
    # Out of order, with a duplicate and a stranger's message mixed in.
    stranger = auditq.build_replies(REC.signing_key, _open(auditq.build_query(
        ALICE, _grant(), REC.x25519_public, "list", {}, time.time(), rand=os.urandom)), {"ok": True}, os.urandom)
    assert asm.offer(stranger[0]) is None
    order = [replies[i] for i in (5, 0, 3, 3, 1, 2)]
    assert [asm.offer(r) for r in order] == [None] * 6
    assert asm.offer(replies[4]) == response


def test_forged_replies_are_ignored() -> None:
    pending = auditq.build_query(ALICE, _grant(), REC.x25519_public, "list", {}, time.time(), rand=os.urandom)
    query = _open(pending)
    forged = auditq.build_replies(SigningKey.generate(), query, {"ok": True, "op": "list"}, os.urandom)
    assert auditq.ReplyAssembler(pending, REC.public_key).offer(forged[0]) is None


@pytest.mark.parametrize("case", ["other key", "bad authority", "stale", "garbage", "sealed elsewhere"])
def test_unauthentic_queries_are_dropped(case: str) -> None:
    grant = _grant()
    now = time.time()
    if case == "other key":  # signed by someone other than the grant's client
        pending = auditq.build_query(SigningKey.generate(), grant, REC.x25519_public, "list", {}, now, rand=os.urandom)
    elif case == "bad authority":
        rogue = Identity.generate("x", "authority")
        token = grants.issue(rogue.signing_seed, grants.decode(AUTH.public_key, grant), now)
        pending = auditq.build_query(ALICE, token, REC.x25519_public, "list", {}, now, rand=os.urandom)
    elif case == "stale":
        pending = auditq.build_query(ALICE, grant, REC.x25519_public, "list", {}, now - 500, rand=os.urandom)
    elif case == "garbage":
        pending = auditq.PendingQuery("0" * 32, PrivateKey(os.urandom(32)), b"x" * 200)
    else:
        other = Identity.generate("o", "recorder", with_x25519=True)
        pending = auditq.build_query(ALICE, grant, other.x25519_public, "list", {}, now, rand=os.urandom)
    with pytest.raises(auditq.QueryDropped):
        _open(pending, now)


@pytest.mark.parametrize(("grant_kwargs", "client", "op", "why"), [
    ({"mode": "shell"}, "alice.c", "list", "not audit"),
    ({"agent": "rec2"}, "alice.c", "list", "grant is for recorder 'rec2', not this one"),
    ({"expires": time.time() - 1}, "alice.c", "list", "expired"),
    ({}, "alice.1", "list", "another client"),
    ({}, "alice.c", "drop-tables", "unknown operation"),
])
def test_unauthorised_queries_are_refused(grant_kwargs: dict[str, Any], client: str, op: str,
                                          why: str) -> None:
    pending = auditq.build_query(ALICE, _grant(**grant_kwargs), REC.x25519_public, op, {},
                                 time.time(), rand=os.urandom)
    query = _open(pending)
    with pytest.raises(auditq.QueryRefused, match=why):
        auditq.authorise(query, recorder="rec", recorder_key=REC.public_key, client=client,
                         now=time.time())


def test_small_chunks_fit_a_4k_websocket_packet() -> None:
    """CHUNK_SMALL keeps each reply's MQTT packet under 4 KiB (Mosquitto's websockets)."""
    pending = auditq.build_query(ALICE, _grant(), REC.x25519_public, "fetch", {"sid": "0" * 32},
                                 time.time(), chunk=auditq.CHUNK_SMALL, rand=os.urandom)
    query = _open(pending)
    body = {"ok": True, "op": "fetch", "result": {"asciicast": "\u2588" * 20000}}
    replies = auditq.build_replies(REC.signing_key, query, body, os.urandom)
    topic = f"{P}/rec/{'r' * 64}/r/{'u' * 64}"  # the longest names
    packet = [1 + 3 + 2 + len(topic) + 2 + len(r) for r in replies]  # header, topic, id
    assert len(replies) > 10 and max(packet) <= 4096
    assert auditq.ReplyAssembler(pending, REC.public_key).offer(replies[0]) is None
