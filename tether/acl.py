"""Broker topic ACLs (docs/sources.md#topics-and-broker-acls): one rule table, two enforcers.
Pure, sans-IO.

The rule table below is rendered into a Mosquitto 2.0 ``acl_file`` by
:func:`render_mosquitto_acl`. The embedded amqtt broker does not get a second copy of the
rules: it parses that same file with :func:`parse_acl` and asks :func:`permits`, which
implements Mosquitto's own acl_file semantics (``mosquitto_acl_check_default`` in
Mosquitto 2.0's ``security_default.c``):

* ``topic`` lines before the first ``user`` line apply to clients without a username;
  ``topic`` lines after ``user NAME`` apply to that user only.
* ``pattern`` lines apply to every client wherever they appear; ``%u`` is replaced by the
  username and ``%c`` by the client id. A pattern containing ``%u`` is skipped for a
  client without a username.
* The user's own entries are checked first, then the patterns. Within each list the
  ``deny`` entries come first; the first matching entry that grants the requested access
  (or denies it) decides. Nothing matching means denied.
* A client whose username or client id contains ``+`` or ``#`` is denied outright (when
  any pattern exists), because it could otherwise widen a pattern. We are stricter: such
  names, and names containing ``/`` or NUL, are denied even without patterns. No such
  name can log in to tether anyway (see ``tether.topics.valid_name``).
* Publishing needs ``write``; delivery of a message (RECEIVE) needs ``read``.

Mosquitto 2.0's acl_file does not check SUBSCRIBE at all, only delivery. The embedded
broker is stricter: a subscription is granted only if its filter lies entirely inside a
topic the client may read (:func:`filter_covers`), and delivery is still checked per
message, so both brokers deliver exactly the same messages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from tether.errors import TetherError
from tether.topics import DEFAULT_PREFIX, valid_name

__all__ = [
    "READ",
    "ROLES",
    "WRITE",
    "AclError",
    "AclFile",
    "Action",
    "Rule",
    "filter_covers",
    "parse_acl",
    "permits",
    "render_mosquitto_acl",
    "role_rules",
    "rules_for",
    "universal_rules",
    "valid_filter",
    "valid_prefix",
    "valid_topic",
]

ROLES: Final = ("agent", "user", "authority", "recorder", "admin", "enrol")
Role = Literal["agent", "user", "authority", "recorder", "admin"]

# Mosquitto's MOSQ_ACL_READ / MOSQ_ACL_WRITE bits; 0 is "deny".
READ: Final = 1
WRITE: Final = 2
DENY: Final = 0
_ACCESS_WORDS: Final = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}
_ACCESS_NAMES: Final = {v: k for k, v in _ACCESS_WORDS.items()}

Access = Literal["read", "write", "readwrite", "deny"]

# Characters that must never appear in a name substituted into a pattern.
_DANGEROUS: Final = frozenset("+#/\x00")


class AclError(TetherError, ValueError):
    """An acl_file that Mosquitto would refuse to load, or a bad name, role or prefix."""


class Action(enum.Enum):
    """What a client is doing with a topic (the same three actions amqtt asks about)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


@dataclass(frozen=True)
class Rule:
    """One line of the rule table. ``topic`` may contain ``%u`` (the principal's name)."""

    access: Access
    topic: str

    def substitute(self, name: str) -> Rule:
        return Rule(self.access, self.topic.replace("%u", name))


# ---------------------------------------------------------------------------------------
# The rule table (docs/sources.md#topics-and-broker-acls). Topics are built from the same
# layout as tether.topics.
# ---------------------------------------------------------------------------------------


def valid_prefix(prefix: str) -> bool:
    """A prefix is one or more plain topic levels: no wildcards, no `$` start, no spaces."""
    if not prefix or prefix.startswith(("/", "$")) or prefix.endswith("/"):
        return False
    if any(ch in prefix for ch in "+#%\x00") or any(ch.isspace() for ch in prefix):
        return False
    return all(prefix.split("/"))


def _check_prefix(prefix: str) -> None:
    if not valid_prefix(prefix):
        raise AclError(f"invalid topic prefix {prefix!r}")


def universal_rules(prefix: str = DEFAULT_PREFIX) -> tuple[Rule, ...]:
    """Rules every principal gets, whatever its role. ``%u`` is the principal's name."""
    _check_prefix(prefix)
    p = prefix
    return (
        Rule("read", f"{p}/a/+/presence/#"),  # the document and its online/offline status
        Rule("write", f"{p}/authz/req/%u"),
        Rule("read", f"{p}/authz/rep/%u"),
        Rule("read", f"{p}/authz/bulletin"),
    )


def role_rules(role: str, prefix: str = DEFAULT_PREFIX) -> tuple[Rule, ...]:
    """Rules specific to one role. ``%u`` is the principal's name."""
    _check_prefix(prefix)
    p = prefix
    if role == "agent":
        return (Rule("readwrite", f"{p}/a/%u/#"),)
    if role == "user":
        return (
            Rule("write", f"{p}/a/+/hs/%u"),
            Rule("readwrite", f"{p}/a/+/s/%u/#"),
            # The recorder stream and its acks live under the client's session path, but
            # only the agent writes `rec` and only the recorder writes `rack`. Both are
            # signed, so this is defence in depth: a client can neither inject into nor
            # read its own recording stream at the broker.
            Rule("deny", f"{p}/a/+/s/%u/+/rec"),
            Rule("deny", f"{p}/a/+/s/%u/+/rack"),
            # Audit queries to a recorder and its answers (sealed; the grant decides).
            Rule("write", f"{p}/rec/+/q/%u"),
            Rule("read", f"{p}/rec/+/r/%u"),
        )
    if role == "authority":
        return (
            Rule("read", f"{p}/authz/req/+"),
            Rule("write", f"{p}/authz/rep/+"),
            Rule("write", f"{p}/authz/bulletin"),
            Rule("read", f"{p}/enrol/req/+"),
            Rule("write", f"{p}/enrol/rep/+"),
        )
    if role == "enrol":
        # An activation's principal: it may only ask to enrol, and hear the answer.
        return (
            Rule("write", f"{p}/enrol/req/%u"),
            Rule("read", f"{p}/enrol/rep/%u"),
        )
    if role == "recorder":
        return (
            Rule("read", f"{p}/a/+/s/+/+/rec"),
            Rule("write", f"{p}/a/+/s/+/+/rack"),
            Rule("read", f"{p}/rec/%u/q/+"),
            Rule("write", f"{p}/rec/%u/r/+"),
        )
    if role == "admin":
        return (Rule("readwrite", "#"),)
    raise AclError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def _check_name(name: str) -> None:
    if not valid_name(name) or any(ch in _DANGEROUS for ch in name):
        raise AclError(
            f"invalid principal name {name!r}: use 1-64 ASCII letters, digits, '-', '_', '.'"
        )


def rules_for(name: str, role: str, prefix: str = DEFAULT_PREFIX) -> tuple[Rule, ...]:
    """The effective rules of one principal, with its name substituted."""
    _check_name(name)
    return tuple(r.substitute(name) for r in (*universal_rules(prefix), *role_rules(role, prefix)))


# ---------------------------------------------------------------------------------------
# Rendering the acl_file.
# ---------------------------------------------------------------------------------------


def render_mosquitto_acl(users: Mapping[str, str], prefix: str = DEFAULT_PREFIX) -> str:
    """A Mosquitto 2.0 ``acl_file`` for ``users`` (name -> role).

    Universal rules that mention the principal (``%u``) become ``pattern`` lines, so one
    line serves every user. Universal rules without ``%u`` are repeated in each user's
    section as ``topic`` lines (a ``pattern`` line without ``%u``/``%c`` makes Mosquitto
    log a warning on every start and reload). Role rules become ``topic`` lines under
    ``user NAME`` with the name substituted, so one principal can never use another
    role's rules.
    """
    _check_prefix(prefix)
    for name, role in users.items():
        _check_name(name)
        role_rules(role, prefix)  # raises on an unknown role
    universal = universal_rules(prefix)
    lines = [
        "# Generated by tether (tether.acl.render_mosquitto_acl). Do not edit by hand:",
        "# the authority rewrites this file whenever principals change.",
        "# Mosquitto 2.0 checks these rules on PUBLISH (write) and on delivery (read).",
        "",
        "# Every principal.",
    ]
    lines += [f"pattern {r.access} {r.topic}" for r in universal if "%u" in r.topic]
    for name in sorted(users):
        role = users[name]
        lines += ["", f"# {role}", f"user {name}"]
        lines += [f"topic {r.access} {r.topic}" for r in universal if "%u" not in r.topic]
        lines += [
            f"topic {r.access} {r.topic}"
            for r in (x.substitute(name) for x in role_rules(role, prefix))
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Topic matching.
# ---------------------------------------------------------------------------------------


def valid_topic(topic: str) -> bool:
    """A topic name a client may publish to: non-empty, no wildcards, no NUL."""
    return bool(topic) and not any(ch in topic for ch in "+#\x00") and len(topic.encode()) <= 65535


def valid_filter(topic_filter: str) -> bool:
    """A well-formed subscription filter (Mosquitto's ``mosquitto_sub_topic_check``)."""
    if not topic_filter or "\x00" in topic_filter or len(topic_filter.encode()) > 65535:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def _covers(rule: list[str], flt: list[str]) -> bool:
    """True if every topic matched by filter ``flt`` is matched by filter ``rule``.

    With a wildcard-free ``flt`` this is exactly MQTT topic matching (``a/#`` matches
    ``a``; ``+`` matches an empty level; wildcards at the first level never match
    topics starting with ``$``).
    """
    if flt and flt[0].startswith("$") and rule and rule[0] in ("+", "#"):
        return False
    for i, f in enumerate(flt):
        if i >= len(rule):
            return False
        r = rule[i]
        if r == "#":
            return True
        if f == "#":
            return False
        if r == "+":
            continue
        if f == "+" or f != r:
            return False
    if len(rule) == len(flt):
        return True
    return len(rule) == len(flt) + 1 and rule[-1] == "#"


def filter_covers(rule: str, topic_filter: str) -> bool:
    """True if every topic that ``topic_filter`` can match is also matched by ``rule``.

    ``filter_covers(rule, topic)`` for a plain topic is ordinary MQTT topic matching.
    """
    return _covers(rule.split("/"), topic_filter.split("/"))


# ---------------------------------------------------------------------------------------
# The acl_file interpreter.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AclEntry:
    access: int  # READ | WRITE bits; 0 = deny
    topic: str

    def __str__(self) -> str:
        return f"{_ACCESS_NAMES[self.access]} {self.topic}"


def _ordered(entries: Iterable[AclEntry]) -> tuple[AclEntry, ...]:
    """Mosquitto puts ``deny`` entries in front of the list, keeping the rest in order."""
    items = list(entries)
    return tuple([e for e in items if e.access == DENY] + [e for e in items if e.access != DENY])


@dataclass
class AclFile:
    """A parsed Mosquitto acl_file. Build it with :func:`parse_acl`."""

    anonymous: tuple[AclEntry, ...] = ()
    users: dict[str, tuple[AclEntry, ...]] = field(default_factory=dict)
    patterns: tuple[AclEntry, ...] = ()
    _cache: dict[tuple[str | None, str | None], tuple[tuple[AclEntry, list[str]], ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def entries_for(
        self, username: str | None, client_id: str | None = None
    ) -> tuple[tuple[AclEntry, list[str]], ...] | None:
        """The ordered entries that apply to a client, patterns substituted; None = deny all."""
        key = (username, client_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if (username is not None and any(ch in _DANGEROUS for ch in username)) or (
            client_id is not None and any(ch in _DANGEROUS for ch in client_id)
        ):
            return None
        own = self.anonymous if username is None else self.users.get(username, ())
        out: list[tuple[AclEntry, list[str]]] = [(e, e.topic.split("/")) for e in own]
        cid = client_id if client_id is not None else username
        for e in self.patterns:
            if "%u" in e.topic and username is None:
                continue
            if "%c" in e.topic and cid is None:
                continue
            topic = e.topic
            if cid is not None:
                topic = topic.replace("%c", cid)
            if username is not None:
                topic = topic.replace("%u", username)
            out.append((AclEntry(e.access, topic), topic.split("/")))
        result = tuple(out)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = result
        return result

    def permits(
        self,
        username: str | None,
        topic: str,
        action: Action | str,
        client_id: str | None = None,
    ) -> bool:
        """Would Mosquitto allow ``action`` on ``topic`` (a filter for SUBSCRIBE)?"""
        act = Action(action)
        if act is Action.SUBSCRIBE:
            if not valid_filter(topic):
                return False
        elif not valid_topic(topic):
            return False
        if act is Action.PUBLISH and topic.startswith("$SYS"):
            return False  # Mosquitto's acl__check_dollar: $SYS is never writable by clients
        entries = self.entries_for(username, client_id)
        if entries is None:
            return False
        want = WRITE if act is Action.PUBLISH else READ
        flt = topic.split("/")
        # The user's own entries, then the patterns, each with its denials first; the
        # first entry that matches and either denies or grants the access decides.
        for entry, levels in entries:
            if topic.startswith("$") and not entry.topic.startswith("$"):
                continue
            if not _covers(levels, flt):
                continue
            if entry.access == DENY:
                return False
            if entry.access & want:
                return True
        return False


def _parse_access(word: str, lineno: int) -> int:
    try:
        return _ACCESS_WORDS[word]
    except KeyError:
        raise AclError(f"line {lineno}: invalid topic access type {word!r}") from None


def parse_acl(text: str) -> AclFile:
    """Parse an acl_file the way Mosquitto 2.0 does; raise :class:`AclError` where it would."""
    anonymous: list[AclEntry] = []
    users: dict[str, list[AclEntry]] = {}
    patterns: list[AclEntry] = []
    user: str | None = None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        # strtok(buf, " "): only spaces separate tokens; leading spaces are skipped.
        stripped = line.lstrip(" ")
        if not stripped:
            continue
        keyword, _, rest = stripped.partition(" ")
        if keyword in ("topic", "pattern"):
            rest = rest.lstrip(" ")
            access_word, _, topic = rest.partition(" ")
            if not access_word:
                raise AclError(f"line {lineno}: empty topic")
            topic = topic.strip(" \t")
            if topic:
                access = _parse_access(access_word, lineno)
            else:
                topic, access = access_word, READ | WRITE
            if not valid_filter(topic):
                raise AclError(f"line {lineno}: invalid ACL topic {topic!r}")
            entry = AclEntry(access, topic)
            if keyword == "pattern":
                patterns.append(entry)
            elif user is None:
                anonymous.append(entry)
            else:
                users.setdefault(user, []).append(entry)
        elif keyword == "user":
            name = rest.strip(" \t")
            if not name:
                raise AclError(f"line {lineno}: missing username")
            user = name
        else:
            raise AclError(f"line {lineno}: invalid line {line!r}")
    return AclFile(
        anonymous=_ordered(anonymous),
        users={k: _ordered(v) for k, v in users.items()},
        patterns=_ordered(patterns),
    )


def permits(
    acl: AclFile | str,
    username: str | None,
    topic: str,
    action: Action | str,
    client_id: str | None = None,
) -> bool:
    """Would the acl_file ``acl`` let ``username`` do ``action`` on ``topic``?

    ``acl`` is parsed acl_file text or an :class:`AclFile`. ``client_id`` defaults to the
    username (tether brokers force client id = username). For SUBSCRIBE, ``topic`` is a
    filter and is allowed only if a readable entry covers all of it.
    """
    parsed = parse_acl(acl) if isinstance(acl, str) else acl
    return parsed.permits(username, topic, action, client_id)
