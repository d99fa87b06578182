"""The files both brokers read: ``passwd`` (Mosquitto ``$7$`` hashes), ``acl``, and
``console-keys`` (the Ed25519 keys that check web console logins, protocol.md §13.1; read
by the embedded broker and by Mosquitto's tether plugin, broker/mosquitto-plugin/).

The registry of principals lives in the authority; whenever it changes, the authority
calls :func:`write_broker_files` and then reloads the broker (SIGHUP, or
``tether broker reload``). The embedded amqtt broker and Mosquitto read exactly the same
two files, so both enforce literally the same text.

Write order: ``console-keys``, ``passwd``, then ``acl``, each atomically. A broker that reloads
between the two renames sees the new passwords with the old rules, which fails closed:
a new principal can log in but has no role rules yet, a removed one can no longer log in.

Permissions: both files are 0600 and the directory 0700, owned by the writer. Mosquitto
2.0 drops privileges to its ``mosquitto`` user *before* it reads them (at start and on
every reload), so for a system Mosquitto pass ``group="mosquitto"``: the files become
0640 and the directory 0750, group ``mosquitto``, readable but not writable by the broker.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tether.acl import AclError, AclFile, parse_acl, render_mosquitto_acl
from tether.broker.passwd import PasswdError, hash_password, read_passwd, valid_hash, write_passwd
from tether.broker.passwd import atomic_write as _atomic_write
from tether.encoding import b64d
from tether.errors import TetherError
from tether.topics import DEFAULT_PREFIX, valid_name

__all__ = [
    "ACL_FILE",
    "CONSOLE_KEYS_FILE",
    "PASSWD_FILE",
    "BrokerFilesError",
    "BrokerUser",
    "read_broker_files",
    "read_console_keys",
    "write_broker_files",
]

PASSWD_FILE: Final = "passwd"
ACL_FILE: Final = "acl"
CONSOLE_KEYS_FILE: Final = "console-keys"


class BrokerFilesError(TetherError, ValueError):
    """Broker files that are missing, malformed, or would be."""


@dataclass(frozen=True)
class BrokerUser:
    """One principal as the broker sees it: MQTT username, role and password hash; a web
    console slot also has the Ed25519 key (b64url) its login tokens are checked with."""

    name: str
    role: str
    password_hash: str
    console_key: str | None = None

    @classmethod
    def with_password(cls, name: str, role: str, password: str, console_key: str | None = None) -> BrokerUser:
        return cls(name, role, hash_password(password), console_key)


def _resolve_group(group: str | int | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BrokerFilesError(f"no such group {group!r}") from None


def write_broker_files(
    directory: Path,
    users: Iterable[BrokerUser],
    prefix: str = DEFAULT_PREFIX,
    *,
    group: str | int | None = None,
) -> None:
    """Write ``directory/passwd`` and ``directory/acl`` for ``users``, atomically.

    Names must be valid principal names (``tether.topics.valid_name``), unique, with a
    known role and a Mosquitto 2.0 password hash. Nothing is written if any is not.
    """
    directory = Path(directory)
    roles: dict[str, str] = {}
    hashes: dict[str, str] = {}
    console: list[str] = []
    for u in users:
        if not valid_name(u.name):
            raise BrokerFilesError(f"invalid principal name {u.name!r}")
        if u.name in roles:
            raise BrokerFilesError(f"duplicate principal {u.name!r}")
        if not valid_hash(u.password_hash):
            raise BrokerFilesError(f"password hash of {u.name!r} is not a Mosquitto $7$ hash")
        roles[u.name] = u.role
        hashes[u.name] = u.password_hash
        if u.console_key is not None:
            try:
                key_ok = len(b64d(u.console_key)) == 32
            except ValueError:
                key_ok = False
            if not key_ok:
                raise BrokerFilesError(f"console key of {u.name!r} is not 32 bytes of base64url")
            console.append(f"{u.name} {u.console_key}\n")
    try:
        acl_text = render_mosquitto_acl(roles, prefix)
    except AclError as exc:
        raise BrokerFilesError(str(exc)) from None
    gid = _resolve_group(group)
    file_mode, dir_mode = (0o600, 0o700) if gid is None else (0o640, 0o750)
    directory.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    if gid is not None:
        os.chown(directory, -1, gid)
        os.chmod(directory, dir_mode)
    _atomic_write(directory / CONSOLE_KEYS_FILE, "".join(console).encode("ascii"), mode=file_mode, group=gid)
    try:
        write_passwd(directory / PASSWD_FILE, hashes, mode=file_mode, group=gid)
    except PasswdError as exc:
        raise BrokerFilesError(str(exc)) from None
    _atomic_write(directory / ACL_FILE, acl_text.encode("utf-8"), mode=file_mode, group=gid)


def read_broker_files(directory: Path) -> tuple[dict[str, str], AclFile]:
    """``({username: hash}, parsed acl)`` from ``directory``.

    Raises :class:`FileNotFoundError` if either file is missing and
    :class:`BrokerFilesError` if the acl would not load in Mosquitto.
    """
    directory = Path(directory)
    passwd = read_passwd(directory / PASSWD_FILE)
    try:
        acl = parse_acl((directory / ACL_FILE).read_text(encoding="utf-8"))
    except AclError as exc:
        raise BrokerFilesError(f"{directory / ACL_FILE}: {exc}") from None
    return passwd, acl


def read_console_keys(directory: Path) -> dict[str, bytes]:
    """``{console slot: Ed25519 public key}``; empty without the file. Lines that are not
    ``NAME KEY`` with a valid name and a 32-byte key are skipped."""
    try:
        text = (Path(directory) / CONSOLE_KEYS_FILE).read_text(encoding="ascii")
    except FileNotFoundError:
        return {}
    keys: dict[str, bytes] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not valid_name(parts[0]):
            continue
        try:
            key = b64d(parts[1])
        except ValueError:
            continue
        if len(key) == 32:
            keys[parts[0]] = key
    return keys
