"""What bench/compare_ssh.py measures side by side: ssh and tether (the floor is in floor.py),
each with how to start a shell and an exec and how much CPU its server side has used."""

from __future__ import annotations

import os
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


def tether_contender(stack: Any, tether_bin: str, name: str = "tether",
                     identity: Path | None = None,
                     recorder_pid: Callable[[], int | None] = lambda: None) -> Contender:
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
            parts["tether recorder (own process)"] = proc_cpu(rec)[0] + descendants_cpu(rec, "")
        return parts

    env = dict(stack.env)
    if identity is not None:
        env["TETHER_IDENTITY"] = str(identity)
    return Contender(
        name=name, cwd=stack.root, env=env,
        shell_argv=[tether_bin, "shell", "local"],
        exec_argv=lambda cmd: [tether_bin, "run", "local", "--", *cmd],
        server_parts=server_parts,
    )
