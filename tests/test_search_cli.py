"""`tether search` and `tether commands` over a real store indexed by the worker."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_indexer import STARTED, add_session

from tether.commands import commands as commands_cli
from tether.commands import search as search_cli
from tether.commands.main import UserError
from tether.recevents import EventKind
from tether.recorder.indexer import IndexWorker
from tether.recorder.search import parse_when

OLD, NEW, OTHER = "0a" * 16, "0b" * 16, "1c" * 16


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    s = tmp_path / "home" / "recordings"
    marks = b"\x1b]133;A\x07$ \x1b]133;B\x07"
    add_session(s, OLD, [(0.0, EventKind.OUTPUT, b"deploy finished: needle-alpha OK\r\n")],
                agent="web-1", user="alice")
    add_session(s, NEW, [
        (0.0, EventKind.OUTPUT, marks),
        (1.0, EventKind.OUTPUT, b"false\r\n\x1b]133;C;cmdline_url=false\x07"),
        (1.5, EventKind.OUTPUT, b"\x1b]133;D;1\x07" + marks),
        (2.0, EventKind.OUTPUT, b"sleep 1\r\n\x1b]133;C;cmdline_url=sleep%201\x07"),
        (3.0, EventKind.OUTPUT, b"\x1b]133;D;0\x07" + marks + b"echo needle-alpha again\r\n"),
    ], agent="db-1", user="bob")
    add_session(s, OTHER, [(0.0, EventKind.OUTPUT, b"nothing here\r\n")])
    import sqlite3
    db = sqlite3.connect(s / "index.db", isolation_level=None)
    db.execute("UPDATE sessions SET started = ? WHERE sid = ?", (STARTED + 86400, NEW))
    db.close()
    IndexWorker(s).drain()
    return s


def cli(module: Any, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.configure(parser)
    code: int = module.run(parser.parse_args(argv))
    return code


def test_search_newest_first_with_highlight_and_last_search(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(search_cli, ["needle-ALPHA"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  1  0b0b0b0b0b0b") and "bob@db-1" in lines[0]
    assert "«needle-alpha»" in lines[0] and "«needle-alpha»" in lines[1]
    assert lines[1].startswith("  2  0a0a0a0a0a0a")
    saved = json.loads((store.parent / "run" / "last-search.json").read_text())
    assert [h["sid"] for h in saved] == [NEW, OLD] and saved[0]["n"] == 1
    assert set(saved[0]) == {"n", "sid", "t", "wall", "offset"}
    # a visible row: the screen as it was after all 34 bytes of that session's output
    assert saved[1]["wall"] == pytest.approx(STARTED) and saved[1]["offset"] == 34


def test_search_filters_and_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(search_cli, ["needle-alpha", "--agent", "web-1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["sid"] for h in hits] == [OLD] and hits[0]["user"] == "alice"
    day = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(STARTED + 3600))
    cli(search_cli, ["needle-alpha", "--since", day, "--json"])
    assert [h["sid"] for h in json.loads(capsys.readouterr().out)] == [NEW]
    cli(search_cli, ["needle-alpha", "--until", day, "--json"])
    assert [h["sid"] for h in json.loads(capsys.readouterr().out)] == [OLD]
    assert cli(search_cli, ["needle-alpha", "--since", "2h"]) == 1  # both are old
    assert cli(search_cli, ["sleep 1", "--json", "--user", "bob"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert any(h["kind"] == "command" and h["t"] == 2.0 for h in hits)


def test_search_refuses_short_queries_and_bad_times(store: Path) -> None:
    with pytest.raises(UserError, match="at least 3"):
        cli(search_cli, ["ab"])
    with pytest.raises(UserError, match="not a time"):
        cli(search_cli, ["abc", "--since", "yesterday-ish"])
    with pytest.raises(UserError, match="no recordings"):
        cli(search_cli, ["abc", "--store", str(store / "nope")])


def test_parse_when() -> None:
    assert parse_when("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_when("3d", now=1e6) == 1e6 - 3 * 86400
    assert parse_when("2026-05-01T00:00:00+00:00") == 1777593600.0
    assert parse_when("1700000000") == 1.7e9


def test_commands_listing(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(commands_cli, ["0b0b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sid"] == NEW
    cmds = [(c["command"], c["exit_code"], c["source"]) for c in out["commands"]]
    assert cmds == [("false", 1, "osc133"), ("sleep 1", 0, "osc133")]
    assert out["commands"][1]["duration"] == pytest.approx(1.0)
    assert cli(commands_cli, [NEW]) == 0
    text = capsys.readouterr().out
    assert "exit   1" in text and "1.00s" in text and "sleep 1" in text
    with pytest.raises(UserError, match="more than one"):
        cli(commands_cli, ["0"])
    with pytest.raises(UserError, match="no recorded session"):
        cli(commands_cli, ["ffff"])


def test_filtered_search_through_the_audit_query_worker(store: Path) -> None:
    """The console's audit queries read with row_factory = sqlite3.Row: filters must work there."""
    from tether.recorder.queries import QueryWorker

    worker = QueryWorker(store, b"\0" * 32)
    try:
        for args, users in [({"text": "needle-alpha"}, ["bob", "alice"]),
                            ({"text": "needle-alpha", "user": "alice"}, ["alice"]),
                            ({"text": "needle-alpha", "agent": "db-1", "since": STARTED}, ["bob"])]:
            answer = worker.answer("search", args)
            assert answer["ok"], answer
            assert [h["user"] for h in answer["result"]["hits"]] == users
    finally:
        worker.close()
