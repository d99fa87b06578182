"""Hole 2 on real recorded sessions: `tether verify` and the console's verify query fail a
recording rewritten on the recorder host, whatever else the attacker removes or swaps.

Before: with the stored grant set to NULL, or no authority key found, every signature
check became a "note" and the rewritten recording was "intact" (exit 0); two sessions'
grants could be swapped undetected. Each test edits a copy of the real store the way a
recorder-host attacker would.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from stack import Stack

from tether.edge.keys import Identity
from tether.encoding import b64d
from tether.recevents import EventKind, chain_next, genesis, iter_log, log_record
from tether.recorder.queries import QueryWorker


def _exec(stack: Stack, *argv: str, reason: str | None = None) -> dict[str, Any]:
    start = time.time()
    extra = ["--reason", reason] if reason else []
    r = stack.tether("run", *extra, "local", "--", *argv)
    assert r.returncode == 0, r.stderr
    return stack.wait_recorded("closed", after=start)


def _copy(stack: Stack, name: str) -> Path:
    copy = stack.root / f"store-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(stack.home.recordings, copy)
    return copy


def _sql(store: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(store / "index.db")
    try:
        db.execute(statement, params)
        db.commit()
    finally:
        db.close()


def _row(store: Path, sid: str) -> dict[str, Any]:
    db = sqlite3.connect(store / "index.db")
    db.row_factory = sqlite3.Row
    try:
        return dict(db.execute("SELECT * FROM sessions WHERE sid=?", (sid,)).fetchone())
    finally:
        db.close()


def _rewrite(store: Path, sid: str, old: bytes, new: bytes) -> None:
    """Replace output text in the log and recompute every chain value, as an attacker can."""
    path = store / "logs" / f"{sid}.log"
    chain = genesis(bytes.fromhex(sid))
    out, changed = [], False
    for rec in iter_log(path.read_bytes()):
        ev = rec.event
        if ev.kind == EventKind.OUTPUT and old in ev.data:
            ev, changed = dataclasses.replace(ev, data=ev.data.replace(old, new)), True
        chain = chain_next(chain, ev.encode())
        out.append(log_record(ev, chain))
    assert changed, f"{old!r} is not in the recording"
    path.write_bytes(b"".join(out))
    _sql(store, "UPDATE sessions SET log_bytes=? WHERE sid=?", len(b"".join(out)), sid)


def _authority_key(stack: Stack) -> bytes:
    return b64d(Identity.load(stack.home.authority_identity).authority["ed25519"])


def test_a_rewritten_recording_without_its_grant_fails(stack: Stack) -> None:
    row = _exec(stack, "sh", "-c", "echo exfiltrated-secrets; echo done")
    sid = row["sid"]
    store = _copy(stack, "nogrant")
    _rewrite(store, sid, b"exfiltrated-secrets", b"routine-maintenance")
    v = stack.tether("verify", sid, "--store", str(store))
    assert v.returncode == 1 and b"does not verify" in v.stdout, v.stdout  # the signature
    _sql(store, "UPDATE sessions SET grant_token=NULL WHERE sid=?", sid)
    v = stack.tether("verify", sid, "--store", str(store))
    assert v.returncode == 1, v.stdout
    assert b"grant is missing" in v.stdout and b"verification FAILED" in v.stdout, v.stdout
    assert b"intact" not in v.stdout and b"note: no authority key or grant" not in v.stdout
    # What the console's Sessions page shows comes from the same check over MQTT.
    answer = QueryWorker(store, _authority_key(stack)).answer("verify", {"sid": sid})
    assert answer["ok"] and answer["result"]["ok"] is False, answer
    assert any("grant is missing" in p for p in answer["result"]["problems"]), answer
    assert stack.tether("verify", sid).returncode == 0  # the real store is untouched


def test_without_an_authority_key_verification_fails(stack: Stack) -> None:
    row = _exec(stack, "echo", "keyless")
    sid = row["sid"]
    # The documented production layout: the recorder identity is not under TETHER_HOME.
    elsewhere = stack.root / "empty-home"
    elsewhere.mkdir(exist_ok=True)
    env = dict(stack.env, TETHER_HOME=str(elsewhere))
    v = stack.tether("verify", sid, "--store", str(stack.home.recordings), env=env)
    assert v.returncode == 1, v.stdout
    assert b"no authority public key" in v.stdout and b"--authority-key" in v.stdout, v.stdout
    key = Identity.load(stack.home.authority_identity).authority["ed25519"]
    v = stack.tether("verify", sid, "--store", str(stack.home.recordings), "--authority-key", key,
                     env=env)
    assert v.returncode == 0 and b"verified: intact" in v.stdout, v.stdout
    bad = stack.tether("verify", sid, "--store", str(stack.home.recordings), "--authority-key",
                       "not-a-key", env=env)
    assert bad.returncode == 255 and b"--authority-key must be" in bad.stderr, bad.stderr
    assert b"Traceback" not in bad.stderr


def test_swapped_grants_of_two_sessions_fail(stack: Stack) -> None:
    a = _exec(stack, "echo", "session-a", reason="INC-A")
    b = _exec(stack, "echo", "session-b", reason="INC-B")
    store = _copy(stack, "swapped")
    columns = ("grant_token", "grant_id", "client_key", "reason", "user", "run_as", "command")
    rows = {s: _row(store, s) for s in (a["sid"], b["sid"])}
    for sid, other in ((a["sid"], b["sid"]), (b["sid"], a["sid"])):
        sets = ", ".join(f"{c}=?" for c in columns)
        _sql(store, f"UPDATE sessions SET {sets} WHERE sid=?", *(rows[other][c] for c in columns), sid)
    for sid in (a["sid"], b["sid"]):
        v = stack.tether("verify", sid, "--store", str(store))
        assert v.returncode == 1 and b"stored OPEN is not this session's" in v.stdout, v.stdout
    # Swapping only the grant leaves the row contradicting it.
    store = _copy(stack, "swapped-grant")
    _sql(store, "UPDATE sessions SET grant_token=? WHERE sid=?", rows[b["sid"]]["grant_token"], a["sid"])
    v = stack.tether("verify", a["sid"], "--store", str(store))
    assert v.returncode == 1 and b"differ from its grant's" in v.stdout, v.stdout
