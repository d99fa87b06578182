"""Grants: short-lived PASETO v4.public tokens in which the authority says who may do what.

The agent verifies them offline with the authority's public key. A grant is bound to
one agent and its key, to the client's key (`cnf`) and to the client's MQTT name, and it
can be used for one session only (`jti` is remembered until `exp`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tether import paseto
from tether.crypto import Random
from tether.encoding import b64e, dumps, loads
from tether.errors import TetherError
from tether.limits import MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_GRANT_BYTES
from tether.topics import is_session_id

MAX_LIFETIME = 600.0
ISSUER = "tether-authority"
IMPLICIT = b"tether-grant-v1"
MODES = ("shell", "exec", "forward", "watch", "join")
# Modes that connect to a live session (the `attach` claim) instead of starting one.
ATTACH_MODES = ("watch", "join")


class GrantError(TetherError):
    """The grant is invalid for this use; the message says why."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _from_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Grant:
    user: str
    agent: str
    agent_key: str
    client_key: str
    mqtt_name: str
    mode: str
    run_as: str
    command: list[str] | None
    max_duration: int
    idle_timeout: int
    recording: str
    recorder: str | None
    reason: str | None
    jti: str
    expires: float
    max_sessions: int | None = None  # concurrent sessions of this user on this agent
    recorder_x25519: str | None = None  # the recorder's keys, certified by this grant
    recorder_ed25519: str | None = None
    # Seconds a session outlives its client (detached) before it ends; 0: it ends with the
    # client, as before detaching existed (a grant without the claim).
    detach_timeout: int = 0
    # The sid (hex) of the live session this grant attaches to, instead of starting one.
    attach: str | None = None
    # watch grants: the watcher is a moderator of the session (in a group its policy
    # statement names in require_moderator): it counts for a session that waits for one.
    moderator: bool = False
    # shell grants that start a session: it starts only once a moderator watches it.
    require_moderator: bool = False
    # The groups whose members may moderate it (for the waiting message; the watchers'
    # own grants, not this list, say who is a moderator).
    moderators: list[str] | None = None

    def claims(self, issued: float) -> dict[str, Any]:
        return {
            "iss": ISSUER,
            "sub": self.user,
            "aud": self.agent,
            "agent_key": self.agent_key,
            "cnf": {"ed25519": self.client_key},
            "mqtt": self.mqtt_name,
            "mode": self.mode,
            "run_as": self.run_as,
            "command": self.command,
            "max_duration": self.max_duration,
            "idle_timeout": self.idle_timeout,
            "recording": self.recording,
            "recorder": self.recorder,
            "reason": self.reason,
            "jti": self.jti,
            "max_sessions": self.max_sessions,
            "recorder_keys": (None if self.recorder_x25519 is None else
                              {"x25519": self.recorder_x25519, "ed25519": self.recorder_ed25519}),
            "detach_timeout": self.detach_timeout,
            "attach": self.attach,
            "iat": _iso(issued),
            "exp": _iso(self.expires),
            # Only when set (missing = false/none): every other grant stays as it was.
            **({"moderator": True} if self.moderator else {}),
            **({"require_moderator": True} if self.require_moderator else {}),
            **({"moderators": self.moderators} if self.moderators is not None else {}),
        }


def command_problem(mode: str, command: object) -> str | None:
    """Why `command` cannot be what a `mode` grant binds, or None if it can: an exec grant
    binds the exact argv the agent runs, within the bounds agents accept (tether.limits).
    The text never quotes the command, as it goes to logs and the audit trail."""
    if mode != "exec":
        return None if command is None else "only exec sessions name a command"
    if (not isinstance(command, list) or not command
            or not all(isinstance(arg, str) for arg in command)):
        return ("an exec session names its command as a non-empty list of strings "
                "(tether run AGENT -- COMMAND [ARG...])")
    if len(command) > MAX_COMMAND_ARGS:
        return f"the command has {len(command)} arguments; the limit is {MAX_COMMAND_ARGS}"
    try:
        encoded = [arg.encode() for arg in command]
    except UnicodeEncodeError:
        return "the command is not valid UTF-8"
    if any(b"\0" in arg for arg in encoded):
        return "an argument of the command contains a NUL character, which no program can receive"
    size = sum(len(arg) + 1 for arg in encoded)  # as execve counts: each with its NUL
    if size > MAX_COMMAND_BYTES:
        return f"the command is {size} bytes; the limit is {MAX_COMMAND_BYTES}"
    return None


def new_jti(rand: Random) -> str:
    return rand(16).hex()


def issue(authority_seed: bytes, grant: Grant, now: float) -> str:
    if grant.expires - now > MAX_LIFETIME:
        raise GrantError("grants live at most 10 minutes")
    problem = command_problem(grant.mode, grant.command)
    if problem:
        raise GrantError(f"grant not issued: {problem}")
    token = paseto.sign(authority_seed, dumps(grant.claims(now)), implicit=IMPLICIT)
    if len(token) > MAX_GRANT_BYTES:
        raise GrantError(f"grant not issued: it would be {len(token)} bytes, and agents accept "
                         f"at most {MAX_GRANT_BYTES}; shorten the command or the reason")
    return token


def decode(authority_key: bytes, token: str) -> Grant:
    """Check the signature and shape. Expiry and binding are checked by `check`. An exec
    grant that binds no command (or a malformed one) is refused here, so no role can
    honour it."""
    try:
        c = loads(paseto.verify(authority_key, token, implicit=IMPLICIT))
        if not isinstance(c, dict):
            raise GrantError("grant is malformed: its claims are not an object")
        if c.get("iss") != ISSUER:
            raise GrantError("grant has the wrong issuer")
        rk = c.get("recorder_keys")
        problem = command_problem(str(c["mode"]), c.get("command"))
        if problem:
            raise GrantError(f"grant is malformed: {problem}")
        return Grant(
            user=str(c["sub"]),
            agent=str(c["aud"]),
            agent_key=str(c["agent_key"]),
            client_key=str(c["cnf"]["ed25519"]),
            mqtt_name=str(c["mqtt"]),
            mode=str(c["mode"]),
            run_as=str(c["run_as"]),
            command=c.get("command"),
            max_duration=int(c["max_duration"]),
            idle_timeout=int(c["idle_timeout"]),
            recording=str(c["recording"]),
            recorder=c.get("recorder"),
            reason=c.get("reason"),
            jti=str(c["jti"]),
            expires=_from_iso(str(c["exp"])),
            max_sessions=int(c["max_sessions"]) if c.get("max_sessions") is not None else None,
            recorder_x25519=str(rk["x25519"]) if rk else None,
            recorder_ed25519=str(rk["ed25519"]) if rk else None,
            detach_timeout=_seconds(c.get("detach_timeout", 0)),
            attach=_sid_or_none(c.get("attach")),
            moderator=_flag(c, "moderator", "watch"),
            require_moderator=_flag(c, "require_moderator", "shell"),
            moderators=_names_or_none(c.get("moderators")),
        )
    except paseto.PasetoError as exc:
        raise GrantError(f"grant signature invalid: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise GrantError(f"grant is malformed: {exc}") from exc


def _seconds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("detach_timeout is not a whole number of seconds")
    return value


def _flag(claims: dict[str, Any], name: str, mode: str) -> bool:
    """A bool claim, false when missing, true only on a grant of `mode` (the authority
    issues no other; anything else is a malformed grant, not a silent no)."""
    value = claims.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} is not true or false")
    if value and claims.get("mode") != mode:
        raise ValueError(f"{name} is only for {mode} grants")
    return value


def _names_or_none(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("moderators is not a list of group names")
    return value


def _sid_or_none(value: object) -> str | None:
    if value is None:
        return None
    if not is_session_id(value):
        raise ValueError("attach is not a session id (32 lowercase hex digits)")
    return value


def check_binding(grant: Grant, *, role: str, audience: str, audience_key: bytes, mqtt_name: str,
                  now: float, client_key: bytes | None = None) -> None:
    """Raise GrantError unless the grant is unexpired, names this agent or recorder (the
    `role`) and its key, binds `client_key` (if given) and was issued to this client
    connection."""
    if grant.agent != audience or grant.agent_key != b64e(audience_key):
        raise GrantError(f"grant is for {role} {grant.agent!r}, not this one ({audience!r})")
    if grant.expires <= now:
        raise GrantError("grant has expired; request a new one")
    if client_key is not None and grant.client_key != b64e(client_key):
        raise GrantError("grant is bound to another client key")
    if grant.mqtt_name != mqtt_name:
        raise GrantError("grant was issued to another client connection")


class GrantChecker:
    """The agent's offline verification, including single use of each grant."""

    def __init__(self, authority_key: bytes, agent_name: str, agent_key: bytes,
                 used: dict[str, float] | None = None) -> None:
        self._authority_key = authority_key
        self._agent = agent_name
        self._agent_key = agent_key
        # jti -> expiry; the caller may pass its own, to keep it across restarts.
        self._used: dict[str, float] = {} if used is None else used

    def check(self, token: str, *, client_key: bytes, mqtt_name: str, now: float) -> Grant:
        grant = decode(self._authority_key, token)
        check_binding(grant, role="agent", audience=self._agent, audience_key=self._agent_key,
                      mqtt_name=mqtt_name, now=now, client_key=client_key)
        if grant.mode not in MODES:
            raise GrantError(f"unknown session mode {grant.mode!r}")
        for jti in [j for j, exp in self._used.items() if exp <= now]:
            del self._used[jti]
        if grant.jti in self._used:
            raise GrantError("grant was already used; grants are single-use")
        self._used[grant.jti] = grant.expires
        return grant
