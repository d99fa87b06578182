"""The authority's side of revocation: keep revocations.json, publish the signed bulletin,
and turn authorised `terminate` requests into terminate orders in it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from tether.authority.policy import Policy, Request, evaluate
from tether.authority.registry import Principal, Registry
from tether.edge import revocation_file
from tether.edge.home import Home
from tether.edge.keys import Identity
from tether.edge.mqtt import MqttConnection
from tether.edge.watch import FileWatch, poll
from tether.revocation import TERMINATE_TTL, RevocationError, Revocations, sign_bulletin
from tether.topics import Topics

log = logging.getLogger("tether.authority")
CHECK_INTERVAL = 1.0


class BulletinKeeper:
    def __init__(self, identity: Identity, home: Home, topics: Topics) -> None:
        self.identity = identity
        self.home = home
        self.topics = topics
        self.revocations = Revocations()
        self._watch = FileWatch(home.revocations)
        self._published: bytes | None = None
        self.conn: MqttConnection | None = None
        self._task: asyncio.Task[None] | None = None

    # ----- state -----

    def refresh(self) -> bool:
        """Re-read revocations.json if it changed; publish the new bulletin. True if changed."""
        if not self._watch.changed():
            return False
        try:
            self.revocations = revocation_file.load(self.home.revocations)
        except (RevocationError, OSError) as exc:
            log.error("revocations not reloaded; keeping the previous list: %s", exc)
            return False
        self._published = sign_bulletin(self.identity.signing_key, self.revocations)
        self.publish()
        return True

    def publish(self) -> None:
        if self.conn is not None and self._published is not None:
            self.conn.publish(self.topics.bulletin(), self._published, qos=1, retain=True)

    def on_connected(self) -> None:
        if self._published is None:
            self.refresh()
        self.publish()

    def on_bulletin(self, payload: bytes) -> None:
        """Someone (admin-level broker access) replaced the retained bulletin: restore ours."""
        if self._published is not None and payload != self._published:
            log.warning("the retained revocation bulletin was replaced by someone else; republishing")
            self.publish()

    def start(self, conn: MqttConnection) -> None:
        """Call before `conn.connect()`: the bulletin goes out on every (re)connect."""
        self.refresh()
        self.conn = conn
        conn.on_connected.append(self.on_connected)
        conn.subscribe(self.topics.bulletin(), 1)
        self._task = asyncio.get_running_loop().create_task(
            poll(CHECK_INTERVAL, self.refresh, log, "revocation refresh"))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ----- decisions -----

    def revoked_sender(self, registry: Registry, claimed: str, mqtt_name: str) -> Principal | None:
        """A revoked user is gone from the registry; recognise it so it gets a clear denial."""
        entry = self.revocations.users.get(claimed)
        if entry is None or not entry.get("ed25519"):
            return None
        if mqtt_name != claimed and not mqtt_name.startswith(claimed + "."):
            return None
        return Principal(claimed, "user", str(entry["ed25519"]), "")

    def grant_denial(self, user: str, client_key: str, agent: str, agent_key: str) -> str | None:
        why = self.revocations.grant_refusal(user, "", client_key)
        if why is None:
            why = self.revocations.agent_refusal(agent, agent_key)
        return f"denied: {why}" if why else None

    def terminate(self, principal: Principal, policy: Policy, registry: Registry,
                  req: dict[str, Any], now: float) -> dict[str, Any]:
        sid = str(req.get("sid", ""))
        agent = str(req.get("agent") or "*")
        if not sid or len(sid) > 64 or not all(c in "0123456789abcdef" for c in sid):
            return {"ok": False, "error": f"invalid session id {sid!r}"}
        if principal.kind != "admin":
            target = registry.principals.get(agent)
            if agent == "*" or target is None or target.kind != "agent":
                return {"ok": False, "error": "denied: name the agent (--agent) or be an admin"}
            decision = evaluate(policy, Request(
                user=principal.name, groups=principal.groups, agent=agent,
                agent_labels=target.labels, action="admin", now=datetime.fromtimestamp(now, UTC)))
            if not decision.allowed:
                return {"ok": False, "error": f"denied: {decision.reason}"}
        self.refresh()
        revs = self.revocations
        revs.terminate.append({"agent": agent, "sid": sid, "until": now + TERMINATE_TTL,
                               "nonce": secrets.token_hex(8), "by": principal.name})
        revs.bump(now)
        revocation_file.save(self.home.revocations, revs)
        self._watch.forget()
        self.refresh()
        log.info("%s ordered session %s on %s terminated", principal.name, sid, agent)
        return {"ok": True, "message": f"terminate order for session {sid} published "
                f"(bulletin serial {revs.serial})"}
