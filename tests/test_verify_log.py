"""`verify_log` against a recorder-host attacker (issue 17): every way of rewriting a stored
recording that can be hidden from the unkeyed hash chain must fail verification.

A real recording is made with the sans-IO sender and receiver (agent side, recorder side),
so the log, OPEN and grant are exactly what the recorder stores; each test then edits the
store the way an attacker with write access would, recomputing chain values wherever the
attack needs them to match.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import pytest
from test_recording import AUTHORITY, NOW, RECORDER, handshake, pump, sender

from tether.encoding import dumps
from tether.recevents import (
    Event,
    EventKind,
    StoredEvent,
    chain_next,
    genesis,
    iter_log,
    log_record,
)
from tether.recorder.db import grant_columns
from tether.recorder.verify import Report, verify_log

AUTHORITY_KEY = bytes(AUTHORITY.verify_key)


@dataclass
class Stored:
    """What the recorder keeps of one session: log, OPEN, grant and row."""

    sid: str
    log: bytes
    open_message: bytes
    grant_token: str
    row: dict[str, Any]

    def verify(self, **changes: Any) -> Report:
        args: dict[str, Any] = {"grant_token": self.grant_token, "authority_key": AUTHORITY_KEY,
                                "open_message": self.open_message, "status": "closed",
                                "row": self.row}
        args.update(changes)
        log = args.pop("log", self.log)
        return verify_log(self.sid, log, **args)

    def records(self) -> list[StoredEvent]:
        return list(iter_log(self.log))


def record(*, user: str = "alice", command: list[str] | None = None, end: bool = True,
           tail: int = 0) -> Stored:
    """A session of outputs with two checkpoints, an EXIT and (if `end`) the end manifest;
    `tail` more outputs after the last checkpoint when it does not end."""
    s = sender(user=user, mode="exec" if command else "shell", command=command)
    r = handshake(s)
    stored: list[tuple[Event, bytes]] = []
    for i in range(6):
        s.record(EventKind.OUTPUT, b"line %d\r\n" % i, NOW + i * 0.1)
        if i in (2, 4):
            s.checkpoint(NOW + i * 0.1)
    if end:
        s.record(EventKind.EXIT, dumps({"code": 0, "signal": None}), NOW + 1)
        s.finish(NOW + 1)
    for i in range(tail):
        s.record(EventKind.OUTPUT, b"tail %d\r\n" % i, NOW + 2 + i * 0.1)
    stored += pump(s, r, NOW + 3)
    log = b"".join(log_record(e, c) for e, c in stored)
    grant = r.opened.grant
    row = {**grant_columns(grant), "grant_token": r.opened.body["grant"]}
    return Stored(s.sid.hex(), log, s.open_message, str(r.opened.body["grant"]), row)


def rebuild(sid: str, events: list[Event]) -> bytes:
    """A log of `events` with every chain value recomputed, as an attacker would."""
    chain = genesis(bytes.fromhex(sid))
    out = []
    for e in events:
        chain = chain_next(chain, e.encode())
        out.append(log_record(e, chain))
    return b"".join(out)


def renumbered(events: list[Event]) -> list[Event]:
    return [dataclasses.replace(e, index=i) for i, e in enumerate(events)]


def failed(report: Report, *words: str) -> bool:
    text = " | ".join(report.problems)
    return not report.ok and all(w in text for w in words)


@pytest.fixture(scope="module")
def session() -> Stored:
    return record()


def test_an_untouched_recording_verifies(session: Stored) -> None:
    report = session.verify()
    assert report.ok and report.ended and not report.problems, report
    assert report.checkpoints == 2 and report.signed_through == report.events - 1


def test_a_rewritten_event_with_recomputed_chain_fails(session: Stored) -> None:
    events = [r.event for r in session.records()]
    victim = next(i for i, e in enumerate(events) if e.data == b"line 3\r\n")
    events[victim] = dataclasses.replace(events[victim], data=b"rm -rf / \r\n")
    report = session.verify(log=rebuild(session.sid, events))
    # The chain matches (the attacker recomputed it): only the agent's signature shows it.
    assert not any("was changed" in p for p in report.problems)
    assert failed(report, "signature", "does not verify", f"after event {victim - 1}"), report


def test_reordered_events_fail(session: Stored) -> None:
    events = [r.event for r in session.records()]
    events[0], events[1] = events[1], events[0]
    report = session.verify(log=rebuild(session.sid, events))
    assert failed(report, "reorders"), report
    swapped = renumbered(events)  # contents swapped, numbers kept in order
    assert failed(session.verify(log=rebuild(session.sid, swapped)), "signature"), swapped


def test_events_after_the_end_manifest_fail(session: Stored) -> None:
    events = [r.event for r in session.records()]
    extra = Event(len(events), events[-1].t_us + 1, EventKind.OUTPUT, b"injected\r\n")
    report = session.verify(log=rebuild(session.sid, [*events, extra]))
    assert failed(report, "follows the end manifest"), report


@pytest.mark.parametrize("renumber", [False, True])
def test_a_removed_checkpoint_fails(session: Stored, renumber: bool) -> None:
    events = [r.event for r in session.records()]
    cut = [e for e in events if not (e.kind == EventKind.CHECKPOINT and e.index == 3)]
    assert len(cut) == len(events) - 1
    report = session.verify(log=rebuild(session.sid, renumbered(cut) if renumber else cut))
    assert failed(report, "signature" if renumber else "event 3 removed"), report


def test_rewritten_hashes_fail(session: Stored) -> None:
    log = bytearray(session.log)
    for rec in session.records():
        end = rec.offset + 21 + len(rec.event.data)
        log[end:end + 32] = os.urandom(32)
    report = session.verify(log=bytes(log))
    assert failed(report, "was changed"), report


def test_a_repeated_event_fails(session: Stored) -> None:
    events = [r.event for r in session.records()]
    repeated = [*events[:3], events[2], *events[3:]]
    report = session.verify(log=rebuild(session.sid, repeated))
    assert failed(report, "repeats or reorders"), report


def test_a_cut_tail_fails(session: Stored) -> None:
    records = session.records()
    report = session.verify(log=session.log[:records[-1].offset])
    assert failed(report, "tail is truncated"), report
    assert failed(session.verify(log=session.log[:-5]), "tail is truncated")


# ----- Hole 2: what the signatures are checked with -----


def test_without_the_grant_a_rewritten_recording_fails(session: Stored) -> None:
    events = [r.event for r in session.records()]
    events[1] = dataclasses.replace(events[1], data=b"nothing to see\r\n")
    report = session.verify(log=rebuild(session.sid, events), grant_token=None)
    assert failed(report, "grant is missing"), report
    assert not report.notes or all("signatures were not checked" not in n for n in report.notes)
    assert failed(session.verify(grant_token=""), "grant is missing")


def test_without_the_authority_key_verification_fails(session: Stored) -> None:
    report = session.verify(authority_key=None)
    assert failed(report, "no authority public key"), report


def test_a_grant_under_another_authority_key_fails(session: Stored) -> None:
    other = bytes(RECORDER.verify_key)
    assert failed(session.verify(authority_key=other), "grant does not verify")


def test_another_sessions_grant_fails() -> None:
    a, b = record(), record()
    # Same agent, same user, both grants authority-signed: the agent key they name is the
    # same, so only the OPEN's signature over the grant's digest tells them apart.
    report = a.verify(grant_token=b.grant_token, row={**a.row, "grant_id": b.row["grant_id"],
                                                    "client_key": b.row["client_key"]})
    assert failed(report, "stored OPEN", "not this session's"), report
    both = a.verify(grant_token=b.grant_token, open_message=b.open_message)
    assert failed(both, "stored OPEN"), both


def test_a_missing_or_foreign_open_fails(session: Stored) -> None:
    assert failed(session.verify(open_message=b""), "stored OPEN is missing")
    flipped = bytearray(session.open_message)
    flipped[40] ^= 1
    assert failed(session.verify(open_message=bytes(flipped)), "stored OPEN")


@pytest.mark.parametrize("column,value", [("user", "mallory"), ("run_as", "nobody"),
                                          ("reason", "routine"), ("command", '["true"]')])
def test_a_row_that_differs_from_its_grant_fails(session: Stored, column: str, value: str) -> None:
    report = session.verify(row={**session.row, column: value})
    assert failed(report, f"row's {column} differ"), report


def test_the_exec_command_is_bound_through_the_grant() -> None:
    stored = record(command=["sh", "-c", "echo hi"])
    assert stored.row["command"] == '["sh","-c","echo hi"]'
    assert stored.verify().ok
    assert failed(stored.verify(row={**stored.row, "command": '["ls"]'}), "command")


# ----- unfinished sessions -----


def test_an_aborted_sessions_unsigned_tail_is_not_verified() -> None:
    stored = record(end=False, tail=3)
    report = stored.verify(status="aborted")
    after = [r for r in stored.records() if r.event.index > report.signed_through]
    assert [r.event.data for r in after] == [b"line 5\r\n", b"tail 0\r\n", b"tail 1\r\n",
                                             b"tail 2\r\n"]
    assert not report.problems and not report.ok and report.unsigned == len(after), report
    assert any("after the agent's last signature" in n for n in report.notes), report.notes
    # An attacker who removes every signature and marks the row aborted gains nothing:
    events = [r.event for r in stored.records() if r.event.kind != EventKind.CHECKPOINT]
    stripped = stored.verify(log=rebuild(stored.sid, renumbered(events)), status="aborted")
    assert not stripped.ok and stripped.signed_through == -1 and stripped.unsigned == len(events)


def test_a_closed_session_cut_and_marked_aborted_is_not_verified(session: Stored) -> None:
    records = session.records()
    report = session.verify(log=session.log[:records[-2].offset], status="aborted")
    assert not report.ok and report.unsigned == 1, report  # the EXIT after the last checkpoint



def test_a_cut_at_a_checkpoint_is_signed_but_not_ended(session: Stored) -> None:
    """What verify cannot tell from an honest abort: the cut is at a signature. Everything
    shown is authentic, and the report says there is no end manifest."""
    records = session.records()
    last_checkpoint = max(r.event.index for r in records if r.event.kind == EventKind.CHECKPOINT)
    report = session.verify(log=session.log[:records[last_checkpoint + 1].offset], status="aborted")
    assert report.ok and not report.ended and report.unsigned == 0, report
    assert any("aborted" in n for n in report.notes), report.notes
    closed = session.verify(log=session.log[:records[last_checkpoint + 1].offset])
    assert failed(closed, "without the agent's signed end manifest"), closed


def test_a_changed_byte_is_pinned_to_its_event_alone(session: Stored) -> None:
    """The walk carries on from the stored chain value, so one changed byte (hashes not
    recomputed) is reported at its event only, and the later signatures still verify."""
    records = session.records()
    victim = next(r for r in records if r.event.data == b"line 1\r\n")
    log = bytearray(session.log)
    log[victim.offset + 21 + len(victim.event.data) - 3] ^= 0x01  # "line 1" -> "line 0"
    report = session.verify(log=bytes(log))
    assert report.problems == [p for p in report.problems if f"event {victim.event.index} " in p]
    assert len(report.problems) == 1 and "was changed" in report.problems[0], report
    assert report.signed_through == report.events - 1


# ----- what the report says, exactly (mutation testing: the messages name the events) -----


def test_removed_events_are_named_and_nothing_else_is_reported(session: Stored) -> None:
    """Records cut out of the log as stored (their neighbours' chain values untouched)."""
    records = session.records()

    def without(*indexes: int) -> bytes:
        spans = [(r.offset, r.offset + 21 + len(r.event.data) + 32) for r in records
                 if r.event.index in indexes]
        log = session.log
        for a, b in reversed(spans):
            log = log[:a] + log[b:]
        return log

    # The gap is the only problem: the next event's chain is not compared (it chains from
    # the removed one) and the later signatures cover the stored chain, which is intact.
    report = session.verify(log=without(1))
    assert report.problems == [f"event 1 removed: the log goes from event 0 to event 2 at "
                               f"byte {records[1].offset}"], report
    report = session.verify(log=without(1, 2))
    assert report.problems == [f"events 1-2 removed: the log goes from event 0 to event 3 at "
                               f"byte {records[1].offset}"], report


def test_a_cut_inside_a_record_names_the_last_whole_event(session: Stored) -> None:
    records = session.records()
    report = session.verify(log=session.log[:records[3].offset + 5])
    assert any(f"inside the record after event 2, at byte {records[3].offset}" in p
               for p in report.problems), report
    start = session.verify(log=session.log[:5])
    assert any("after the start, at byte 0" in p for p in start.problems), start


def test_a_corrupt_record_names_the_event_before_it(session: Stored) -> None:
    records = session.records()
    log = bytearray(session.log)
    log[records[3].offset + 16] = 200  # the kind byte: no such kind
    report = session.verify(log=bytes(log))
    assert any(p.startswith("the log is corrupt after event 2:") for p in report.problems), report


@pytest.mark.parametrize("tail", [0, 1, 3])
def test_the_unsigned_tail_note_names_its_events(tail: int) -> None:
    stored = record(end=False, tail=tail)
    report = stored.verify(status="aborted")
    first, last = report.signed_through + 1, report.events - 1
    assert report.unsigned == last - first + 1 == tail + 1  # line 5 and the tail
    assert any(n.startswith(f"events {first}-{last} come after the agent's last signature")
               for n in report.notes), report.notes


def test_no_unsigned_tail_note_when_the_cut_is_at_a_signature(session: Stored) -> None:
    records = session.records()
    last_checkpoint = max(r.event.index for r in records if r.event.kind == EventKind.CHECKPOINT)
    report = session.verify(log=session.log[:records[last_checkpoint + 1].offset], status="aborted")
    assert report.unsigned == 0
    assert not any("come after" in n for n in report.notes), report.notes


def test_a_missing_end_manifest_names_the_last_event_and_byte(session: Stored) -> None:
    records = session.records()
    cut = records[5].offset
    report = session.verify(log=session.log[:cut])
    assert any(p.startswith(f"the tail is truncated: the log ends after event 4 (byte {cut}) "
                            "without the agent's signed end manifest") for p in report.problems), report
    short = session.verify(log=session.log[:cut], stored_events=len(records))
    assert any(p.endswith(f"after event 4 (byte {cut}), but the recorder stored "
                          f"{len(records)} events") for p in short.problems), short
    empty = session.verify(log=b"")
    assert any("the log ends after no events" in p for p in empty.problems), empty


def test_a_stored_count_equal_to_the_log_is_not_a_truncation(session: Stored) -> None:
    records = session.records()
    assert session.verify(stored_events=len(records)).ok
    last_checkpoint = max(r.event.index for r in records if r.event.kind == EventKind.CHECKPOINT)
    cut = session.verify(log=session.log[:records[last_checkpoint + 1].offset], status="aborted",
                         stored_events=last_checkpoint + 1)
    assert cut.ok and not cut.problems, cut


def test_the_options_are_keyword_only(session: Stored) -> None:
    """So a caller cannot swap the grant token and the authority key."""
    with pytest.raises(TypeError):
        verify_log(session.sid, session.log, session.grant_token, AUTHORITY_KEY,  # type: ignore[misc]
                   session.open_message)
