"""The Python reference as authority and recorder for the JS audit client's Node test
(client/web/test/audit.test.mjs): JSON lines on stdin/stdout.

In:  {"topic": T, "b64": payload} for each message the JS client publishes.
Out: {"deliver": [{"topic", "b64"}...]} (what the broker would hand back to the client),
     or {"dropped": reason}. The first line out is {"ready": {...keys...}}.

Grant requests get an audit grant for recorder `rec` (tether.authz as the authority uses
it); queries are opened and authorised with tether.auditq exactly as recorder/queries.py
does, and answered with `build_replies` in the query's chunk size. The replies are handed
back out of order, with a duplicate, and with a forged chunk (another key) first.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether import auditq, authz, grants
from tether.encoding import b64d, b64e
from tether.topics import Topics

TOPICS = Topics()
USER, SLOT, RECORDER = "carol", "carol.c", "rec"
AUTHORITY_SEED = bytes([21]) * 32
AUTHORITY = SigningKey(AUTHORITY_SEED)
AUTHORITY_X = PrivateKey(bytes([22]) * 32)
REC = SigningKey(bytes([23]) * 32)
REC_X = PrivateKey(bytes([24]) * 32)
FORGER = SigningKey(bytes([25]) * 32)
CLIENT_SEED = bytes([26]) * 32


def answer(op: str, args: dict[str, Any]) -> dict[str, Any]:
    if op == "search":
        text = args.get("text")
        if not isinstance(text, str) or len(text) < 3:
            return {"ok": False, "op": op, "error": "search text must be at least 3 characters"}
        return {"ok": True, "op": op, "result": {"hits": [
            {"n": 1, "sid": "ab" * 16, "t": 4.5, "snippet": f"$ echo {text} é\U0001f600", "spans": [[7, 7 + len(text)]]}]}}
    if op == "fetch":
        lines = [json.dumps({"version": 2, "width": 80, "height": 24})]
        lines += [json.dumps([i * 0.01, "o", f"line {i} é\U0001f600 " + "x" * 50 + "\r\n"]) for i in range(400)]
        return {"ok": True, "op": op, "result": {"sid": args.get("sid"), "session": {"sid": args.get("sid")},
                                                 "asciicast": "\n".join(lines) + "\n"}}
    return {"ok": True, "op": op, "result": {"echo": args}}


def main() -> None:
    out = sys.stdout
    client_key = SigningKey(CLIENT_SEED)
    out.write(json.dumps({"ready": {
        "user": USER, "slot": SLOT, "seed": CLIENT_SEED.hex(),
        "authority": {"ed25519": b64e(bytes(AUTHORITY.verify_key)), "x25519": b64e(bytes(AUTHORITY_X.public_key))},
    }}) + "\n")
    out.flush()
    issued = 0
    for line in sys.stdin:
        msg = json.loads(line)
        topic, payload = msg["topic"], b64d(msg["b64"])
        now = time.time()
        if topic == TOPICS.authz_request(SLOT):
            _, blob = authz.open_request_envelope(bytes(AUTHORITY_X), payload)
            request = authz.verify_request(bytes(client_key.verify_key), blob, now)
            assert request["mode"] == "audit" and request["agent"] is None, request
            issued += 1
            life = float(msg.get("life", 300))
            g = grants.Grant(user=USER, agent=RECORDER, agent_key=b64e(bytes(REC.verify_key)),
                             client_key=b64e(bytes(client_key.verify_key)), mqtt_name=SLOT, mode="audit",
                             run_as="", command=None, max_duration=0, idle_timeout=0, recording="off",
                             recorder=None, reason=None, jti=grants.new_jti(os.urandom), expires=now + life)
            body = {"ok": True, "grant": grants.issue(AUTHORITY_SEED, g, now), "agent": {
                "name": RECORDER, "ed25519": b64e(bytes(REC.verify_key)), "x25519": b64e(bytes(REC_X.public_key))}}
            reply = authz.build_reply(AUTHORITY, request, body, os.urandom)
            out.write(json.dumps({"deliver": [{"topic": TOPICS.authz_reply(SLOT), "b64": b64e(reply)}],
                                  "grants": issued}) + "\n")
        elif topic == f"{TOPICS.prefix}/rec/{RECORDER}/q/{SLOT}":
            try:
                query = auditq.open_query(bytes(REC_X), bytes(AUTHORITY.verify_key), payload, now)
                auditq.authorise(query, recorder=RECORDER, recorder_key=bytes(REC.verify_key), client=SLOT, now=now)
            except (auditq.QueryDropped, auditq.QueryRefused) as exc:
                out.write(json.dumps({"dropped": str(exc)}) + "\n")
                out.flush()
                continue
            replies = auditq.build_replies(REC, query, answer(query.op, query.args), os.urandom)
            forged = auditq.build_replies(FORGER, query, {"ok": True, "op": query.op, "result": {"forged": True}}, os.urandom)
            order = [forged[0], *reversed(replies), replies[0]]
            rtopic = f"{TOPICS.prefix}/rec/{RECORDER}/r/{SLOT}"
            out.write(json.dumps({"deliver": [{"topic": rtopic, "b64": b64e(m)} for m in order],
                                  "chunk": query.chunk, "chunks": len(replies),
                                  "largest": max(len(m) for m in replies), "doc": query.doc}) + "\n")
        else:
            out.write(json.dumps({"dropped": f"unexpected topic {topic}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
