"""Offline verification of a stored recording: where exactly its hash chain breaks.

Each log record stores its chain value, so a changed byte is pinned to its event: the
recomputed value differs from the stored one. A removed event shows as a gap in the
numbering. Rewritten chain values are caught by the agent's signed checkpoints, whose key
comes from the authority-signed grant. A cut tail shows as a partial last record, or a
missing end manifest for a session that ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tether import grants
from tether.encoding import b64d
from tether.recevents import (
    EventError,
    EventKind,
    TruncatedRecord,
    chain_next,
    checkpoint_message,
    genesis,
    iter_log,
)
from tether.recording import open_signer_matches


@dataclass
class Report:
    sid: str
    events: int = 0
    checkpoints: int = 0
    ended: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(sid: str, data: bytes, *, grant_token: str | None, authority_key: bytes | None,
               status: str = "closed", stored_events: int | None = None,
               open_message: bytes | None = None) -> Report:
    report = Report(sid)
    sid_bytes = bytes.fromhex(sid)
    agent_key: VerifyKey | None = None
    if grant_token and authority_key:
        try:
            grant = grants.decode(authority_key, grant_token)
            agent_key = VerifyKey(b64d(grant.agent_key))
        except (grants.GrantError, ValueError) as exc:
            report.problems.append(f"the session's grant does not verify: {exc}")
        if agent_key is not None and open_message is not None and not open_signer_matches(
                open_message, sid_bytes, bytes(agent_key)):
            report.problems.append("the stored OPEN is not this session's, signed by the agent "
                                   "the grant names")
    else:
        report.notes.append("no authority key or grant: signatures were not checked")
    chain = genesis(sid_bytes)
    expected = 0
    last_signed = -1
    try:
        for rec in iter_log(data):
            ev = rec.event
            gap = False
            where = f"event {ev.index} ({ev.kind.name.lower()}, t={ev.t:.3f}s, byte {rec.offset})"
            if report.ended:
                report.problems.append(f"{where} follows the end manifest")
            if ev.index > expected:
                missing = (f"event {expected}" if ev.index == expected + 1
                           else f"events {expected}-{ev.index - 1}")
                report.problems.append(f"{missing} removed: the log goes from event {expected - 1} "
                                       f"to event {ev.index} at byte {rec.offset}")
                gap = True
            elif ev.index < expected:
                report.problems.append(f"{where} repeats or reorders an earlier event")
            before = chain
            computed = chain_next(chain, ev.encode())
            if gap:
                computed = rec.chain  # the removed events' chain is unknown: resynchronise
            elif computed != rec.chain:
                report.problems.append(f"{where} was changed: its bytes do not match the hash chain")
                computed = rec.chain  # carry on from what the recorder stored, to find more
            if ev.kind in (EventKind.CHECKPOINT, EventKind.END) and agent_key is not None and not gap:
                msg = checkpoint_message(sid_bytes, ev.index, before, ev.kind == EventKind.END)
                try:
                    agent_key.verify(msg, ev.data)
                    last_signed = ev.index
                except (BadSignatureError, ValueError):
                    report.problems.append(
                        f"the agent's signature at {where} does not verify: events after event "
                        f"{last_signed} were altered and their hashes rewritten")
            if ev.kind == EventKind.CHECKPOINT:
                report.checkpoints += 1
            if ev.kind == EventKind.END:
                report.ended = True
            chain = computed
            expected = max(expected, ev.index + 1)
            report.events += 1
    except TruncatedRecord as exc:
        after = f"event {expected - 1}" if expected else "the start"
        report.problems.append(f"the tail is truncated: the log ends inside the record after "
                               f"{after}, at byte {exc.offset}")
        return report
    except EventError as exc:
        report.problems.append(f"the log is corrupt after event {expected - 1}: {exc}")
        return report
    if not report.ended:
        last = f"event {expected - 1} (byte {len(data)})" if expected else "no events"
        if stored_events is not None and stored_events > expected:
            report.problems.append(f"the tail is truncated: the log ends after {last}, but the "
                                   f"recorder stored {stored_events} events")
        elif status == "closed":
            report.problems.append(f"the tail is truncated: the log ends after {last} without the "
                                   "agent's signed end manifest")
        elif status == "aborted":
            report.notes.append(f"no end manifest: the session was aborted (its agent went "
                                f"offline); signed through event {last_signed}")
        else:
            report.notes.append(f"the session is still live; signed through event {last_signed}")
    elif stored_events is not None and stored_events > expected:
        report.problems.append(f"the tail is truncated: {expected} of {stored_events} events remain")
    return report

