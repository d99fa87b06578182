"""Audit queries between a client (the web console) and a recorder (sans-IO).

docs/protocol.md §13. The client holds an `audit` grant whose audience is the recorder.

Query, on rec/{recorder}/q/{client slot}: a sealed box to the recorder's X25519 key (from
the grant's authority reply), holding a document signed by the client key the grant binds
(`cnf`): the grant, the operation and its arguments, a nonce, a timestamp, a one-time
X25519 reply key and the largest reply chunk the client wants.

Reply, on rec/{recorder}/r/{client slot}: the canonical JSON of the response, cut into
chunks; each chunk travels as a sealed box to the reply key holding a document signed by
the recorder: the request's nonce, the chunk's number, the number of chunks and the
chunk's bytes. The broker sees only sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import SigningKey

from tether import envelope, grants
from tether.crypto import Random
from tether.encoding import b64d, b64e, dumps, loads
from tether.errors import TetherError

QUERY: Final = "audit-query"
REPLY: Final = "audit-reply"
MODE: Final = "audit"
CHUNK_MIN: Final = 1024
CHUNK_MAX: Final = 64 * 1024
CHUNK_DEFAULT: Final = 48 * 1024
# Keeps every reply message (and its MQTT packet) under 4 KiB: Mosquitto's websocket
# listener is slow for larger packets (docs/sources.md#mosquitto-websockets).
CHUNK_SMALL: Final = 2816
OPS: Final = ("list", "search", "commands", "fetch", "verify")


class QueryDropped(TetherError):
    """Not answerable: undecryptable, unsigned, replayed or malformed. No reply is sent."""


class QueryRefused(TetherError):
    """Authentic, but not allowed (the message says why); the reply is an error."""


PendingQuery = envelope.Pending


def build_query(client: SigningKey, grant_token: str, recorder_x25519: bytes, op: str,
                args: dict[str, Any], now: float, rand: Random, chunk: int = CHUNK_DEFAULT) -> PendingQuery:
    fields = {"type": QUERY, "grant": grant_token, "op": op, "args": args, "chunk": chunk}
    return envelope.seal_request(client, QUERY, recorder_x25519, fields, now, rand)


@dataclass(frozen=True)
class Query:
    doc: dict[str, Any]
    grant: grants.Grant

    @property
    def nonce(self) -> str:
        return str(self.doc["nonce"])

    @property
    def op(self) -> str:
        return str(self.doc.get("op"))

    @property
    def args(self) -> dict[str, Any]:
        args = self.doc.get("args")
        return args if isinstance(args, dict) else {}

    @property
    def reply_key(self) -> bytes:
        return b64d(str(self.doc["reply_key"]))

    @property
    def chunk(self) -> int:
        value = self.doc.get("chunk")
        if not isinstance(value, int) or isinstance(value, bool):
            return CHUNK_DEFAULT
        return max(CHUNK_MIN, min(CHUNK_MAX, value))


def open_query(x25519_secret: bytes, authority_key: bytes, payload: bytes,
               now: float) -> Query:
    """Decrypt and authenticate a query. Raises QueryDropped; checks no authorisation yet."""
    try:
        claims, blob = envelope.unseal(x25519_secret, payload)
    except envelope.EnvelopeError as exc:
        raise QueryDropped("undecryptable or malformed query") from exc
    token = claims.get("grant")
    if not isinstance(token, str):
        raise QueryDropped("the query carries no grant")
    try:
        grant = grants.decode(authority_key, token)
    except grants.GrantError as exc:
        raise QueryDropped(f"query not authentic: {exc}") from exc
    try:
        doc = envelope.verify_request(b64d(grant.client_key), QUERY, blob, now)
    except envelope.StaleEnvelope as exc:
        raise QueryDropped("query timestamp outside the allowed clock skew") from exc
    except (envelope.EnvelopeError, ValueError) as exc:
        raise QueryDropped(f"query not authentic or malformed: {exc}") from exc
    if doc.get("type") != QUERY:
        raise QueryDropped("malformed query: not an audit query")
    return Query(doc, grant)


def authorise(query: Query, *, recorder: str, recorder_key: bytes, client: str,
              now: float) -> None:
    """The grant must be an unexpired audit grant for this recorder and this connection."""
    g = query.grant
    if g.mode != MODE:
        raise QueryRefused(f"the grant is for {g.mode!r}, not audit")
    try:
        grants.check_binding(g, role="recorder", audience=recorder, audience_key=recorder_key,
                             mqtt_name=client, now=now)
    except grants.GrantError as exc:
        raise QueryRefused(str(exc)) from exc
    if query.op not in OPS:
        raise QueryRefused(f"unknown operation {query.op!r}; expected one of {', '.join(OPS)}")


def build_replies(recorder: SigningKey, query: Query, response: dict[str, Any], rand: Random) -> list[bytes]:
    """The response as sealed, signed chunks of at most `query.chunk` bytes of JSON each."""
    body = dumps(response)
    size = query.chunk
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    return [envelope.seal_reply(recorder, REPLY, query.doc, {"seq": n, "total": len(parts), "data": b64e(part)},
                                rand)
            for n, part in enumerate(parts)]


@dataclass
class ReplyAssembler:
    """The client side: collects one query's chunks and returns the response when whole."""

    pending: PendingQuery
    recorder_key: bytes
    max_bytes: int = 256 * 1024 * 1024
    parts: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None

    def offer(self, payload: bytes) -> dict[str, Any] | None:
        """The response once every chunk has arrived; None until then (or if not ours)."""
        try:
            doc = envelope.open_reply(self.pending, self.recorder_key, REPLY, payload)
        except envelope.EnvelopeError:
            return None
        if doc is None:
            return None
        seq, total = doc.get("seq"), doc.get("total")
        if not isinstance(seq, int) or not isinstance(total, int) or not 0 <= seq < total:
            return None
        if self.total is None:
            self.total = total
        if total != self.total or total * CHUNK_MIN > self.max_bytes * 2:
            return None
        try:
            self.parts[seq] = b64d(str(doc.get("data", "")))
        except ValueError:
            return None
        if len(self.parts) < total:
            return None
        try:
            response = loads(b"".join(self.parts[i] for i in range(total)))
        except ValueError:
            return None  # every chunk came, signed, yet they are not JSON: no answer
        return response if isinstance(response, dict) else None
