"""`tether agent enrol`: the device side of enrolment (see tether.enrolment)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tether import enrolment
from tether.edge.keys import Identity
from tether.edge.mqtt import BrokerError, BrokerSettings, MqttConnection
from tether.errors import TetherError
from tether.topics import Topics

REPLY_TIMEOUT = 15.0


class EnrolmentFailed(TetherError):
    """Enrolment did not complete; the text says why and what to do."""


async def enrol(activation: str, code: str, host: str, port: int, name: str, out: Path,
                 tls_ca: str | None = None, topics: Topics | None = None,
                 approval_wait: float = 600.0) -> Identity:
    topics = topics or Topics()
    ident = Identity.generate(name, "agent", with_x25519=True)
    assert ident.x25519_secret is not None
    payload = enrolment.build_request(ident.signing_key, ident.x25519_public, activation, code,
                                      name, time.time(), rand=os.urandom)
    nonce = str(enrolment.read_request(payload)["nonce"])
    answers: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    def on_message(topic: str, data: bytes) -> None:
        doc = enrolment.open_reply(data, code, ident.x25519_secret or b"", nonce)
        if doc is not None:
            answers.put_nowait(doc)

    settings = BrokerSettings(host=host, port=port, username=activation, client_id=activation,
                              password=enrolment.mqtt_password(code), tls_ca=tls_ca)
    conn = MqttConnection(settings, on_message)
    try:
        await conn.connect()
    except BrokerError as exc:
        if "refused" in str(exc):
            raise EnrolmentFailed(
                f"the broker at {host}:{port} refused activation {activation}: the id or code is "
                "wrong, the activation has expired or been used up, or the broker was not "
                "reloaded after it was created"
            ) from None
        raise EnrolmentFailed(str(exc)) from None
    try:
        await conn.subscribe_confirmed(topics.enrol_reply(activation), 1)
        conn.publish(topics.enrol_request(activation), payload, qos=1)
        try:
            doc = await asyncio.wait_for(answers.get(), REPLY_TIMEOUT)
        except TimeoutError:
            raise EnrolmentFailed(f"the authority did not answer within {REPLY_TIMEOUT:.0f} s; is it running?") from None
        if doc.get("pending") and doc.get("authentic"):
            print(f"Waiting for an administrator to approve this agent. Its key fingerprint is\n"
                  f"  {doc.get('fingerprint')}\n"
                  f"They run: tether authority agents approve {name}", flush=True)
            try:
                doc = await asyncio.wait_for(answers.get(), approval_wait)
            except TimeoutError:
                raise EnrolmentFailed(f"not approved within {approval_wait:.0f} s; run `tether agent enrol` again later") from None
    finally:
        await conn.close()
    if not doc.get("authentic"):
        raise EnrolmentFailed("the answer was not authenticated with the activation code; refusing it")
    if not doc.get("ok"):
        raise EnrolmentFailed(f"enrolment refused: {doc.get('error')}")
    broker = doc.get("broker")
    authority = doc.get("authority")
    labels = doc.get("labels")
    if not isinstance(broker, dict) or not isinstance(authority, dict) or not isinstance(labels, dict):
        raise EnrolmentFailed("the authority's answer is malformed")
    ident.broker = {"host": host, "port": port, "username": str(broker["username"]),
                    "password": str(broker["password"])}
    if tls_ca:
        ident.broker["tls"] = {"ca": tls_ca}
    ident.authority = {str(k): str(v) for k, v in authority.items()}
    ident.labels = {str(k): str(v) for k, v in labels.items()}
    ident.save(out)
    return ident
