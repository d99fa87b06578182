"""The authority's registry of principals: their keys, roles, labels and MQTT credentials.

It is the single source for both brokers' password and ACL files.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tether.broker.files import BrokerUser, write_broker_files
from tether.broker.passwd import hash_password
from tether.console_login import console_slot
from tether.edge.state_files import load_records, save_records
from tether.errors import TetherError
from tether.topics import USER_SLOTS, user_slot, valid_name

KINDS = ("user", "agent", "recorder", "authority", "admin", "enrol")


class RegistryError(TetherError):
    pass


def slot_names(name: str, kind: str, console: bool = False) -> list[str]:
    """The broker usernames of a principal: a user's CLI slots, and its console slot."""
    names = [user_slot(name, i) for i in range(USER_SLOTS)] if kind == "user" else [name]
    if console and kind in ("user", "admin"):
        names.append(console_slot(name))  # the browser console's one broker login
    return names


@dataclass
class Principal:
    name: str
    kind: str
    ed25519: str
    mqtt_hash: str
    x25519: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    console: bool = False  # its key comes from a passphrase (console login; NAME.c takes tokens)

    @property
    def mqtt_names(self) -> list[str]:
        return slot_names(self.name, self.kind, self.console)


@dataclass
class Registry:
    path: Path
    principals: dict[str, Principal] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls(path, {p.name: p for p in load_records(path, "principals", Principal)})

    def save(self) -> None:
        save_records(self.path, "principals", self.principals.values())

    def _mqtt_owner(self) -> dict[str, str]:
        return {m: p.name for p in self.principals.values() for m in p.mqtt_names}

    def principal_for_mqtt(self, mqtt_name: str) -> Principal | None:
        owner = self._mqtt_owner().get(mqtt_name)
        return self.principals.get(owner) if owner else None

    def add(self, principal: Principal, *, replace: bool = False) -> None:
        if not valid_name(principal.name):
            raise RegistryError(
                f"invalid name {principal.name!r}: use 1-64 letters, digits, '-', '_' or '.'"
            )
        if principal.kind not in KINDS:
            raise RegistryError(f"unknown kind {principal.kind!r}")
        owners = self._mqtt_owner()
        for m in principal.mqtt_names:
            if m in owners and not (replace and owners[m] == principal.name):
                raise RegistryError(f"the name {m!r} is already taken by {owners[m]!r}")
        self.principals[principal.name] = principal

    def remove(self, name: str) -> None:
        if self.principals.pop(name, None) is None:
            raise RegistryError(f"no principal named {name!r}")

    def broker_users(self) -> list[BrokerUser]:
        users = []
        for p in self.principals.values():
            for m in p.mqtt_names:
                if p.console and m == console_slot(p.name):
                    # Logs in with one-time tokens only (protocol.md §13.1): no password opens it.
                    users.append(BrokerUser(m, p.kind, hash_password(secrets.token_urlsafe(32)), p.ed25519))
                else:
                    users.append(BrokerUser(m, p.kind, p.mqtt_hash))
        return users

    def write_broker_files(self, directory: Path) -> None:
        write_broker_files(directory, self.broker_users())


def new_mqtt_password() -> tuple[str, str]:
    """(password, Mosquitto $7$ hash). The password goes only into the identity file."""
    password = secrets.token_urlsafe(24)
    return password, hash_password(password)
