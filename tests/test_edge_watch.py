"""The one file-change poller (tether.edge.watch) on real files: what counts as a change."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from tether.edge.watch import FileWatch, poll


def test_first_look_missing_file_appearing_and_forget(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    watch = FileWatch(path)
    assert watch.changed() and watch.version is None  # the first look is a change
    assert not watch.changed()
    path.write_text("a")
    assert watch.changed() and watch.version is not None
    assert not watch.changed()
    watch.forget()
    assert watch.changed() and not watch.changed()
    path.unlink()
    assert watch.changed() and watch.version is None


def test_atomic_replace_same_size_and_mtime_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("aaaa")
    watch = FileWatch(path)
    assert watch.changed()
    st = path.stat()
    tmp = tmp_path / "f.json.tmp"
    tmp.write_text("bbbb")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)  # a new inode, same size and mtime
    assert watch.changed()


def test_chmod_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("a")
    path.chmod(0o600)
    watch = FileWatch(path)
    assert watch.changed()
    path.chmod(0o666)  # so the reader re-checks the file's safety
    assert watch.changed()


def test_poll_survives_a_failing_check(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("bad file")

    async def main() -> None:
        task = asyncio.create_task(poll(0.01, check, logging.getLogger("t"), "the check"))
        async with asyncio.timeout(10):
            while len(calls) < 3:
                await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert len(calls) >= 3
    assert "the check failed" in caplog.text
