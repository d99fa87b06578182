"""Offline verification of a stored recording: where exactly its hash chain breaks.

Each log record stores its chain value, so a changed byte is pinned to its event: the
recomputed value differs from the stored one. A removed event shows as a gap in the
numbering. The chain itself is unkeyed (anyone who can write the store can recompute it),
so what makes a recording evidence is the agent's signatures: its checkpoints and end
manifest over the chain, and its OPEN over the session id and the grant's digest. The
agent's key comes from the grant, which the authority signed. Anything that prevents
checking them (no grant, no authority key, a missing OPEN) is a failure, never a note:
otherwise a rewritten recording would pass once its grant was removed. A cut tail shows
as a partial last record, or a missing end manifest for a session that ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tether import grants
from tether.encoding import b64d
from tether.recevents import (
    EventError,
    EventKind,
    StoredEvent,
    TruncatedRecord,
    chain_next,
    checkpoint_message,
    genesis,
    iter_log,
)
from tether.recorder.db import grant_columns
from tether.recording import open_signer_matches


@dataclass
class Report:
    sid: str
    events: int = 0
    checkpoints: int = 0
    ended: bool = False
    signed_through: int = -1  # the last event an agent signature covers
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every stored event is intact and covered by an agent signature."""
        return not self.problems and self.unsigned == 0

    @property
    def unsigned(self) -> int:
        """Events after the last signature (an aborted or live session's tail): only the
        unkeyed chain covers them, so they are not verified, though not shown changed."""
        return self.events - 1 - self.signed_through


def verify_log(sid: str, data: bytes, *, grant_token: str | None, authority_key: bytes | None,
               open_message: bytes, status: str = "closed", stored_events: int | None = None,
               row: Mapping[str, object] | None = None) -> Report:
    """Check a session's log, OPEN and grant; `row` is the stored session row, whose
    grant-derived columns (user, agent, run-as, ...) must match the grant."""
    report = Report(sid)
    sid_bytes = bytes.fromhex(sid)
    agent_key = _agent_key(report, sid_bytes, grant_token, authority_key, open_message, row)
    expected = _walk(report, sid_bytes, data, agent_key)
    if expected is not None:
        _check_tail(report, expected, len(data), status, stored_events)
    return report


def _agent_key(report: Report, sid: bytes, grant_token: str | None, authority_key: bytes | None,
               open_message: bytes, row: Mapping[str, object] | None) -> VerifyKey | None:
    """The key that must have signed this recording, from its authority-signed grant."""
    if authority_key is None:
        report.problems.append("no authority public key to check the session's grant with: "
                               "the agent's signatures were not checked")
        return None
    if not grant_token:
        report.problems.append("the session's grant is missing from the store: without it the "
                               "agent's key, and so its signatures, cannot be checked")
        return None
    try:
        grant = grants.decode(authority_key, grant_token)
        agent_key = VerifyKey(b64d(grant.agent_key))
    except (grants.GrantError, ValueError) as exc:
        report.problems.append(f"the session's grant does not verify under the authority key: {exc}")
        return None
    if not open_signer_matches(open_message, sid, bytes(agent_key), grant_token):
        what = "missing" if not open_message else "not this session's, for this grant"
        report.problems.append(f"the stored OPEN is {what}: the agent signs the session id "
                               "and its grant there, so this grant is not shown to be the session's")
    if row is not None:
        changed = [k for k, v in grant_columns(grant).items() if k in row and row[k] != v]
        if changed:
            report.problems.append(f"the session row's {', '.join(changed)} differ from its grant's")
    return agent_key


def _walk(report: Report, sid: bytes, data: bytes, agent_key: VerifyKey | None) -> int | None:
    """Check every record; the next event number, or None if the log ends in a broken one."""
    chain = genesis(sid)
    expected = 0
    try:
        for rec in iter_log(data):
            ev = rec.event
            where = f"event {ev.index} ({ev.kind.name.lower()}, t={ev.t:.3f}s, byte {rec.offset})"
            if report.ended:
                report.problems.append(f"{where} follows the end manifest")
            gap = _numbering(report, rec, expected, where)
            computed = chain_next(chain, ev.encode())
            if not gap and computed != rec.chain:
                report.problems.append(f"{where} was changed: its bytes do not match the hash chain")
            if ev.kind in (EventKind.CHECKPOINT, EventKind.END) and not gap:
                _signature(report, sid, rec, chain, agent_key, where)
            if ev.kind == EventKind.CHECKPOINT:
                report.checkpoints += 1
            if ev.kind == EventKind.END:
                report.ended = True
            chain = rec.chain  # carry on from what the recorder stored, to find more
            expected = max(expected, ev.index + 1)
            report.events += 1
    except TruncatedRecord as exc:
        after = f"event {expected - 1}" if expected else "the start"
        report.problems.append(f"the tail is truncated: the log ends inside the record after "
                               f"{after}, at byte {exc.offset}")
        return None
    except EventError as exc:
        report.problems.append(f"the log is corrupt after event {expected - 1}: {exc}")
        return None
    return expected


def _numbering(report: Report, rec: StoredEvent, expected: int, where: str) -> bool:
    """Events are numbered 0, 1, 2... in the log; True if some were removed before `rec`."""
    index = rec.event.index
    if index > expected:
        missing = f"event {expected}" if index == expected + 1 else f"events {expected}-{index - 1}"
        report.problems.append(f"{missing} removed: the log goes from event {expected - 1} "
                               f"to event {index} at byte {rec.offset}")
        return True
    if index < expected:
        report.problems.append(f"{where} repeats or reorders an earlier event")
    return False


def _signature(report: Report, sid: bytes, rec: StoredEvent, chain: bytes,
               agent_key: VerifyKey | None, where: str) -> None:
    if agent_key is None:
        return  # already a problem: no key to check it with
    ev = rec.event
    try:
        agent_key.verify(checkpoint_message(sid, ev.index, chain, ev.kind == EventKind.END), ev.data)
    except (BadSignatureError, ValueError):
        report.problems.append(f"the agent's signature at {where} does not verify: events after "
                               f"event {report.signed_through} were altered and their hashes "
                               "rewritten")
        return
    report.signed_through = ev.index


def _check_tail(report: Report, expected: int, size: int, status: str,
                stored_events: int | None) -> None:
    if report.ended:
        if stored_events is not None and stored_events > expected:
            report.problems.append(f"the tail is truncated: {expected} of {stored_events} events remain")
        return
    last = f"event {expected - 1} (byte {size})" if expected else "no events"
    if stored_events is not None and stored_events > expected:
        report.problems.append(f"the tail is truncated: the log ends after {last}, but the "
                               f"recorder stored {stored_events} events")
    elif status == "closed":
        report.problems.append(f"the tail is truncated: the log ends after {last} without the "
                               "agent's signed end manifest")
    else:
        why = ("the session was aborted (its agent went offline)" if status == "aborted"
               else "the session is still live")
        report.notes.append(f"no end manifest: {why}")
        if report.unsigned > 0:
            report.notes.append(f"events {report.signed_through + 1}-{expected - 1} come after "
                                "the agent's last signature: only the unkeyed hash chain, which "
                                "whoever can write the store can recompute, covers them")
