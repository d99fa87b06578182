"""The index worker over hand-made stores: real logs, real SQLite, real PTY captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.recevents import Event, EventKind, chain_next, genesis, log_record
from tether.recorder import db as rdb
from tether.recorder.indexer import IndexWorker
from tether.recorder.search import search

STARTED = 1_700_000_000.0


def log_bytes(sid: str, events: list[tuple[float, EventKind, bytes]]) -> tuple[bytes, list[int]]:
    chain = genesis(bytes.fromhex(sid))
    out, offsets = [], []
    pos = 0
    for i, (t, kind, data) in enumerate(events):
        ev = Event(i, int(t * 1e6), kind, data)
        chain = chain_next(chain, ev.encode())
        rec = log_record(ev, chain)
        out.append(rec)
        offsets.append(pos)
        pos += len(rec)
    return b"".join(out), offsets


def add_session(store: Path, sid: str, events: list[tuple[float, EventKind, bytes]], *,
                status: str = "closed", durable: int | None = None, cols: int = 80,
                rows: int = 24, agent: str = "web-1", user: str = "alice") -> bytes:
    blob, _ = log_bytes(sid, events)
    db = rdb.connect(store)
    rdb.log_path(store, sid).write_bytes(blob)
    db.execute(
        "INSERT OR REPLACE INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key,"
        " client, recording, started, log_bytes, status, cols, rows)"
        " VALUES (?, ?, ?, 'root', 'shell', 'g', 'k', 'c', 'required', ?, ?, ?, ?, ?)",
        (sid, agent, user, STARTED, len(blob) if durable is None else durable, status, cols, rows))
    db.close()
    return blob


def update_session(store: Path, sid: str, **values: object) -> None:
    db = rdb.connect(store)
    for k, v in values.items():
        db.execute(f"UPDATE sessions SET {k} = ? WHERE sid = ?", (v, sid))
    db.close()


def output_events(chunks: list[tuple[float, bytes]]) -> list[tuple[float, EventKind, bytes]]:
    return [(t, EventKind.OUTPUT, data) for t, data in chunks]


@pytest.fixture(scope="module")
def seq_capture() -> list[tuple[float, bytes]]:
    from bench.record_corpus import Capture, run_pty

    cap = Capture(["sh", "-c", "seq 1 50000; echo CANARY-LINE-4242; seq 50001 100000"])
    return run_pty(cap, 80, 24)


SID1 = "a1" * 16
SID2 = "b2" * 16


def test_canary_scrolled_off_during_seq_is_found_with_its_t_and_offset(
        tmp_path: Path, seq_capture: list[tuple[float, bytes]]) -> None:
    add_session(tmp_path, SID1, output_events(seq_capture))
    w = IndexWorker(tmp_path)
    w.drain()
    hits = search(w.db, "canary-line-42")
    assert len(hits) == 1
    hit = hits[0]
    assert hit.sid == SID1 and hit.kind == "scroll" and hit.text == "CANARY-LINE-4242"
    assert hit.user == "alice" and hit.agent == "web-1"
    out = b"".join(d for _, d in seq_capture)
    canary = out.index(b"CANARY")
    starts, pos = {}, 0
    for t, data in seq_capture:
        starts[pos] = (t, data)
        pos += len(data)
    t, data = starts[hit.offset]  # the hit points at an event's start...
    assert hit.t == pytest.approx(t, abs=1e-6) and hit.wall == pytest.approx(STARTED + t)
    assert hit.offset <= canary + 24 * 7 and hit.offset + len(data) > canary  # ...that pushed it off
    assert search(w.db, "99999")[0].text == "99999"
    (finished,) = w.db.execute("SELECT finished FROM index_progress WHERE sid = ?", (SID1,)).fetchone()
    assert finished == 1


def test_restart_resumes_without_duplicate_rows(tmp_path: Path, seq_capture: list[tuple[float, bytes]]) -> None:
    events = output_events(seq_capture)
    blob, offsets = log_bytes(SID1, events)
    half = offsets[len(offsets) // 2]
    add_session(tmp_path, SID1, events, status="live", durable=half)
    w = IndexWorker(tmp_path)
    w.drain()
    first = w.db.execute("SELECT count(*) FROM text_rows").fetchone()[0]
    assert first > 1000
    w.stop()
    update_session(tmp_path, SID1, log_bytes=len(blob), status="closed")
    w2 = IndexWorker(tmp_path)
    w2.drain()
    rows = w2.db.execute("SELECT kind, text, t, offset FROM text_rows WHERE sid = ?"
                         " ORDER BY id", (SID1,)).fetchall()
    assert len(rows) == len(set(rows))
    ref = tmp_path / "ref"
    add_session(ref, SID1, events)
    w3 = IndexWorker(ref)
    w3.drain()
    once = w3.db.execute("SELECT kind, text, t, offset FROM text_rows ORDER BY id").fetchall()
    # The same rows, except that the first worker may have indexed the screen when the
    # live tail went quiet (wall clock), which re-feeding does not repeat.
    assert {r[1] for r in once} <= {r[1] for r in rows}
    assert len(once) <= len(rows) <= len(once) + 24
    assert len(search(w2.db, "CANARY-LINE")) == 1


def test_top_like_redraw_gets_periodic_deduplicated_snapshots(tmp_path: Path) -> None:
    events = []
    for i in range(200):  # 20 s of a full-screen redraw every 0.1 s: never quiet
        frame = (f"\x1b[H\x1b[2Jtop - 12:00:{i // 10:02d} up 3 days, load {i % 7}.{i % 10}\r\n"
                 f"  PID USER   %CPU COMMAND\r\n    1 root   {i % 13:4d} busy\r\n"
                 f"    2 root      0 STATIC-PROCESS-NAME\r\n")
        events.append((i * 0.1, EventKind.OUTPUT, frame.encode()))
    add_session(tmp_path, SID1, events)
    w = IndexWorker(tmp_path)
    w.drain()
    static = w.db.execute("SELECT count(*) FROM text_rows WHERE text LIKE '%STATIC-PROCESS%'").fetchone()[0]
    assert static == 1  # the same text is not indexed again
    headers = w.db.execute("SELECT t FROM text_rows WHERE text LIKE 'top - %' ORDER BY t").fetchall()
    assert 15 <= len(headers) <= 25  # about every second (SNAPSHOT_EVERY), not every frame
    assert search(w.db, "12:00:19")  # the final screen is indexed at the end


def test_vim_content_is_indexed_but_not_left_on_the_shell_screen(tmp_path: Path) -> None:
    from bench.record_corpus import captures, run_pty

    chunks = run_pty(captures()["vim"](), 80, 24)
    events = output_events([(0.0, b"$ vim version9.txt\r\n")])
    events += output_events([(0.1 + t, d) for t, d in chunks])
    end = 0.2 + chunks[-1][0]
    events += output_events([(end, b"$ echo after-vim\r\nafter-vim\r\n$ ")])
    add_session(tmp_path, SID1, events)
    w = IndexWorker(tmp_path)
    w.drain()
    from tether.recorder.screen import Terminal
    from tether.recorder.textindex import SessionIndexer

    vim = Terminal(80, 24)  # what vim showed just before it left the alternate screen
    raw = b"".join(d for _, d in chunks)
    vim.feed(raw[:raw.rindex(b"\x1b[?1049l")])
    assert vim.screen.alternate
    last_rows = [r.strip() for r in vim.display[:20] if len(r.strip()) > 20]
    assert last_rows
    for row in last_rows[:5]:
        hits = search(w.db, row)
        assert hits and hits[0].kind == "screen" and hits[0].t < end, row
    ix = SessionIndexer(w.db, SID2, 80, 24)
    pos = 0
    for t, _, data in events:
        ix.output(t, pos, data)
        pos += len(data)
    shell = "\n".join(ix.terminal.display)
    assert not any(r in shell for r in last_rows) and "after-vim" in shell


def test_cjk_and_emoji_sequences_are_searchable(tmp_path: Path) -> None:
    from bench.record_corpus import CJK_TEXT

    text = CJK_TEXT.replace("\n", "\r\n").encode()
    add_session(tmp_path, SID1, output_events([(0.0, text), (1.0, text * 30)]))
    w = IndexWorker(tmp_path)
    w.drain()
    for needle in ["重建测试", "ひらがな", "텍스트", "❤️ heart", "👨‍👩‍👧 family", "zero\u200bwidth",
                   "全角ＡＢＣ"]:
        assert search(w.db, needle), needle


def test_a_bad_session_is_marked_and_the_others_go_on(tmp_path: Path) -> None:
    add_session(tmp_path, SID1, output_events([(0.0, b"good session text\r\n")]))
    db = rdb.connect(tmp_path)
    rdb.log_path(tmp_path, SID2).write_bytes(b"\x00" * 16 + b"\x63" + b"\x00" * 60)
    db.execute("INSERT INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key, client,"
               " recording, started, log_bytes, status) VALUES (?, 'a', 'u', 'r', 'shell', 'g', 'k',"
               " 'c', 'required', ?, 77, 'closed')", (SID2, STARTED))
    w = IndexWorker(tmp_path)
    w.drain()
    assert search(w.db, "good session")
    (error,) = w.db.execute("SELECT error FROM index_progress WHERE sid = ?", (SID2,)).fetchone()
    assert "unknown kind" in error


def test_live_session_in_the_worker_thread(tmp_path: Path) -> None:
    first = [(0.0, EventKind.OUTPUT, b"$ echo live-marker-one\r\nlive-marker-one\r\n$ ")]
    more = [*first, (1.0, EventKind.INPUT, b"x"), (1.5, EventKind.OUTPUT, b"x\r\nsecond-marker-two\r\n$ ")]
    blob, offsets = log_bytes(SID1, more)
    add_session(tmp_path, SID1, more, status="live", durable=offsets[1])
    w = IndexWorker(tmp_path, poll=0.05)
    w.start()
    try:
        reader = rdb.connect(tmp_path, create=False)  # a reader: search.db attached
        for _ in range(100):  # visible rows are indexed once the live tail is quiet (~0.4 s)
            w.wait_caught_up()
            if search(reader, "live-marker-one", limit=5):
                break
        assert search(reader, "live-marker-one")
        update_session(tmp_path, SID1, log_bytes=len(blob), status="closed")
        w.notify()
        for _ in range(100):
            w.wait_caught_up()
            row = reader.execute("SELECT finished FROM index_progress WHERE sid = ?", (SID1,)).fetchone()
            if row and row[0]:
                break
        assert search(reader, "second-marker-two")[0].t == 1.5
    finally:
        w.stop()
