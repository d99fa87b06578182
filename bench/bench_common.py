"""Shared by the modules of bench/compare_ssh.py: paths, tool locations, logging, stopping
processes by pid, statistics."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
MB = 1_000_000
READY_CMD = b"echo BENCH_READY_$((6*7))\r"  # the echoed command line never contains the marker
READY_RE = re.compile(rb"BENCH_READY_42")


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_pid(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM by pid, then SIGKILL; never by name."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def kill_pid(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(10)


def live_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_no_children(pid: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while live_children(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def pct(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def run_text(argv: Sequence[str], **kw: Any) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30, **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return str((r.stdout + r.stderr).decode(errors="replace").strip())
