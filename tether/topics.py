"""Topic layout (docs/protocol.md §3). Every topic tether uses is built here and nowhere else.

At most 7 slashes per topic, so the layout also fits AWS IoT Core
(docs/sources.md#mqtt-311-and-portable-topics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from tether.console_login import SLOT_SUFFIX

DEFAULT_PREFIX = "tether/v1"

# Per-session sub-topics. c2a carries client input, control and acks; a2c carries output.
C2A = "c2a"
A2C = "a2c"
# The agent's recorder stream for that session, and the recorder's signed acks.
REC = "rec"
RACK = "rack"


def is_session_id(value: object) -> TypeGuard[str]:
    """A session id as it appears in topics, grants and requests: 16 random bytes in
    lowercase hex (32 characters)."""
    return (isinstance(value, str) and len(value) == 32
            and all(c in "0123456789abcdef" for c in value))


def valid_name(name: str) -> bool:
    """Principal names become topic levels and MQTT usernames, so keep them boring."""
    if not 1 <= len(name) <= 64:
        return False
    if name[0] in "-." or name in {"all"}:
        return False
    return all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in name)


@dataclass(frozen=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    def presence(self, agent: str) -> str:
        return f"{self.prefix}/a/{agent}/presence"

    def status(self, agent: str) -> str:
        """Retained online/offline; the offline form is the agent's MQTT last will."""
        return f"{self.prefix}/a/{agent}/presence/status"

    def all_presence(self) -> str:
        """Matches both presence documents and status of every agent."""
        return f"{self.prefix}/a/+/presence/#"

    def handshake(self, agent: str, client: str) -> str:
        return f"{self.prefix}/a/{agent}/hs/{client}"

    def handshake_inbox(self, agent: str) -> str:
        return f"{self.prefix}/a/{agent}/hs/+"

    def session(self, agent: str, client: str, sid: str, leg: str) -> str:
        return f"{self.prefix}/a/{agent}/s/{client}/{sid}/{leg}"

    def agent_sessions_c2a(self, agent: str) -> str:
        return f"{self.prefix}/a/{agent}/s/+/+/{C2A}"

    def recorder_streams(self) -> str:
        return f"{self.prefix}/a/+/s/+/+/{REC}"

    def agent_recorder_acks(self, agent: str) -> str:
        return f"{self.prefix}/a/{agent}/s/+/+/{RACK}"

    def authz_request(self, principal: str) -> str:
        return f"{self.prefix}/authz/req/{principal}"

    def authz_requests(self) -> str:
        return f"{self.prefix}/authz/req/+"

    def authz_reply(self, principal: str) -> str:
        return f"{self.prefix}/authz/rep/{principal}"

    def bulletin(self) -> str:
        """The authority's signed revocation bulletin, retained."""
        return f"{self.prefix}/authz/bulletin"

    def audit_query(self, recorder: str, client: str) -> str:
        """A client's sealed audit query to a recorder (docs/protocol.md §13)."""
        return f"{self.prefix}/rec/{recorder}/q/{client}"

    def audit_queries(self, recorder: str) -> str:
        return f"{self.prefix}/rec/{recorder}/q/+"

    def audit_reply(self, recorder: str, client: str) -> str:
        return f"{self.prefix}/rec/{recorder}/r/{client}"

    def parse_audit_query(self, topic: str) -> tuple[str, str] | None:
        """(recorder, client) for an audit query topic, else None."""
        parts = topic.split("/")
        pre = self.prefix.split("/")
        rest = parts[len(pre) :]
        if parts[: len(pre)] != pre or len(rest) != 4 or rest[0] != "rec" or rest[2] != "q":
            return None
        return rest[1], rest[3]

    def enrol_request(self, activation: str) -> str:
        return f"{self.prefix}/enrol/req/{activation}"

    def enrol_requests(self) -> str:
        return f"{self.prefix}/enrol/req/+"

    def enrol_reply(self, activation: str) -> str:
        return f"{self.prefix}/enrol/rep/{activation}"

    def parse_agent(self, topic: str) -> str | None:
        parts = topic.split("/")
        pre = self.prefix.split("/")
        if parts[: len(pre)] != pre or len(parts) < len(pre) + 2 or parts[len(pre)] != "a":
            return None
        return parts[len(pre) + 1]

    def parse_session(self, topic: str) -> tuple[str, str, str, str] | None:
        """(agent, client, sid, leg) for a session topic, else None."""
        parts = topic.split("/")
        pre = self.prefix.split("/")
        rest = parts[len(pre) :]
        if parts[: len(pre)] != pre or len(rest) != 6 or rest[0] != "a" or rest[2] != "s":
            return None
        return rest[1], rest[3], rest[4], rest[5]

    def parse_handshake(self, topic: str) -> tuple[str, str] | None:
        """(agent, client) for a handshake topic, else None."""
        parts = topic.split("/")
        pre = self.prefix.split("/")
        rest = parts[len(pre) :]
        if parts[: len(pre)] != pre or len(rest) != 4 or rest[0] != "a" or rest[2] != "hs":
            return None
        return rest[1], rest[3]


# A user may hold this many broker connections at once (one per running CLI command),
# because each connection needs its own client id and brokers tie client ids to usernames
# to stop takeovers: the user's name, then NAME.1 ... NAME.7.
USER_SLOTS = 8
_SLOT_SUFFIXES = frozenset([str(i) for i in range(1, USER_SLOTS)] + [SLOT_SUFFIX.lstrip(".")])


def user_slot(name: str, i: int) -> str:
    """The broker username of a user's i-th CLI slot (0 is the name itself)."""
    return name if i == 0 else f"{name}.{i}"


def principal_of_slot(mqtt_name: str) -> str:
    """The principal a broker username belongs to, found without the registry: the name
    less a CLI slot (.1 to .7) or console (.c) suffix. Cheap enough to key a rate limit on
    before a request is opened; at worst an agent named like another user's slot shares
    that user's key."""
    base, _, suffix = mqtt_name.rpartition(".")
    return base if base and suffix in _SLOT_SUFFIXES else mqtt_name
