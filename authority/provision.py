"""Creating principals: keys, broker credentials, registry entries, broker files."""

from __future__ import annotations

import getpass
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from tether.authority.policy import Policy, Statement, append_statement
from tether.authority.registry import Principal, Registry, new_mqtt_password
from tether.edge.home import Home
from tether.edge.keys import Identity
from tether.encoding import b64e

AUTHORITY_NAME = "authority"


def local_user_name() -> str:
    """The OS user's name, made into a valid principal name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", getpass.getuser()).strip("-.") or "me"
    return name[:64]


def authority_identity(home: Home) -> Identity:
    if home.authority_identity.exists():
        return Identity.load(home.authority_identity)
    ident = Identity.generate(AUTHORITY_NAME, "authority", with_x25519=True)
    ident.authority = {"ed25519": b64e(ident.public_key), "x25519": b64e(ident.x25519_public)}
    ident.save(home.authority_identity)
    return ident


def new_principal(
    home: Home, registry: Registry, authority: Identity, name: str, kind: str, *,
    host: str, port: int, labels: dict[str, str] | None = None, groups: list[str] | None = None,
) -> Identity:
    """Create keys and credentials for `name`, register it, and return its identity."""
    ident = Identity.generate(name, kind, with_x25519=kind in ("agent", "recorder"))
    password, hashed = new_mqtt_password()
    ident.broker = {"host": host, "port": port, "username": name, "password": password}
    ident.authority = dict(authority.authority)
    ident.labels = dict(labels or {})
    registry.add(Principal(
        name=name, kind=kind, ed25519=b64e(ident.public_key), mqtt_hash=hashed,
        x25519=b64e(ident.x25519_public) if ident.x25519_secret else None,
        labels=dict(labels or {}), groups=list(groups or []),
    ))
    return ident


def commit(home: Home, registry: Registry) -> None:
    registry.save()
    registry.write_broker_files(home.broker_files)


@dataclass
class LocalSetup:
    authority: Identity
    user: Identity
    agent: Identity | None
    created: bool
    recorder: Identity | None = None


def _retarget(path: Path, host: str, port: int) -> Identity:
    ident = Identity.load(path)
    if ident.broker.get("host") != host or ident.broker.get("port") != port:
        ident.broker.update(host=host, port=port)
        ident.save(path)
    return ident


def ensure_local_setup(home: Home, host: str, port: int, agent_name: str | None = "local",
                       recorder_name: str | None = "recorder") -> LocalSetup:
    """Everything `tether up` needs, created on first run and reused after."""
    home.ensure()
    authority = authority_identity(home)
    registry = Registry.load(home.registry)
    created = False
    if AUTHORITY_NAME not in registry.principals:
        password, hashed = new_mqtt_password()
        authority.broker = {"host": host, "port": port, "username": AUTHORITY_NAME, "password": password}
        authority.save(home.authority_identity)
        registry.add(Principal(AUTHORITY_NAME, "authority", b64e(authority.public_key), hashed,
                               b64e(authority.x25519_public)))
        created = True
    authority = _retarget(home.authority_identity, host, port)
    legacy_policy = home.policy.with_name("policy.json")
    if not home.policy.exists() and legacy_policy.exists():
        Policy.from_legacy_json(legacy_policy).save(home.policy)  # before the TOML format
    if not home.user_identity.exists():
        user = local_user_name()
        if user in registry.principals:
            registry.remove(user)
        ident = new_principal(home, registry, authority, user, "user", host=host, port=port)
        ident.save(home.user_identity)
        append_statement(home.policy, Statement(
            id=f"{user}-local", users=[user], agents=[agent_name or "local"],
            actions=["shell", "exec"], run_as=[getpass.getuser()],
        ), comment=f"added at first setup: the local user {user} on this machine's agent")
        created = True
    user_ident = _retarget(home.user_identity, host, port)
    agent_ident = None
    if agent_name is not None:
        path = home.agent_identity(agent_name)
        if not path.exists():
            if agent_name in registry.principals:
                registry.remove(agent_name)
            ident = new_principal(home, registry, authority, agent_name, "agent", host=host, port=port,
                                  labels={"host": socket.gethostname()})
            ident.save(path)
            created = True
        agent_ident = _retarget(path, host, port)
    recorder_ident = None
    if recorder_name is not None:
        path = home.recorder_identity(recorder_name)
        if not path.exists():
            if recorder_name in registry.principals:
                registry.remove(recorder_name)
            new_principal(home, registry, authority, recorder_name, "recorder", host=host,
                          port=port).save(path)
            created = True
        recorder_ident = _retarget(path, host, port)
    commit(home, registry)
    return LocalSetup(authority, user_ident, agent_ident, created, recorder_ident)
