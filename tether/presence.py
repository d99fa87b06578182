"""Agent presence: a signed, retained document, plus a retained online/offline status
whose offline form is the MQTT last will."""

from __future__ import annotations

import platform
from typing import Any

from nacl.signing import SigningKey

from tether import __version__
from tether.encoding import b64d, b64e
from tether.signed import BadDocument, open_document, peek_document, sign_document

DOMAIN = "presence"
HEARTBEAT = 60.0


def presence_document(
    key: SigningKey, name: str, x25519: bytes, labels: dict[str, str], online: bool, now: float,
    capabilities: list[str],
) -> bytes:
    doc: dict[str, Any] = {
        "name": name,
        "online": online,
        "seen": now,
        "ed25519": b64e(bytes(key.verify_key)),
        "x25519": b64e(x25519),
        "labels": labels,
        "platform": f"{platform.system().lower()}/{platform.machine()} {platform.release()}",
        "version": __version__,
        "capabilities": capabilities,
    }
    return sign_document(key, DOMAIN, doc)


def read_presence(blob: bytes, expected_key: bytes | None = None) -> dict[str, Any]:
    """Parse a presence document; verify it if the agent's key is known."""
    if expected_key is not None:
        return open_document(expected_key, DOMAIN, blob)
    doc = peek_document(blob)
    try:
        return open_document(b64d(str(doc["ed25519"])), DOMAIN, blob)
    except (KeyError, ValueError) as exc:
        raise BadDocument("presence without a key") from exc


STATUS_DOMAIN = "status"


def status_document(key: SigningKey, online: bool, now: float) -> bytes:
    return sign_document(key, STATUS_DOMAIN, {"online": online, "ts": now})


def read_status(blob: bytes, key: bytes) -> dict[str, Any]:
    return open_document(key, STATUS_DOMAIN, blob)
