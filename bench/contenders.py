"""What bench/compare_ssh.py measures side by side: ssh and tether (the floor is in floor.py),
each with how to start a shell and an exec and how much CPU its server side has used."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpu import proc_cpu, scan_cpu
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


def tether_contender(stack: Any, tether_bin: str) -> Contender:
    up_pid = stack.up.pid
    broker_pid = stack.broker.pid

    def server_parts() -> dict[str, float]:
        own, children = proc_cpu(up_pid)
        return {"tether up (agent)": own, "session (shell, cat)": children,
                "mosquitto": proc_cpu(broker_pid)[0]}

    env = dict(stack.env)
    return Contender(
        name="tether", cwd=stack.root, env=env,
        shell_argv=[tether_bin, "shell", "local"],
        exec_argv=lambda cmd: [tether_bin, "run", "local", "--", *cmd],
        server_parts=server_parts,
    )
