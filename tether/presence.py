"""Agent presence: a signed, retained document, plus a retained online/offline status
whose offline form is the MQTT last will.

Presence is published by agents and read by every user (`tether ls`, the console, the
recorder), so a document is checked against fixed bounds before any field is used: a
hostile agent cannot make a reader keep or print more than these limits allow.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from typing import Any, Final

from nacl.signing import SigningKey

from tether import __version__
from tether.encoding import b64d, b64e
from tether.signed import BadDocument, open_document, peek_document, sign_document
from tether.topics import valid_name

DOMAIN = "presence"
HEARTBEAT = 60.0

# What one agent may put in its presence document. A real one is about 350 bytes; one with
# every field at its limit in ASCII is about 21 KiB.
MAX_PRESENCE_BYTES: Final = 32 * 1024
MAX_LABELS: Final = 64
MAX_LABEL_KEY: Final = 64  # characters
MAX_LABEL_VALUE: Final = 256
MAX_TEXT: Final = 256  # platform and version
MAX_CAPABILITIES: Final = 16
MAX_CAPABILITY: Final = 32
MAX_STATUS_BYTES: Final = 1024  # a real status document is about 100 bytes


@dataclass(frozen=True)
class Presence:
    """A presence document whose every field has the documented type and size."""

    name: str
    online: bool
    seen: float
    ed25519: bytes
    x25519: bytes
    labels: dict[str, str]
    platform: str
    version: str
    capabilities: tuple[str, ...]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Presence:
        """Raises BadDocument naming the first field that is missing, mistyped or too big."""
        name = doc.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise BadDocument("name is not a valid agent name")
        return cls(
            name=name,
            online=_bool(doc, "online"),
            seen=_time(doc, "seen"),
            ed25519=_key(doc, "ed25519"),
            x25519=_key(doc, "x25519"),
            labels=_labels(doc.get("labels", {})),
            platform=_text(doc, "platform", MAX_TEXT),
            version=_text(doc, "version", MAX_TEXT),
            capabilities=_capabilities(doc.get("capabilities", [])),
        )


def _bool(doc: dict[str, Any], field: str) -> bool:
    value = doc.get(field)
    if not isinstance(value, bool):
        raise BadDocument(f"{field} is not true or false")
    return value


def _time(doc: dict[str, Any], field: str) -> float:
    value = doc.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadDocument(f"{field} is not a time")
    return float(value)


def _key(doc: dict[str, Any], field: str) -> bytes:
    value = doc.get(field)
    try:
        key = b64d(value) if isinstance(value, str) and len(value) <= 64 else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BadDocument(f"{field} is not a 32-byte key")
    return key


def _text(doc: dict[str, Any], field: str, limit: int) -> str:
    value = doc.get(field, "")
    if not isinstance(value, str) or len(value) > limit:
        raise BadDocument(f"{field} is not text of at most {limit} characters")
    return value


def label_problem(value: object) -> str | None:
    """Why `value` cannot be an agent's labels, or None. Checked where labels are given
    (the administrator's command) as well as where presence is read, so an agent is
    never enrolled with labels that make every reader skip its presence."""
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        return f"labels are not an object of at most {MAX_LABELS} entries"
    for k, v in value.items():
        if not (isinstance(k, str) and 1 <= len(k) <= MAX_LABEL_KEY
                and isinstance(v, str) and len(v) <= MAX_LABEL_VALUE):
            return (f"a label is not KEY (1-{MAX_LABEL_KEY} characters) = "
                    f"text (at most {MAX_LABEL_VALUE})")
    return None


def _labels(value: object) -> dict[str, str]:
    problem = label_problem(value)
    if problem is not None:
        raise BadDocument(problem)
    assert isinstance(value, dict)
    return dict(value)


def _capabilities(value: object) -> tuple[str, ...]:
    if not (isinstance(value, list) and len(value) <= MAX_CAPABILITIES
            and all(isinstance(c, str) and len(c) <= MAX_CAPABILITY for c in value)):
        raise BadDocument("capabilities are not a short list of names")
    return tuple(value)


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
        "platform": f"{platform.system().lower()}/{platform.machine()} {platform.release()}"[:MAX_TEXT],
        "version": __version__,
        "capabilities": capabilities,
    }
    return sign_document(key, DOMAIN, doc)


def _open_presence(blob: bytes, expected_key: bytes | None) -> dict[str, Any]:
    if len(blob) > MAX_PRESENCE_BYTES:
        raise BadDocument(f"presence document of {len(blob)} bytes (at most {MAX_PRESENCE_BYTES})")
    if expected_key is None:
        try:
            expected_key = b64d(str(peek_document(blob)["ed25519"]))
        except (KeyError, ValueError) as exc:
            raise BadDocument("presence without a key") from exc
    return open_document(expected_key, DOMAIN, blob)


def parse_presence(blob: bytes, expected_key: bytes | None = None) -> Presence:
    """A presence document, its signature verified (against the key inside it unless the
    agent's is known) and every field checked against the bounds above."""
    return Presence.from_doc(_open_presence(blob, expected_key))


def read_presence(blob: bytes, expected_key: bytes | None = None) -> dict[str, Any]:
    """As parse_presence, for readers that keep the document itself."""
    doc = _open_presence(blob, expected_key)
    Presence.from_doc(doc)
    return doc


STATUS_DOMAIN = "status"


def status_document(key: SigningKey, online: bool, now: float, boot: float | None = None) -> bytes:
    """`boot`: when the agent process started. A reader that sees an agent come back tells
    a resumed agent (same boot: its sessions go on) from a restarted one (they are gone)."""
    doc: dict[str, Any] = {"online": online, "ts": now}
    if boot is not None:
        doc["boot"] = boot
    return sign_document(key, STATUS_DOMAIN, doc)


def read_status(blob: bytes, key: bytes) -> dict[str, Any]:
    """A status document, verified, with `online` a bool and `ts` a time."""
    if len(blob) > MAX_STATUS_BYTES:
        raise BadDocument(f"status document of {len(blob)} bytes (at most {MAX_STATUS_BYTES})")
    doc = open_document(key, STATUS_DOMAIN, blob)
    _bool(doc, "online")
    _time(doc, "ts")
    if "boot" in doc:
        _time(doc, "boot")
    return doc
