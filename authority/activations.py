"""Activations: the authority's side of agent enrolment (see tether.enrolment)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether import enrolment
from tether.authority.registry import Principal, Registry, RegistryError, new_mqtt_password
from tether.broker.passwd import hash_password
from tether.encoding import b64e, dumps, loads
from tether.keys import Identity, read_private_file, write_private_file
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
        store = cls(path)
        if path.exists():
            for item in loads(read_private_file(path)).get("activations", []):
                a = Activation(**item)
                store.items[a.id] = a
        return store

    def save(self) -> None:
        write_private_file(self.path, dumps({"activations": [asdict(a) for a in self.items.values()]}))


def create(store: Activations, registry: Registry, labels: dict[str, str], max_uses: int,
           ttl: float, now: float) -> Activation:
    """A new activation, and its broker principal (role enrol) in the registry."""
    act = Activation(enrolment.new_activation_id(), enrolment.new_code(), labels, max_uses, now + ttl)
    registry.add(Principal(name=act.id, kind="enrol", ed25519="",
                           mqtt_hash=hash_password(enrolment.mqtt_password(act.code))))
    store.items[act.id] = act
    return act


def enrol(store: Activations, registry: Registry, authority: Identity, activation_id: str,
          payload: bytes, now: float) -> tuple[bytes | None, dict[str, Any]]:
    """Decide one enrolment request: (sealed reply or None, audit fields)."""
    act = store.items.get(activation_id)
    if act is None:
        return None, {"activation": activation_id, "why": "unknown activation"}
    try:
        request = enrolment.verify_request(payload, act.code, now)
    except enrolment.EnrolError as exc:
        claims: dict[str, Any] = {}
        try:
            claims = enrolment.read_request(payload)
            reply = enrolment.build_reply(claims, act.code, {"ok": False, "error": str(exc)})
        except (enrolment.EnrolError, KeyError, ValueError, TypeError):
            reply = None
        return reply, {"activation": act.id, "agent": claims.get("name"), "why": str(exc)}
    name = str(request.get("name") or "")
    problem = act.usable(now)
    if problem is None and not valid_name(name):
        problem = f"invalid agent name {name!r}: use letters, digits, '-', '_' or '.'"
    answer: dict[str, Any]
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
    fields = {"activation": act.id, "agent": name, "labels": act.labels,
              "why": problem, "fingerprint": str(request["ed25519"])[:16]}
    return enrolment.build_reply(request, act.code, answer), fields
