"""The revocation bulletin (sans-IO): what the authority has revoked, and which sessions it
has ordered closed.

The authority signs it (domain "revocation") and publishes it retained, QoS 1, on
`authz/bulletin`. Every agent and client verifies the signature with the authority key in
its identity and keeps only the newest serial, so neither a forged bulletin nor a replayed
old one changes anything. The document lists:

- `users`: revoked user names (with their key, so the authority can still recognise and
  answer them after they are removed from the registry);
- `agents`: revoked agent names and their ed25519 keys;
- `grants`: revoked grant ids (`jti`) with their expiry, after which they drop out;
- `client_keys`: revoked client ed25519 keys;
- `terminate`: admin orders to end a live session: {agent, sid, until, nonce, by}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from tether.errors import TetherError
from tether.signed import BadDocument, open_document, sign_document

DOMAIN = "revocation"
TERMINATE_TTL = 600.0


class RevocationError(TetherError):
    pass


def _str_dict(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise RevocationError("malformed revocation list")
    return {str(k): dict(v) if isinstance(v, dict) else {} for k, v in value.items()}


@dataclass
class Revocations:
    """The revocation state: kept by the authority, carried by the bulletin."""

    serial: int = 0
    issued: float = 0.0
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {ed25519, reason, at}
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {ed25519, reason, at}
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)  # jti -> {exp, reason, at}
    client_keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # b64 key -> {reason, at}
    terminate: list[dict[str, Any]] = field(default_factory=list)  # {agent, sid, until, nonce, by}

    # ----- (de)serialisation -----

    def to_doc(self) -> dict[str, Any]:
        return {"serial": self.serial, "issued": self.issued, "users": self.users,
                "agents": self.agents, "grants": self.grants, "client_keys": self.client_keys,
                "terminate": self.terminate}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Revocations:
        try:
            serial = int(doc.get("serial", 0))
            issued = float(doc.get("issued", 0.0))
            terminate = doc.get("terminate", [])
            if not isinstance(terminate, list) or not all(isinstance(t, dict) for t in terminate):
                raise RevocationError("malformed terminate list")
            return cls(serial=serial, issued=issued, users=_str_dict(doc.get("users", {})),
                       agents=_str_dict(doc.get("agents", {})), grants=_str_dict(doc.get("grants", {})),
                       client_keys=_str_dict(doc.get("client_keys", {})),
                       terminate=[dict(t) for t in terminate])
        except (TypeError, ValueError) as exc:
            raise RevocationError(f"malformed revocation list: {exc}") from exc

    # ----- changes (authority side) -----

    def bump(self, now: float) -> None:
        """A new serial for a changed list; expired entries drop out."""
        self.serial += 1
        self.issued = now
        self.grants = {j: g for j, g in self.grants.items() if _num(g.get("exp")) > now}
        self.terminate = [t for t in self.terminate if _num(t.get("until")) > now]

    # ----- questions (agent and client side) -----

    def grant_refusal(self, user: str, jti: str, client_key: str) -> str | None:
        """Why a grant with these fields is revoked, or None if it is not."""
        if user in self.users:
            return f"user {user!r} has been revoked{_why(self.users[user])}"
        if jti in self.grants:
            return f"grant {jti} has been revoked{_why(self.grants[jti])}"
        if client_key in self.client_keys:
            return f"the key of {user!r} has been revoked{_why(self.client_keys[client_key])}"
        for name, entry in self.users.items():
            if entry.get("ed25519") == client_key:
                return f"the key of {user!r} has been revoked (it belonged to revoked user {name!r})"
        return None

    def agent_refusal(self, name: str, key: str | None) -> str | None:
        for revoked, entry in self.agents.items():
            if revoked == name or (key is not None and entry.get("ed25519") == key):
                return f"agent {name!r} has been revoked by the authority{_why(entry)}"
        return None

    def terminates(self, agent: str, sid: str, now: float) -> dict[str, Any] | None:
        for order in self.terminate:
            if (order.get("sid") == sid and order.get("agent") in (agent, "*")
                    and _num(order.get("until")) > now):
                return order
        return None


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0


def _why(entry: dict[str, Any]) -> str:
    reason = entry.get("reason")
    return f" ({reason})" if reason else ""


def sign_bulletin(authority: SigningKey, revocations: Revocations) -> bytes:
    return sign_document(authority, DOMAIN, revocations.to_doc())


def open_bulletin(authority_key: bytes, blob: bytes) -> Revocations:
    try:
        doc = open_document(authority_key, DOMAIN, blob)
    except BadDocument as exc:
        raise RevocationError(str(exc)) from exc
    return Revocations.from_doc(doc)


class BulletinTracker:
    """Keeps the newest verified bulletin; forged, malformed and older ones are dropped."""

    def __init__(self, authority_key: bytes) -> None:
        self._authority_key = authority_key
        self.current = Revocations()
        self.rejected = 0

    def offer(self, blob: bytes) -> Revocations | None:
        """The bulletin if it is authentic and newer than the one held, else None."""
        try:
            bulletin = open_bulletin(self._authority_key, blob)
        except RevocationError:
            self.rejected += 1
            return None
        if bulletin.serial <= self.current.serial:
            return None
        self.current = bulletin
        return bulletin
