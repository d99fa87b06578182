"""The one base of every error tether raises on purpose."""

from __future__ import annotations


class TetherError(Exception):
    """An error whose text is written for a person. The command line prints it as one line
    (no traceback) and exits 255; library code raises subclasses that say what failed, and
    callers that can recover catch those."""


__all__ = ["TetherError"]
