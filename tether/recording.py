"""The recorder stream: agent -> recorder, sealed to the recorder, acked with signatures.

Sans-IO. The agent's `RecordingSender` turns recorded events into messages and reads the
recorder's acks; the recorder's `RecordingReceiver` turns messages back into events and
makes acks. Neither touches a socket or a clock: time comes in as arguments.

Messages (topics `.../s/{client}/{sid}/rec` and `.../rack`); every one starts with
`version u8 (0x84) | type u8 | sid[16]`:

- OPEN (agent): prefix | agent ephemeral X25519 [32] | sealed body | Ed25519 signature [64].
  The body (JSON) carries the grant, which the authority signed: who, where, run-as,
  reason, grant id, client key. The key to the body and the traffic key come from
  DH(agent ephemeral, recorder static), so only the named recorder can read them. The
  signature also covers the grant's digest, so the OPEN, readable offline without the
  recorder's key, ties the session id to its grant.
- DATA (agent): prefix | first event index u64 | nonce [24] | XChaCha20-Poly1305(events).
- ACK (recorder): prefix | stored u64 | Ed25519 signature [64] over the OPEN's hash and
  `stored`. "stored = n" means events 0..n-1 are durable at the recorder.
- REFUSE (recorder): prefix | Ed25519 signature [64] | UTF-8 reason.

Data travels at QoS 0; the sender goes back to the first unacked event when acks stop
coming (go-back-N), and the receiver answers anything out of order with its current ack.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tether import grants
from tether.crypto import Random, aead_open, aead_seal, dh, kdf, personal_hash, x25519_public
from tether.encoding import b64d, dumps, loads
from tether.errors import TetherError
from tether.limits import MAX_COLS, MAX_ROWS, valid_geometry
from tether.recevents import (
    Event,
    EventError,
    EventKind,
    chain_next,
    checkpoint_message,
    decode_events,
    genesis,
)
from tether.retransmit import RTO_MIN, backoff

REC_VERSION = 0x84  # 0x84: the OPEN's signature covers the grant's digest
PREFIX = struct.Struct(">BB16s")
INDEX = struct.Struct(">Q")
NONCE_LEN = 24
SIG_LEN = 64
OPEN_NONCE = bytes(NONCE_LEN)  # the open key encrypts exactly one message

REC_WINDOW = 4 << 20  # unacked recorded bytes before the recording holds output (an fsync per round trip)
OPTIONAL_BUFFER = 8 << 20  # what an optional recording buffers before it drops (a gap)
MAX_MESSAGE_DATA = 60 * 1024
CHECKPOINT_EVERY = 1024  # events
CHECKPOINT_SECONDS = 5.0


class RecType(IntEnum):
    OPEN = 1
    DATA = 2
    ACK = 3
    REFUSE = 4


class RecordingError(TetherError):
    """A recording message that is malformed, unauthentic or not for us."""


def _dh(secret: bytes, public: bytes) -> bytes:
    shared = dh(secret, public)
    if shared is None:
        raise RecordingError("low-order public key")
    return shared


def _hash(data: bytes) -> bytes:
    return personal_hash(b"tether-rec-open", data)


def _open_signed(grant_token: str, unsigned: bytes) -> bytes:
    """What the agent signs in an OPEN. With the grant's digest in it, a grant stored with
    the recording cannot be swapped for another session's of the same agent."""
    digest = personal_hash(b"tether-rec-grant", grant_token.encode())
    return b"tether-rec-open\x00" + digest + unsigned


def message_type(blob: bytes) -> tuple[RecType, bytes]:
    if len(blob) < PREFIX.size:
        raise RecordingError("recording message too short")
    version, kind, sid = PREFIX.unpack_from(blob)
    if version != REC_VERSION:
        raise RecordingError(f"unsupported recording version {version}")
    try:
        return RecType(kind), bytes(sid)
    except ValueError as exc:
        raise RecordingError(f"unknown recording message {kind}") from exc


def _ack_message(open_hash: bytes, prefix: bytes, stored: int) -> bytes:
    return b"tether-rec-ack\x00" + open_hash + prefix + INDEX.pack(stored)


def _refuse_message(open_hash: bytes, prefix: bytes, reason: bytes) -> bytes:
    return b"tether-rec-refuse\x00" + open_hash + prefix + reason


# ---------------------------------------------------------------------------------------
# Agent side
# ---------------------------------------------------------------------------------------


@dataclass
class _Pending:
    index: int
    encoded: bytes


@dataclass
class RecordingSender:
    """One session's recording, from the agent's side.

    `required` recordings never drop: the session holds output while `unacked_bytes`
    reaches the window. Optional ones drop past `OPTIONAL_BUFFER` and record a GAP.
    """

    sid: bytes
    signing_key: SigningKey
    recorder_x25519: bytes
    recorder_ed25519: bytes
    body: dict[str, Any]
    now: float
    rand: Random  # the OPEN's ephemeral key and every DATA nonce
    required: bool = True
    open_message: bytes = field(init=False)
    opened: bool = field(default=False, init=False)
    refused: str | None = field(default=None, init=False)
    acked: int = field(default=0, init=False)  # events durable at the recorder
    lost_bytes: int = field(default=0, init=False)
    resends: int = field(default=0, init=False)  # times the timer sent unacked events again

    def __post_init__(self) -> None:
        self._t0 = self.now
        self._verify = VerifyKey(self.recorder_ed25519)
        eph = self.rand(32)
        self._prefix_open = PREFIX.pack(REC_VERSION, RecType.OPEN, self.sid)
        shared = _dh(eph, self.recorder_x25519)
        head = self._prefix_open + x25519_public(eph)
        key = kdf(shared, b"tether-rec-body", head + self.recorder_x25519)
        sealed = aead_seal(key, OPEN_NONCE, head, dumps(self.body))
        unsigned = head + sealed
        signed = _open_signed(str(self.body["grant"]), unsigned)
        self.open_message = unsigned + self.signing_key.sign(signed).signature
        self.open_hash = _hash(self.open_message)
        self._key = kdf(shared, b"tether-rec-a2r", self.open_hash)
        self._prefix_data = PREFIX.pack(REC_VERSION, RecType.DATA, self.sid)
        self._prefix_ack = PREFIX.pack(REC_VERSION, RecType.ACK, self.sid)
        self._prefix_refuse = PREFIX.pack(REC_VERSION, RecType.REFUSE, self.sid)
        self._chain = genesis(self.sid)
        self._next = 0
        self._queue: deque[_Pending] = deque()  # recorded, not yet acked
        self._unacked = 0
        self._sent_upto = 0  # events below this were transmitted at least once
        self._rto = RTO_MIN
        self._deadline: float | None = self.now  # send OPEN at once
        self._last_heard = self.now
        self._since_checkpoint = 0
        self._last_checkpoint = self.now
        self._lost_events = 0
        self._ended = False

    # ----- recording -----

    @property
    def unacked_bytes(self) -> int:
        return self._unacked

    @property
    def next_index(self) -> int:
        return self._next

    @property
    def done(self) -> bool:
        """The end manifest is durable at the recorder."""
        return self._ended and self.acked >= self._next

    def _t_us(self, now: float) -> int:
        return max(0, int((now - self._t0) * 1e6))

    def _append(self, kind: EventKind, data: bytes, now: float) -> None:
        event = Event(self._next, self._t_us(now), kind, data)
        encoded = event.encode()
        if not self._queue:  # the recorder owes us nothing until now
            self._last_heard = max(self._last_heard, now)
        self._chain = chain_next(self._chain, encoded)
        self._queue.append(_Pending(self._next, encoded))
        self._unacked += len(encoded)
        self._next += 1
        self._since_checkpoint += 1

    def _sign_here(self, final: bool) -> bytes:
        return self.signing_key.sign(checkpoint_message(self.sid, self._next, self._chain, final)).signature

    def record(self, kind: EventKind, data: bytes, now: float) -> bool:
        """Add an event. False if an optional recording had to drop it (a GAP follows)."""
        if self._ended:
            return False
        if not self.required and self._unacked + len(data) > OPTIONAL_BUFFER:
            self.lost_bytes += len(data)
            self._lost_events += 1
            return False
        if self._lost_events:
            gap = {"lost_bytes": self.lost_bytes, "lost_events": self._lost_events}
            self._lost_events = 0
            self.lost_bytes = 0
            self._append(EventKind.GAP, dumps(gap), now)
        for start in range(0, max(len(data), 1), MAX_MESSAGE_DATA):
            self._append(kind, data[start:start + MAX_MESSAGE_DATA], now)
        if (self._since_checkpoint >= CHECKPOINT_EVERY
                or now - self._last_checkpoint >= CHECKPOINT_SECONDS):
            self.checkpoint(now)
        return True

    def checkpoint(self, now: float) -> None:
        self._append(EventKind.CHECKPOINT, self._sign_here(final=False), now)
        self._since_checkpoint = 0
        self._last_checkpoint = now

    def finish(self, now: float) -> None:
        """Append the signed end manifest; nothing can be recorded after it."""
        if self._ended:
            return
        self._append(EventKind.END, self._sign_here(final=True), now)
        self._ended = True

    # ----- the wire -----

    def take_outgoing(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        if self.refused is not None:
            return out
        if not self.opened:
            if self._deadline is not None and now >= self._deadline:
                out.append(self.open_message)
                self._arm(now)
            return out
        if self._deadline is not None and now >= self._deadline and self._sent_upto > self.acked:
            self._sent_upto = self.acked  # nothing heard in time: go back to the first unacked
            self._rto = backoff(self._rto)
            self._deadline = None
            self.resends += 1
        batch: list[bytes] = []
        size = 0
        first = self._sent_upto
        skip = self._sent_upto - self.acked
        for i, item in enumerate(self._queue):
            if i < skip:
                continue
            if batch and size + len(item.encoded) > MAX_MESSAGE_DATA:
                out.append(self._seal(first, batch))
                first, batch, size = item.index, [], 0
            batch.append(item.encoded)
            size += len(item.encoded)
        if batch:
            out.append(self._seal(first, batch))
        if out:
            self._sent_upto = self._next
            if self._deadline is None:
                self._deadline = now + self._rto
        return out

    def _seal(self, first: int, events: list[bytes]) -> bytes:
        head = self._prefix_data + INDEX.pack(first)
        nonce = self.rand(NONCE_LEN)
        body = aead_seal(self._key, nonce, head, b"".join(events))
        return head + nonce + body

    def _arm(self, now: float) -> None:
        self._deadline = now + self._rto
        self._rto = backoff(self._rto)

    def next_deadline(self) -> float | None:
        if self.refused is not None:
            return None
        if not self.opened or self._sent_upto > self.acked:
            return self._deadline
        return None

    def silent_for(self, now: float) -> float:
        """How long the recorder has owed us an answer (0 when nothing is outstanding)."""
        if self.opened and not self._queue:
            return 0.0
        return max(0.0, now - self._last_heard)

    def excuse_silence(self, now: float) -> None:
        """Our own link to the broker was down until `now`: the recorder could not have
        answered, so its debt starts again from here (a cut agent is not a stalled recorder)."""
        self._last_heard = max(self._last_heard, now)

    def resend_all(self, now: float) -> None:
        """After a reconnect: what was sent into the cut is lost, so the next
        `take_outgoing` sends everything unacked (or the OPEN) again now instead of after
        the back-off, which can be RTO_MAX away (seen: a session's last events left the
        agent up to 4 s after it was back, once the test's link was gone)."""
        self._sent_upto = self.acked
        self._rto = RTO_MIN
        self._deadline = now if not self.opened else None

    def on_message(self, blob: bytes, now: float) -> bool:
        """Handle an ACK or REFUSE. True if it was authentic and new."""
        try:
            kind, sid = message_type(blob)
        except RecordingError:
            return False
        if sid != self.sid:
            return False
        if kind == RecType.ACK and len(blob) == PREFIX.size + INDEX.size + SIG_LEN:
            stored = INDEX.unpack_from(blob, PREFIX.size)[0]
            sig = blob[PREFIX.size + INDEX.size:]
            try:
                self._verify.verify(_ack_message(self.open_hash, self._prefix_ack, stored), sig)
            except BadSignatureError:
                return False
            if stored > self._next:
                return False
            first = not self.opened
            self.opened = True
            if stored > self.acked or first:
                # Only progress answers what the recorder owes: one that re-acks an old count
                # while it cannot store (a disk that refuses writes) stays silent, so a required
                # session freezes and ends, and an optional one stops being paced.
                self._last_heard = now
            if stored > self.acked:
                while self._queue and self._queue[0].index < stored:
                    self._unacked -= len(self._queue.popleft().encoded)
                self.acked = stored
                self._rto = RTO_MIN
                self._deadline = now + self._rto if self._sent_upto > self.acked else None
                return True
            # An ack without progress (a duplicate, or an answer to a message that came out
            # of order) is not an answer to what is owed; the timer resends what was lost.
            if first:
                self._deadline = None
                self._rto = RTO_MIN
            return first
        if kind == RecType.REFUSE and len(blob) > PREFIX.size + SIG_LEN:
            sig = blob[PREFIX.size:PREFIX.size + SIG_LEN]
            reason = blob[PREFIX.size + SIG_LEN:]
            try:
                self._verify.verify(_refuse_message(self.open_hash, self._prefix_refuse, reason), sig)
            except BadSignatureError:
                return False
            self.refused = reason.decode("utf-8", "replace")
            self._last_heard = now
            return True
        return False


# ---------------------------------------------------------------------------------------
# Recorder side
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedRecording:
    """An authentic OPEN: the session it records and the key to its data."""

    sid: bytes
    grant: grants.Grant
    body: dict[str, Any]
    open_hash: bytes
    key: bytes


def open_recording(blob: bytes, *, recorder_name: str, x25519_secret: bytes,
                   authority_key: bytes, agent: str | None = None) -> OpenedRecording:
    """Check an OPEN: sealed to us, the grant signed by the authority, signed by its agent."""
    kind, sid = message_type(blob)
    if kind != RecType.OPEN or len(blob) < PREFIX.size + 32 + 16 + SIG_LEN:
        raise RecordingError("not a recording OPEN")
    head = blob[:PREFIX.size + 32]
    eph_pub = head[PREFIX.size:]
    unsigned, sig = blob[:-SIG_LEN], blob[-SIG_LEN:]
    shared = _dh(x25519_secret, eph_pub)
    key = kdf(shared, b"tether-rec-body", head + x25519_public(x25519_secret))
    plain = aead_open(key, OPEN_NONCE, head, unsigned[len(head):])
    if plain is None:
        raise RecordingError("recording OPEN is not sealed to this recorder")
    try:
        body = loads(plain)
    except ValueError as exc:
        raise RecordingError("recording OPEN body is not JSON") from exc
    if not isinstance(body, dict):
        raise RecordingError("recording OPEN body is not an object")
    token = str(body.get("grant", ""))
    try:
        grant = grants.decode(authority_key, token)
    except grants.GrantError as exc:
        raise RecordingError(f"recording OPEN carries a bad grant: {exc}") from exc
    if grant.recorder != recorder_name:
        raise RecordingError(f"the grant names recorder {grant.recorder!r}, not {recorder_name!r}")
    if agent is not None and grant.agent != agent:
        raise RecordingError(f"the grant is for agent {grant.agent!r}, not {agent!r}")
    if body.get("sid") != sid.hex():
        raise RecordingError("the OPEN body names another session")
    if not valid_geometry(body.get("cols"), body.get("rows")):
        raise RecordingError(f"the OPEN's terminal size is not 1..{MAX_COLS} columns by "
                             f"1..{MAX_ROWS} rows")
    try:
        VerifyKey(b64d(grant.agent_key)).verify(_open_signed(token, unsigned), sig)
    except (BadSignatureError, ValueError) as exc:
        raise RecordingError("recording OPEN is not signed by the grant's agent") from exc
    open_hash = _hash(blob)
    return OpenedRecording(sid, grant, body, open_hash, kdf(shared, b"tether-rec-a2r", open_hash))


def open_signer_matches(blob: bytes, sid: bytes, agent_key: bytes, grant_token: str) -> bool:
    """Offline, without the recorder's key: is this the OPEN of session `sid`, signed by
    `agent_key` for the grant `grant_token`?"""
    try:
        kind, got = message_type(blob)
        if len(blob) < PREFIX.size + SIG_LEN:
            return False
        VerifyKey(agent_key).verify(_open_signed(grant_token, blob[:-SIG_LEN]), blob[-SIG_LEN:])
    except (RecordingError, BadSignatureError, ValueError):
        return False
    return kind == RecType.OPEN and got == sid


@dataclass
class Ingested:
    """Events that are new, in order, each with its chain value."""

    events: list[tuple[Event, bytes]]
    chain_error: str | None = None


class RecordingReceiver:
    """One session at the recorder: decrypt, put in order, verify the chain."""

    def __init__(self, opened: OpenedRecording, stored: int = 0, chain: bytes | None = None,
                 chain_ok: bool = True) -> None:
        self.opened = opened
        self.stored = stored  # events durably stored (the caller says so via `stored_through`)
        self.expected = stored  # next index we accept
        self.chain = genesis(opened.sid) if chain is None else chain
        self.chain_ok = chain_ok
        self.ended = False
        self._verify = VerifyKey(b64d(opened.grant.agent_key))
        self._prefix_data = PREFIX.pack(REC_VERSION, RecType.DATA, opened.sid)
        self._prefix_ack = PREFIX.pack(REC_VERSION, RecType.ACK, opened.sid)
        self._prefix_refuse = PREFIX.pack(REC_VERSION, RecType.REFUSE, opened.sid)

    def on_data(self, blob: bytes) -> Ingested:
        """New events from a DATA message; empty if duplicate or out of order."""
        kind, sid = message_type(blob)
        if kind != RecType.DATA or sid != self.opened.sid:
            raise RecordingError("not a DATA message for this session")
        hlen = PREFIX.size + INDEX.size
        if len(blob) < hlen + NONCE_LEN + 16:
            raise RecordingError("recording DATA too short")
        head = blob[:hlen]
        first = INDEX.unpack_from(blob, PREFIX.size)[0]
        nonce = blob[hlen:hlen + NONCE_LEN]
        plain = aead_open(self.opened.key, nonce, head, blob[hlen + NONCE_LEN:])
        if plain is None:
            raise RecordingError("recording DATA failed authentication")
        if first > self.expected:
            return Ingested([])  # a message before this one was lost; our ack asks again
        try:
            events = decode_events(plain)
        except EventError as exc:
            raise RecordingError(f"recording DATA is malformed: {exc}") from exc
        out: list[tuple[Event, bytes]] = []
        error: str | None = None
        for i, event in enumerate(events):
            if event.index != first + i:
                raise RecordingError("recording DATA numbers its events out of order")
            if event.index < self.expected or self.ended:
                continue
            if event.kind in (EventKind.CHECKPOINT, EventKind.END):
                final = event.kind == EventKind.END
                msg = checkpoint_message(self.opened.sid, event.index, self.chain, final)
                try:
                    self._verify.verify(msg, event.data)
                except (BadSignatureError, ValueError):
                    if self.chain_ok:
                        error = f"the agent's signature at event {event.index} does not verify"
                    self.chain_ok = False
                self.ended = self.ended or final
            self.chain = chain_next(self.chain, event.encode())
            out.append((event, self.chain))
            self.expected = event.index + 1
        return Ingested(out, error)

    def ack(self, key: SigningKey) -> bytes:
        return self._prefix_ack + INDEX.pack(self.stored) + key.sign(
            _ack_message(self.opened.open_hash, self._prefix_ack, self.stored)).signature


def refuse(blob: bytes, key: SigningKey, reason: str) -> bytes | None:
    """A signed refusal of an OPEN we cannot accept (None if the OPEN is not even parseable)."""
    try:
        kind, sid = message_type(blob)
    except RecordingError:
        return None
    if kind != RecType.OPEN:
        return None
    prefix = PREFIX.pack(REC_VERSION, RecType.REFUSE, sid)
    text = reason.encode()[:512]
    return prefix + key.sign(_refuse_message(_hash(blob), prefix, text)).signature + text


def session_body(*, sid: bytes, grant_token: str, agent: str, client: str, cols: int, rows: int,
                 term: str | None, started: float) -> dict[str, Any]:
    """What the agent tells the recorder about a session, besides the grant."""
    return {"sid": sid.hex(), "grant": grant_token, "agent": agent, "client": client,
            "cols": cols, "rows": rows, "term": term,
            "started": started}
