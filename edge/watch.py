"""Noticing that a file changed, by polling: the authority re-reads its registry, policy,
revocations and pending enrolments when an administrator edits them, without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

FileVersion = tuple[int, int, int, int, int, int]
_NEVER = object()  # no version seen yet: the first look is always a change


def file_version(path: Path) -> FileVersion | None:
    """What tells a re-read is due (None: no such file). Files are replaced atomically, so a
    new inode means new content even within the timestamp granularity; a chmod or chown
    changes only the ctime, mode and owner, which are part of it so that a file's safety
    is re-checked."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid


class FileWatch:
    """One file's version as last acted upon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version: FileVersion | None = None
        self._seen: object = _NEVER

    def changed(self) -> bool:
        """True (once) if the file changed, appeared or disappeared since the last call;
        `version` is then its new version."""
        version = file_version(self.path)
        if version == self._seen:
            return False
        self._seen = self.version = version
        return True

    def forget(self) -> None:
        """The next `changed()` is True: for after writing the file oneself."""
        self._seen = _NEVER


async def poll(interval: float, check: Callable[[], object], log: logging.Logger,
               what: str) -> None:
    """Call `check` every `interval` seconds until cancelled. A failure is logged and the
    polling goes on: a bad file must not stop the service that watches it."""
    while True:
        await asyncio.sleep(interval)  # a poll interval, not a synchronisation
        try:
            check()
        except Exception:
            log.exception("%s failed", what)
