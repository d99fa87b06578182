"""What bench/compare_ssh.py measures side by side: ssh and tether (the floor is in floor.py),
each with how to start a shell and an exec and how much CPU its server side has used."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpu import descendants_cpu, proc_cpu, scan_cpu, thread_cpu
from sshd import SshServer


@dataclass
class Contender:
    name: str
    cwd: Path
    env: dict[str, str]
    shell_argv: list[str]
    exec_argv: Callable[[list[str]], list[str]]
    server_parts: Callable[[], dict[str, float]]  # cumulative CPU seconds, by process
    # For a recorded contender: given the wall time before a session, what the recorder
    # stored of it once it is closed (an optional recording drops output, with a recorded
    # gap, when its recorder falls silent: then the session was not paced by it).
    recorded: Callable[[float], dict[str, Any]] | None = None

    def cpu_snapshot(self) -> tuple[dict[str, float], dict[int, float]]:
        """Cumulative CPU of the server side (by part) and this bench; kernel threads."""
        snap = {f"server:{k}": v for k, v in self.server_parts().items()}
        t = os.times()
        snap["bench"] = t.user + t.system
        return snap, scan_cpu()[1]


def ssh_contender(sshd: SshServer, env: dict[str, str]) -> Contender:
    return Contender(
        name="ssh", cwd=sshd.dir, env=env,
        shell_argv=sshd.argv(tty="-tt"),
        exec_argv=lambda cmd: sshd.argv(*cmd, tty="-T"),
        server_parts=lambda: {"sshd incl. session": sshd.server_cpu()},
    )


RECORDED_WAIT = 120.0  # the agent drains a recording for up to 120 s after its session


def recorded_row(db_path: Path, user: str, after: float) -> dict[str, Any]:
    """The recorder's row of `user`'s newest session started after `after` (wall time),
    once closed; {"recording": "not closed"} if it did not close within RECORDED_WAIT."""
    import sqlite3

    deadline = time.monotonic() + RECORDED_WAIT
    row = None
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
            try:
                row = db.execute("SELECT status, bytes_out, log_bytes FROM sessions WHERE user=? "
                                 "AND started>=? ORDER BY started DESC LIMIT 1",
                                 (user, after)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            row = None
        if row is not None and row[0] != "live":
            return {"recording": row[0], "recorded_bytes_out": row[1], "recorded_log_bytes": row[2]}
        time.sleep(0.2)  # polling interval of a condition wait
    return {"recording": "not closed" if row else "no row",
            "recorded_bytes_out": row[1] if row else 0}


def tether_contender(stack: Any, tether_bin: str, name: str = "tether",
                     identity: Path | None = None,
                     recorder_pid: Callable[[], int | None] = lambda: None,
                     recorded_user: str | None = None) -> Contender:
    """`identity`: the client's identity file (another user, whom the policy treats
    differently: recorded or not). `recorder_pid`: a `tether recorder` of its own, when the
    bench runs one apart from `tether up` (then its CPU is a part of its own)."""
    up_pid = stack.up.pid
    broker_pid = stack.broker.pid

    def server_parts() -> dict[str, float]:
        own, children = proc_cpu(up_pid)
        main, threads = thread_cpu(up_pid)
        parts = {"tether up": own, "tether up: event loop thread": main,
                 "tether up: other threads": threads, "session (shell, cat)": children,
                 "recorder index worker": descendants_cpu(up_pid, "index_process"),
                 "mosquitto": proc_cpu(broker_pid)[0]}
        rec = recorder_pid()
        if rec is not None:
            parts["recorder process of its own (with its index worker)"] = proc_cpu(rec)[0] + descendants_cpu(rec, "")
        return parts

    env = dict(stack.env)
    if identity is not None:
        env["TETHER_IDENTITY"] = str(identity)
    return Contender(
        name=name, cwd=stack.root, env=env,
        shell_argv=[tether_bin, "shell", "local"],
        exec_argv=lambda cmd: [tether_bin, "run", "local", "--", *cmd],
        server_parts=server_parts,
        recorded=None if recorded_user is None else (
            lambda after: recorded_row(stack.home.recordings / "index.db", recorded_user, after)),
    )
