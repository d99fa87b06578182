"""A throwaway sshd on 127.0.0.1 for bench/compare_ssh.py."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

from bench_common import SSH, SSHD, BenchError, free_port, stop_pid, wait_no_children
from cpu import proc_cpu


class SshServer:
    """A throwaway sshd on 127.0.0.1 with its own host key, client key and config."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = self.dir / "client_key"
        self._made_privsep = False

    def start(self) -> None:
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bench-{name}",
                            "-f", str(self.dir / name)], check=True, stdin=subprocess.DEVNULL)
        (self.dir / "authorized_keys").write_bytes((self.dir / "client_key.pub").read_bytes())
        self.port = free_port()
        conf = self.dir / "sshd_config"
        conf.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.dir / 'host_key'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            f"PidFile {self.dir / 'sshd.pid'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PrintMotd no",
            "PrintLastLog no",
            "",
        ]))
        # sshd refuses to start without its privilege-separation directory.
        privsep = Path("/run/sshd")
        if os.geteuid() == 0 and not privsep.exists():
            privsep.mkdir(mode=0o755)
            self._made_privsep = True
        test = subprocess.run([SSHD, "-t", "-f", str(conf)], capture_output=True)
        if test.returncode != 0:
            raise BenchError(f"sshd -t rejected the config: {test.stderr.decode(errors='replace')}")
        self.log_path = self.dir / "sshd.log"
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([SSHD, "-D", "-f", str(conf), "-e"], stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                         start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"sshd exited: {self.log_path.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    break
            if time.monotonic() > deadline:
                raise BenchError("sshd did not answer within 10 s")
            time.sleep(0.05)
        r = subprocess.run(self.argv("true"), stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"ssh login failed ({r.returncode}): {r.stderr.decode(errors='replace')}\n"
                             f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def argv(self, *rest: str, tty: str | None = None) -> list[str]:
        opts = [SSH, "-F", "/dev/null", "-i", str(self.key), "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]
        if tty:
            opts.append(tty)
        return [*opts, f"{self.user}@127.0.0.1", *rest]

    def server_cpu(self) -> float:
        """CPU of every finished sshd connection (and what ran under it), in seconds."""
        assert self.proc is not None
        wait_no_children(self.proc.pid)
        own, children = proc_cpu(self.proc.pid)
        return own + children

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None
        if self._made_privsep:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()
