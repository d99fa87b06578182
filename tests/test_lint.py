"""The code standards are part of the suite: mypy --strict and ruff must be clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tether", "broker", "agent", "client", "recorder", "authority"]


def test_ruff_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_is_clean() -> None:
    # Run against the installed package names (tether.agent is the folder agent/), from a
    # neutral directory so the source tree does not shadow the installed layout.
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "tether"],
        cwd=ROOT / "tests", capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
