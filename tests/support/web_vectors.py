"""Test vectors for the web console's JS port of the protocol (client/web/src/proto).

Everything here is deterministic: fixed seeds and secrets, Ed25519 and the zero-nonce
handshake AEAD. `python -m tests.support.web_vectors OUT.json` writes them; the Node
tests (client/web/test/vectors.test.mjs) check the JS output against them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from typing import Any

import nacl.pwhash
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import grants, handshake, presence
from tether.console_login import broker_token
from tether.crypto import Random
from tether.encoding import b64e, dumps
from tether.frames import Direction, FrameCipher, FrameType
from tether.signed import sign_document

CLIENT_SEED = bytes([1]) * 32
AGENT_SEED = bytes([2]) * 32
AGENT_X = bytes([3]) * 32
CLIENT_EPH = bytes([4]) * 32
AGENT_EPH = bytes([5]) * 32
AUTHORITY_SEED = bytes([6]) * 32
SID = bytes(range(16))
NOW = 1_700_000_000.0


def fixed_random(secret: bytes) -> Random:
    """The random source of one side: its fixed ephemeral key."""
    return lambda n: secret[:n]


def _json_cases() -> list[dict[str, Any]]:
    docs: list[Any] = [
        {"b": 1, "a": [1, 2.5, None, True, False], "c": {"z": "é\u2028/\"\\\n\t\x01\x1f", "y": -3}},
        {"ts": 1700000000.25, "seen": 0.1, "big": 12345678901234, "neg": -0.5, "e": 1.5e-7},
        {"labels": {"env": "prod", "Role": "web"}, "emoji": "\U0001f600", "empty": {}, "list": []},
    ]
    return [{"doc": json.dumps(d), "canonical": dumps(d).decode()} for d in docs]


def _kdf_cases() -> list[dict[str, str]]:
    out = []
    for i, (key_len, data_len, person) in enumerate(
        [(32, 0, b"tether-hs1"), (64, 50, b"tether-hs2"), (32, 200, b"tether-epoch"), (32, 5, b"tether-hs-refuse")]
    ):
        key = hashlib.sha256(b"k%d" % i).digest() * 2
        data = (hashlib.sha256(b"d%d" % i).digest() * 8)[:data_len]
        out.append({"key": key[:key_len].hex(), "data": data.hex(), "person": person.decode(),
                    "out": hashlib.blake2b(data, key=key[:key_len], digest_size=32, person=person).hexdigest()})
    return out


def _frame_cases() -> list[dict[str, Any]]:
    key = bytes(range(32))
    out: list[dict[str, Any]] = []
    for direction in (Direction.C2A, Direction.A2C):
        cipher = FrameCipher(key, direction)
        for ftype, seq, ack, payload in [
            (FrameType.DATA, 1, 0, b"ls\r"),
            (FrameType.ACK, 1, 2, struct.pack(">QQQ", 2, 4, 6)),
            (FrameType.EXIT, 7, 3, b'{"code":5,"signal":null}'),
            (FrameType.DATA, (1 << 20) + 3, 9, bytes(range(256)) * 4),
            (FrameType.CLOSE, (2 << 20), 10, b""),
        ]:
            blob = cipher.seal(ftype, seq, ack, payload)
            out.append({"direction": int(direction), "type": int(ftype), "seq": seq, "ack": ack,
                        "payload": payload.hex(), "blob": blob.hex()})
    return out


def _handshake() -> dict[str, Any]:
    client = SigningKey(CLIENT_SEED)
    agent = SigningKey(AGENT_SEED)
    agent_x_pub = bytes(PrivateKey(AGENT_X).public_key)
    request = {"grant": "v4.public.example", "mode": "shell", "run_as": None, "reason": "disk check",
               "term": "xterm-256color", "cols": 120, "rows": 40, "env": {"LANG": "C.UTF-8"}}
    hs = handshake.ClientHandshake(client_key=client, agent_signing_key=bytes(agent.verify_key),
                                   agent_x25519=agent_x_pub, sid=SID, request=request,
                                   rand=fixed_random(CLIENT_EPH))
    hello = hs.hello(NOW)
    agent_side = handshake.AgentHandshake(agent, AGENT_X, rand=fixed_random(AGENT_EPH))
    opened = agent_side.open_hello(hello, NOW)
    extra = {"max_duration": 3600, "mode": "shell", "recorded": True, "run_as": "alice"}
    pending = agent_side.accept(opened, extra)
    confirm, keys = hs.on_reply(pending.accept)
    agent_keys = pending.on_confirm(confirm)
    assert agent_keys == keys
    return {
        "client_seed": CLIENT_SEED.hex(), "agent_ed25519": bytes(agent.verify_key).hex(),
        "agent_x25519": agent_x_pub.hex(), "client_eph": CLIENT_EPH.hex(), "sid": SID.hex(), "now": NOW,
        "request": request, "hello": hello.hex(), "accept": pending.accept.hex(), "extra": extra,
        "confirm": confirm.hex(), "c2a": keys.c2a.hex(), "a2c": keys.a2c.hex(),
        "refuse": opened.refuse("denied: run-as root is not allowed").hex(),
        "refuse_reason": "denied: run-as root is not allowed",
    }


def _documents() -> dict[str, Any]:
    agent = SigningKey(AGENT_SEED)
    authority = SigningKey(AUTHORITY_SEED)
    doc = {"type": "grant", "agent": "web1", "mode": "shell", "run_as": None, "reason": "fix", "command": None,
           "user": "alice", "nonce": "00" * 16, "ts": 1700000000.5, "reply_key": b64e(bytes(32))}
    grant = grants.Grant(user="alice", agent="web1", agent_key=b64e(bytes(agent.verify_key)),
                         client_key=b64e(bytes(SigningKey(CLIENT_SEED).verify_key)), mqtt_name="alice.c",
                         mode="shell", run_as="alice", command=None, max_duration=3600, idle_timeout=0,
                         recording="off", recorder=None, reason=None, jti="ab" * 16, expires=NOW + 300)
    return {
        "agent_seed": AGENT_SEED.hex(), "authority_ed25519": bytes(authority.verify_key).hex(),
        "request_doc": json.dumps(doc), "request_signed": sign_document(SigningKey(CLIENT_SEED), "grant-request",
                                                                        doc).hex(),
        "presence": presence.presence_document(agent, "web1", bytes(32), {"env": "prod"}, True, NOW,
                                               ["shell", "exec"]).hex(),
        "status": presence.status_document(agent, False, NOW).hex(),
        "grant": grants.issue(AUTHORITY_SEED, grant, NOW),
        "grant_claims": grant.claims(NOW),
    }


def _login() -> dict[str, str]:
    authority = bytes(SigningKey(AUTHORITY_SEED).verify_key)
    user, passphrase = "alice", "correct horse battery staple é"
    salt = hashlib.blake2b(authority + user.encode(), digest_size=16, person=b"tether-console").digest()
    out = nacl.pwhash.argon2id.kdf(64, passphrase.encode(), salt, opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
                                   memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE)
    token = broker_token(out[:32], "alice.c", "alice.c", NOW, bytes(range(16)))
    return {"authority_ed25519": authority.hex(), "user": user, "passphrase": passphrase, "salt": salt.hex(),
            "public_key": bytes(SigningKey(out[:32]).verify_key).hex(), "mqtt_password": b64e(out[32:]),
            "token_now": NOW, "token_nonce": bytes(range(16)).hex(), "token": token}


def vectors() -> dict[str, Any]:
    return {
        "b64": [{"hex": bytes(range(n)).hex(), "b64": b64e(bytes(range(n)))} for n in range(0, 12)]
        + [{"hex": (b"\xfb\xff\xfe" * 11).hex(), "b64": b64e(b"\xfb\xff\xfe" * 11)}],
        "json": _json_cases(),
        "kdf": _kdf_cases(),
        "frames": _frame_cases(),
        "handshake": _handshake(),
        "documents": _documents(),
        "login": _login(),
    }


def main(argv: list[str]) -> int:
    text = json.dumps(vectors(), indent=1, sort_keys=True)
    if len(argv) > 1:
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
