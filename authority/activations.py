"""Activations: the authority's side of agent enrolment (see tether.enrolment)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether import enrolment
from tether.authority.registry import Principal, Registry, RegistryError, new_mqtt_password
from tether.broker.passwd import hash_password
from tether.edge.keys import Identity
from tether.edge.state_files import load_records, save_records
from tether.encoding import b64d, b64e
from tether.topics import valid_name


@dataclass
class Activation:
    id: str
    code: str
    labels: dict[str, str]
    max: int
    expires: float
    used: int = 0
    agents: list[str] = field(default_factory=list)
    approval: bool = False  # each enrolment waits for `tether authority agents approve`

    def usable(self, now: float) -> str | None:
        """None if it may enrol one more agent now, else why not."""
        if now >= self.expires:
            return f"activation {self.id} has expired"
        if self.used >= self.max:
            return f"activation {self.id} has been used {self.used} of {self.max} times"
        return None


@dataclass
class Activations:
    path: Path
    items: dict[str, Activation] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Activations:
        return cls(path, {a.id: a for a in load_records(path, "activations", Activation)})

    def save(self) -> None:
        save_records(self.path, "activations", self.items.values())


def fingerprint(ed25519_b64: str) -> str:
    """What an administrator compares with what the device shows, as with SSH host keys."""
    raw = hashlib.sha256(b64d(ed25519_b64)).digest()
    return "SHA256:" + base64.b64encode(raw).decode().rstrip("=")


@dataclass
class PendingEnrolment:
    activation: str
    name: str
    fingerprint: str
    payload: str  # the signed request, b64url
    received: float
    approved: bool = False


@dataclass
class PendingStore:
    path: Path
    items: dict[str, PendingEnrolment] = field(default_factory=dict)  # by agent name

    @classmethod
    def load(cls, path: Path) -> PendingStore:
        return cls(path, {p.name: p for p in load_records(path, "pending", PendingEnrolment)})

    def save(self) -> None:
        save_records(self.path, "pending", self.items.values())


def create(store: Activations, registry: Registry, labels: dict[str, str], max_uses: int,
           ttl: float, now: float, approval: bool = False) -> Activation:
    """A new activation, and its broker principal (role enrol) in the registry."""
    act = Activation(enrolment.new_activation_id(os.urandom), enrolment.new_code(os.urandom), labels, max_uses, now + ttl,
                     approval=approval)
    registry.add(Principal(name=act.id, kind="enrol", ed25519="",
                           mqtt_hash=hash_password(enrolment.mqtt_password(act.code))))
    store.items[act.id] = act
    return act


def enrol(store: Activations, registry: Registry, authority: Identity, activation_id: str,
          payload: bytes, now: float, pending: PendingStore | None = None,
          approved: bool = False) -> tuple[bytes | None, dict[str, Any]]:
    """Decide one enrolment request: (sealed reply or None, audit fields).

    With an approval activation the first answer is "pending" and the request is kept in
    `pending`; once approved it comes back here with approved=True (its clock check was
    done when it arrived).
    """
    act = store.items.get(activation_id)
    if act is None:
        return None, {"activation": activation_id, "why": "unknown activation"}
    try:
        request = enrolment.verify_request(payload, act.code, None if approved else now)
    except enrolment.EnrolError as exc:
        claims: dict[str, Any] = {}
        try:
            claims = enrolment.read_request(payload)
            reply = enrolment.build_reply(claims, act.code, {"ok": False, "error": str(exc)}, os.urandom)
        except (enrolment.EnrolError, KeyError, ValueError, TypeError):
            reply = None
        return reply, {"activation": act.id, "agent": _valid_or_none(claims.get("name")), "why": str(exc)}
    name = str(request.get("name") or "")
    problem = act.usable(now)
    if problem is None and not valid_name(name):
        problem = "invalid agent name: use 1-64 letters, digits, '-', '_' or '.'"
    answer: dict[str, Any]
    if problem is None and act.approval and not approved and pending is not None:
        if name in registry.principals or name in pending.items:
            problem = f"the name {name!r} is already taken or waiting for approval"
        else:
            fp = fingerprint(str(request["ed25519"]))
            pending.items[name] = PendingEnrolment(act.id, name, fp, b64e(payload), now)
            answer = {"ok": False, "pending": True, "fingerprint": fp,
                      "error": f"waiting for an administrator: tether authority agents approve {name}"}
            return enrolment.build_reply(request, act.code, answer, os.urandom), {
                "activation": act.id, "agent": name, "pending": True, "fingerprint": fp}
    if problem is None:
        password, hashed = new_mqtt_password()
        try:
            registry.add(Principal(name=name, kind="agent", ed25519=str(request["ed25519"]),
                                   mqtt_hash=hashed, x25519=str(request["x25519"]),
                                   labels=dict(act.labels)))
        except RegistryError as exc:
            problem = str(exc)
        else:
            act.used += 1
            act.agents.append(name)
            answer = {"ok": True, "name": name, "labels": act.labels,
                      "broker": {"username": name, "password": password},
                      "authority": {"ed25519": b64e(authority.public_key),
                                    "x25519": b64e(authority.x25519_public)}}
    if problem is not None:
        answer = {"ok": False, "error": problem}
    fields = {"activation": act.id, "agent": _valid_or_none(name), "labels": act.labels,
              "why": problem, "fingerprint": fingerprint(str(request["ed25519"]))}
    return enrolment.build_reply(request, act.code, answer, os.urandom), fields


def _valid_or_none(name: object) -> str | None:
    """A requested name as the audit trail may record it: only if it is a valid name."""
    return name if isinstance(name, str) and valid_name(name) else None
