#!/usr/bin/env python3
"""tether versus OpenSSH, side by side in one run (docs/sources.md#performance-budget).

Starts a throwaway sshd and a whole tether deployment on a real Mosquitto (the repo's
mosquitto.conf, through tests/stack.py), both on 127.0.0.1, then measures, alternating
the two tools:

* PTY bulk output: ``cat`` of a big printable file inside an interactive shell
  (``ssh -tt`` / ``tether shell``), each client on a real pseudo-terminal whose master
  this script drains as fast as it can. Timed from sending the command to client exit.
* exec bulk output, no PTY: ``ssh -T HOST cat FILE`` / ``tether run local -- cat FILE``,
  stdout into a pipe drained by this script. Timed from the first output byte to client
  exit (connection setup is measured separately, below); the end-to-end rate including
  setup is reported too.
* keystroke echo round trip: one session of each open at once, remote tty in
  ``-icanon -echo`` with ``cat`` echoing; one printable byte written to the local PTY
  master, timed until it comes back. Keystrokes rotate between the sessions, which
  include a third, "floor" session: tether's topology with bare asyncio+paho relays.
* wall time of ``ssh HOST true`` / ``tether run local -- true``.
* for reference, the raw kernel PTY rate: ``cat FILE`` straight onto a local PTY.

Usage (as root or any user; see bench/README.md)::

    python3 bench/compare_ssh.py                 # full run, about 3 minutes
    python3 bench/compare_ssh.py --quick         # 50 MB, fewer repetitions
    nice -n -10 python3 bench/compare_ssh.py --wait-quiet 240 --markdown out.md --json out.json

Every process it starts (sshd, mosquitto, tether up, the clients) is stopped by pid.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import json
import math
import os
import platform
import pwd
import random
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_CMD = b"echo BENCH_READY_$((6*7))\r"  # the echoed command line never contains the marker
READY_RE = re.compile(rb"BENCH_READY_42")


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------


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


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime is field 14 -> index 11
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / CLK_TCK, (cut + cst) / CLK_TCK


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


def wait4_cpu(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Reap proc (which must still be unreaped); (return code, its user+sys CPU seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (the watchdog killed it)
            return proc.returncode if proc.returncode is not None else -9, math.nan
        if pid == proc.pid:
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            return rc, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            kill_pid(proc)
            raise BenchError(f"{proc.args!r} did not exit within {timeout:.0f} s")
        time.sleep(0.0005)


def system_busy() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


PF_KTHREAD = 0x00200000


def scan_cpu() -> tuple[float, dict[int, float]]:
    """(others, kernel threads): CPU seconds (own + reaped children) of every user-space
    process that is not this bench or one of its descendants, and of all kernel threads.

    The difference of two calls is what other work used in between: a process that exits
    meanwhile moves into its parent's reaped-children time. Kernel threads are counted
    apart, because the kernel does PTY work for us (and others) in kworker threads."""
    procs: dict[int, tuple[int, float]] = {}
    kernel: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = sum(int(x) for x in rest[11:15]) / CLK_TCK
        if int(rest[6]) & PF_KTHREAD:
            kernel[int(entry)] = cpu
        else:
            procs[int(entry)] = (int(rest[1]), cpu)
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == me:
                return True
            if pid <= 1 or pid not in procs:
                return False
            pid = procs[pid][0]
        return False

    return sum(cpu for pid, (_, cpu) in procs.items() if not ours(pid)), kernel


def others_cpu() -> float:
    return scan_cpu()[0]


def kernel_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU that kernel threads used in between (threads that exited meanwhile are lost)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 5.0) -> str:
    """Wait (at most max_wait s) until the machine is nearly idle over `window` seconds:
    busy CPU below `threshold` of one core. Returns what happened, for the report."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy()
        time.sleep(window)
        busy = (system_busy() - b0) / window
        if busy < threshold:
            return f"machine idle ({busy * 100:.0f}% of a core busy) at start"
        if time.monotonic() > deadline:
            return f"machine still busy ({busy * 100:.0f}% of a core) after waiting {max_wait:.0f} s"
        log(f"waiting for a quiet machine: {busy * 100:.0f}% of a core busy")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


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


# ---------------------------------------------------------------------------------------
# a client on a real pseudo-terminal
# ---------------------------------------------------------------------------------------


def _take_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyProc:
    """A client (ssh -tt or tether shell) on its own PTY; this side holds the master."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path,
                 cols: int = 80, rows: int = 24) -> None:
        self.argv = list(argv)
        self.master, slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                start_new_session=True, preexec_fn=_take_tty,
            )
        finally:
            os.close(slave)
        self.tail = b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def expect(self, regex: re.Pattern[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        buf = b""
        while not regex.search(buf):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{shlex.join(self.argv)}: {regex.pattern!r} not seen in "
                                 f"{timeout:.0f} s; last output: {buf[-400:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise BenchError(f"{shlex.join(self.argv)} exited early: {buf[-400:]!r}")
                buf = (buf + chunk)[-8192:]
        self.tail = buf

    def ready(self, timeout: float = 30.0) -> None:
        self.send(READY_CMD)
        self.expect(READY_RE, timeout)
        self.discard()

    def discard(self) -> None:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def drain_until_exit(self, timeout: float) -> int:
        """Blocking reads of the master until the client closes the PTY (EIO); byte count.

        No select() per read: a watchdog kills the client if it takes too long."""
        watchdog = threading.Timer(timeout, kill_pid, (self.proc,))
        watchdog.daemon = True
        watchdog.start()
        n = 0
        readv = os.readv
        fd = self.master
        bufs = [bytearray(1 << 20)]  # reused: no allocation per read
        try:
            while True:
                try:
                    got = readv(fd, bufs)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        break
                    raise
                if not got:
                    break
                n += got
        finally:
            watchdog.cancel()
        return n

    def drain_for(self, timeout: float) -> None:
        """Read until the client closes the PTY or `timeout` passes (select, never blocks)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    if not os.read(self.master, 65536):
                        return
                except OSError:
                    return

    def close(self) -> None:
        kill_pid(self.proc)
        with contextlib.suppress(OSError):
            os.close(self.master)


# ---------------------------------------------------------------------------------------
# the two contenders
# ---------------------------------------------------------------------------------------


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


def cpu_delta(before: tuple[dict[str, float], dict[int, float]],
              after: tuple[dict[str, float], dict[int, float]]) -> dict[str, float]:
    d = {f"cpu {k} s": after[0][k] - before[0][k] for k in before[0]}
    d["server_cpu_s"] = sum(v for k, v in d.items() if k.startswith("cpu server:"))
    d["cpu kernel threads s"] = kernel_delta(before[1], after[1])
    return d


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


# ---------------------------------------------------------------------------------------
# the echo floor: tether's topology with no tether session layer
# ---------------------------------------------------------------------------------------
#
# A PTY client and a PTY "agent", each bare asyncio + paho (tether.edge.mqtt.MqttConnection, as
# tether uses it), relaying raw bytes through Mosquitto: no grant, no handshake, no
# encryption, no channel. The keystroke test runs it alongside ssh and
# tether, to show how much of tether's echo latency the topology itself costs.


class FloorBroker:
    """A plain Mosquitto (anonymous, set_tcp_nodelay true) for the floor sessions."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true",
                 "log_dest stderr", f"pid_file {self.dir / 'mosquitto.pid'}"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        with open(self.dir / "mosquitto.log", "ab") as logf:
            self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise BenchError("floor mosquitto exited: " + (self.dir / "mosquitto.log").read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            if time.monotonic() > deadline:
                raise BenchError("floor mosquitto did not listen within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


def floor_contender(broker: FloorBroker, env: dict[str, str]) -> Contender:
    me = [sys.executable, str(Path(__file__).resolve())]
    return Contender(
        name="floor", cwd=broker.dir, env=env,
        shell_argv=[*me, "--floor-role", "client", "--floor-port", str(broker.port)],
        exec_argv=lambda cmd: [], server_parts=dict,
    )


def floor_role(role: str, port: int, tag: str) -> int:
    import asyncio
    import pty
    import tty

    from tether.edge.mqtt import BrokerSettings, MqttConnection

    async def client() -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        hello = asyncio.Event()
        ctag = f"{os.getpid()}"

        def on_message(_topic: str, payload: bytes) -> None:
            if payload == b"\0hello":
                hello.set()
            elif not payload:
                if not done.done():
                    done.set_result(None)
            else:
                os.write(1, payload)

        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSADRAIN)  # at once, and no flush: typeahead must survive
        conn = MqttConnection(BrokerSettings(port=port, client_id=f"floor-c-{ctag}"), on_message)
        await conn.connect()
        await conn.subscribe_confirmed(f"floor/{ctag}/a2c", 0)
        agent = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--floor-role", "agent",
                                  "--floor-port", str(port), "--floor-tag", ctag],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL,  # never hold the client's PTY open
                                 start_new_session=True)
        try:
            await asyncio.wait_for(hello.wait(), 15)
            os.set_blocking(0, False)

            def on_stdin() -> None:
                try:
                    data = os.read(0, 65536)
                except BlockingIOError:
                    return
                if data:
                    conn.publish(f"floor/{ctag}/c2a", data, 0)

            loop.add_reader(0, on_stdin)
            try:
                await done
            finally:
                loop.remove_reader(0)
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
        finally:
            await conn.close()
            stop_pid(agent)
        return 0

    async def agent() -> int:
        loop = asyncio.get_running_loop()
        shell = pwd.getpwuid(os.geteuid()).pw_shell or "/bin/sh"
        pid, master = pty.fork()
        if pid == 0:  # a login shell, as sshd and the tether agent start it
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.environ["TERM"] = "xterm-256color"
            os.execv(shell, ["-" + os.path.basename(shell)])
        os.set_blocking(master, False)
        gone = asyncio.Event()
        def on_message(_topic: str, payload: bytes) -> None:
            os.write(master, payload)

        conn = MqttConnection(BrokerSettings(port=port, client_id=f"floor-a-{tag}"), on_message)
        await conn.connect()
        await conn.subscribe_confirmed(f"floor/{tag}/c2a", 0)
        conn.publish(f"floor/{tag}/a2c", b"\0hello", 0)

        def on_master() -> None:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            conn.publish(f"floor/{tag}/a2c", data, 0)  # b"" tells the client we are done
            if not data:
                loop.remove_reader(master)
                gone.set()

        loop.add_reader(master, on_master)
        parent = os.getppid()
        while not gone.is_set():  # end with the client, even if it was killed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), 0.5)
            if os.getppid() != parent:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
                loop.remove_reader(master)
                break
        await asyncio.sleep(0.05)  # let the last publish leave
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        await conn.close()
        return 0

    return asyncio.run(client() if role == "client" else agent())


# ---------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    value: float
    extra: dict[str, Any] = field(default_factory=dict)


def make_text_file(path: Path, size: int) -> int:
    """base64 of random bytes in 76-column lines: printable, no control characters."""
    lines = max(1, size // 77)
    raw_per_line = 57
    block_lines = 16384
    with open(path, "wb") as f:
        left = lines
        while left:
            n = min(left, block_lines)
            f.write(base64.encodebytes(os.urandom(raw_per_line * n)))
            left -= n
    return path.stat().st_size


def pty_bulk(c: Contender, file: Path, size: int, timeout: float) -> Sample:
    pp = PtyProc(c.shell_argv, c.env, c.cwd)
    try:
        pp.ready()
        cpu0 = c.cpu_snapshot()
        t0 = time.perf_counter()
        pp.send(f"cat {shlex.quote(str(file))}; exit\r".encode())
        n = pp.drain_until_exit(timeout)
        rc, client_cpu = wait4_cpu(pp.proc, 10)
        elapsed = time.perf_counter() - t0
        cpu = cpu_delta(cpu0, c.cpu_snapshot())
    finally:
        pp.close()
    if n < size:
        raise BenchError(f"{c.name}: PTY delivered {n} bytes, expected at least {size} (rc {rc})")
    return Sample(size / elapsed / MB, {"seconds": elapsed, "bytes_on_pty": n, "rc": rc,
                                        "client_cpu_s": client_cpu, **cpu})


def exec_bulk(c: Contender, file: Path, size: int, timeout: float) -> Sample:
    with tempfile.TemporaryFile() as err:
        cpu0 = c.cpu_snapshot()
        t0 = time.perf_counter()
        proc = subprocess.Popen(c.exec_argv(["cat", str(file)]), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, env=c.env, cwd=c.cwd)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        watchdog = threading.Timer(timeout, kill_pid, (proc,))
        watchdog.daemon = True
        watchdog.start()
        n = 0
        first = 0.0
        bufs = [bytearray(1 << 20)]  # reused: no allocation per read
        try:
            got = os.readv(fd, bufs)
            first = time.perf_counter()
            readv = os.readv
            while got:
                n += got
                got = readv(fd, bufs)
            rc, client_cpu = wait4_cpu(proc, 10)
            end = time.perf_counter()
        finally:
            watchdog.cancel()
            kill_pid(proc)
            proc.stdout.close()
        cpu = cpu_delta(cpu0, c.cpu_snapshot())
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if n != size or rc != 0:
        raise BenchError(f"{c.name}: exec got {n} of {size} bytes, rc {rc}: {stderr[-500:]}")
    return Sample(size / (end - first) / MB, {
        "seconds_streaming": end - first, "seconds_total": end - t0,
        "mb_s_total": size / (end - t0) / MB, "first_byte_s": first - t0,
        "client_cpu_s": client_cpu, **cpu,
    })


def run_true(c: Contender) -> Sample:
    t0 = time.perf_counter()
    proc = subprocess.Popen(c.exec_argv(["true"]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=c.env, cwd=c.cwd)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_pid(proc)
        raise BenchError(f"{c.name}: `true` took over 60 s") from None
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"{c.name}: `true` exited {proc.returncode}: {stderr.decode(errors='replace')}")
    return Sample(elapsed)


def raw_pty(file: Path, size: int, timeout: float) -> Sample:
    pp = PtyProc(["cat", str(file)], dict(os.environ), file.parent)
    try:
        t0 = time.perf_counter()
        n = pp.drain_until_exit(timeout)
        pp.proc.wait(10)
        elapsed = time.perf_counter() - t0
    finally:
        pp.close()
    if n < size:
        raise BenchError(f"raw PTY delivered {n} of {size} bytes")
    return Sample(size / elapsed / MB, {"seconds": elapsed})


class EchoSession:
    """An interactive session whose remote tty echoes each byte through `cat`."""

    def __init__(self, c: Contender) -> None:
        self.c = c
        self.pp = PtyProc(c.shell_argv, c.env, c.cwd)
        self.pp.ready()
        self.pp.send(b"stty -icanon -echo; echo BENCH_CAT_$((6*7)); cat\r")
        self.pp.expect(re.compile(rb"BENCH_CAT_42"))
        self.pp.discard()
        self.samples: list[float] = []

    def keystroke(self, byte: bytes, record: bool) -> None:
        fd = self.pp.master
        t0 = time.perf_counter_ns()
        os.write(fd, byte)
        got = b""
        while not got:
            if not select.select([fd], [], [], 10.0)[0]:
                raise BenchError(f"{self.c.name}: keystroke {byte!r} not echoed within 10 s")
            got = os.read(fd, 4096)
        t1 = time.perf_counter_ns()
        if got != byte:
            raise BenchError(f"{self.c.name}: sent {byte!r}, got back {got[:80]!r}")
        if record:
            self.samples.append((t1 - t0) / 1e6)

    def close(self) -> None:
        try:
            # ^C ends cat (ISIG is still on). The tty flushes its input queue on ^C, so
            # type nothing else until the shell answers again.
            self.pp.send(b"\x03")
            for _ in range(3):
                time.sleep(0.2)
                try:
                    self.pp.send(READY_CMD)
                    self.pp.expect(READY_RE, 5)
                    break
                except BenchError:
                    continue
            self.pp.send(b"stty sane; exit\r")
            self.pp.drain_for(10)
            self.pp.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired, BenchError):
            pass
        finally:
            self.pp.close()


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------


@dataclass
class Result:
    ssh: list[Sample] = field(default_factory=list)
    tether: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)
    error: str | None = None


def alternate(reps: int, contenders: Sequence[Contender], fn: Callable[[Contender], Sample],
              res: Result, what: str) -> None:
    for i in range(reps):
        order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
        for c in order:
            s = fn(c)
            getattr(res, c.name).append(s)
            log(f"  {what} rep {i + 1}/{reps} {c.name}: {s.value:.4g}")


def guarded(res: Result, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        res.error = str(exc)
        log(f"{what} FAILED: {exc}")


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    git = run_text(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run_text(["git", "-C", str(REPO), "diff", "--name-only", "HEAD"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": run_text(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "niceness of the bench (inherited by sshd, Mosquitto, tether and all clients)": str(os.nice(0)),
        # With this set and no __pycache__ in the checkout, every tether command compiles
        # tether's own modules from source at start (tens of ms).
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "unset"),
        "git": git + (f" + uncommitted changes in: {', '.join(dirty.split())}"
                      if dirty else ""),
    }


def versions(tether_bin: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    mosq = run_text(["mosquitto", "-h"]).splitlines()
    return {
        "tether": run_text([tether_bin, "--version"], env=env, cwd=cwd) + f" ({tether_bin})",
        "mosquitto": mosq[0] if mosq else "unknown",
        "openssh client": run_text([SSH, "-V"]),
        "openssh server": "openssh-server " + run_text(["dpkg-query", "-W", "-f=${Version}", "openssh-server"]),
        "paho-mqtt": run_text([sys.executable, "-c", "import paho.mqtt; print(paho.mqtt.__version__)"]),
        "pynacl": run_text([sys.executable, "-c", "import nacl; print(nacl.__version__)"]),
    }


@dataclass
class Row:
    metric: str
    unit: str
    ssh: float
    tether: float
    better: str  # "higher" or "lower"
    goal: str
    met: bool | None
    note: str = ""
    test: str = ""
    others: float = math.nan  # share of the machine other processes used during the test

    @property
    def ratio(self) -> float:
        return self.tether / self.ssh if self.ssh else math.nan


def fmt(x: float, unit: str) -> str:
    if math.isnan(x):
        return "n/a"
    if unit == "ms":
        return f"{x:.3f}"
    if unit == "s":
        return f"{x:.3f}"
    return f"{x:.1f}"


def build_rows(r: dict[str, Result]) -> list[Row]:
    rows: list[Row] = []

    def vals(key: str, pick: Callable[[list[Sample]], float]) -> tuple[float, float]:
        res = r[key]
        return pick(res.ssh), pick(res.tether)

    def med(samples: list[Sample]) -> float:
        return median([s.value for s in samples])

    s, t = vals("pty", med)
    rows.append(Row("PTY bulk output (cat in a shell)", "MB/s", s, t, "higher", "≥ 1.0 x ssh",
                    None if math.isnan(t / s) else t / s >= 1.0, test="pty"))
    s, t = vals("exec", med)
    rows.append(Row("exec bulk output, no PTY", "MB/s", s, t, "higher", "≥ 0.5 x ssh",
                    None if math.isnan(t / s) else t / s >= 0.5, "first byte to exit", "exec"))
    s, t = vals("exec", lambda xs: median([x.extra["mb_s_total"] for x in xs]))
    rows.append(Row("exec bulk output incl. connection setup", "MB/s", s, t, "higher", "", None,
                    "start to exit", "exec"))
    e = r["echo"]
    sv = [x for smp in e.ssh for x in smp.extra.get("all", [])]
    tv = [x for smp in e.tether for x in smp.extra.get("all", [])]
    s50, t50 = pct(sv, 50), pct(tv, 50)
    rows.append(Row("keystroke echo round trip p50", "ms", s50, t50, "lower", "≤ 2 x ssh",
                    None if math.isnan(t50 / s50) else t50 <= 2 * s50, test="echo"))
    s99, t99 = pct(sv, 99), pct(tv, 99)
    rows.append(Row("keystroke echo round trip p99", "ms", s99, t99, "lower", "≤ 2 ms",
                    None if math.isnan(t99) else t99 <= 2.0, test="echo"))
    s, t = vals("true", med)
    rows.append(Row("`run -- true` wall time", "s", s, t, "lower", "≤ 1.0 x ssh",
                    None if math.isnan(t / s) else t <= s, test="true"))
    return rows


def cpu_rows(r: dict[str, Result], size: int) -> list[tuple[str, str, str]]:
    """(what, ssh, tether) median CPU seconds per 100 MB for the bulk tests."""
    out = []
    scale = 100 * MB / size
    for key, label in (("pty", "PTY bulk"), ("exec", "exec bulk")):
        res = r[key]
        if not res.ssh or not res.tether:
            continue
        keys = ["client_cpu_s", "server_cpu_s"]
        keys += sorted({k for x in res.ssh + res.tether for k in x.extra if k.startswith("cpu ")},
                       key=lambda k: (not k.startswith("cpu server:"), k))

        def m(xs: list[Sample], k: str) -> str:
            vals = [x.extra[k] for x in xs if k in x.extra]
            return f"{median(vals) * scale:.2f}" if vals else ""

        for k in keys:
            what = {"client_cpu_s": "client", "server_cpu_s": "server side, total"}.get(k)
            if what is None:
                what = k.removeprefix("cpu ").removesuffix(" s").replace("server:", "server: ")
            out.append((f"{label}: {what}", m(res.ssh, k), m(res.tether, k)))
    return out


def others(x: float) -> str:
    return "" if math.isnan(x) else f"{x * 100:.0f}%"


def render_text(rows: list[Row], refs: list[str], cpu: list[tuple[str, str, str]],
                errors: dict[str, str]) -> str:
    head = ("metric", "unit", "ssh", "tether", "tether/ssh", "better", "goal", "met", "others")
    body = []
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        body.append((row.metric, row.unit, fmt(row.ssh, row.unit), fmt(row.tether, row.unit),
                     "n/a" if math.isnan(row.ratio) else f"{row.ratio:.2f}", row.better, row.goal, met,
                     others(row.others)))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    lines += [f"reference: {r}" for r in refs]
    lines.append("others: share of the machine's CPU that other processes used during that test")
    if cpu:
        lines.append("CPU seconds per 100 MB (median):")
        for what, s, t in cpu:
            lines.append(f"  {what:<50} ssh {s:>6}   tether {t:>6}")
    for k, v in errors.items():
        lines.append(f"ERROR in {k}: {v}")
    return "\n".join(lines)


def render_markdown(rows: list[Row], refs: list[str], cpu: list[tuple[str, str, str]],
                    errors: dict[str, str], meta: dict[str, Any], details: dict[str, Any]) -> str:
    md = ["# tether vs OpenSSH: side-by-side benchmark", ""]
    md.append(f"- command: `{meta['command']}`")
    md.append(f"- date: {meta['date']}")
    md.append(f"- total run time: {meta['runtime_s']:.0f} s")
    for k, v in meta["machine"].items():
        md.append(f"- {k}: {v}")
    for k, v in meta["versions"].items():
        md.append(f"- {k}: {v}")
    if "load" in meta:
        md.append(f"- machine load: {meta['load']}")
    md.append(f"- parameters: {meta['params']}")
    md.append("")
    md.append("| metric | unit | ssh | tether | tether/ssh | better | goal (budget) | met "
              "| others' CPU |")
    md.append("|---|---|---:|---:|---:|---|---|---|---:|")
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        ratio = "n/a" if math.isnan(row.ratio) else f"{row.ratio:.2f}"
        note = f" ({row.note})" if row.note else ""
        md.append(f"| {row.metric}{note} | {row.unit} | {fmt(row.ssh, row.unit)} | "
                  f"{fmt(row.tether, row.unit)} | {ratio} | {row.better} | {row.goal} | {met} "
                  f"| {others(row.others)} |")
    md.append("")
    md.append("*others' CPU*: the share of the machine's CPU (all cores) that processes other than "
              "the benchmark's own used during that test. Anything above a few percent disturbs "
              "the numbers.")
    md.append("")
    if refs:
        md.append("References:")
        md.append("")
        md += [f"- {r}" for r in refs]
        md.append("")
    if cpu:
        md.append("CPU seconds per 100 MB (median). *client*: the ssh or tether client process. "
                  "*server side*: for ssh the sshd listener's reaped children (the connection's "
                  "sshd processes, the shell and `cat`); for tether `tether up` (agent and "
                  "authority), its reaped children (the shell and `cat`) and Mosquitto. *bench*: "
                  "this script draining the PTY or pipe. *kernel threads*: all kworkers etc., "
                  "where Linux does part of the PTY work; other work on the machine adds to it.")
        md.append("")
        md.append("| | ssh | tether |")
        md.append("|---|---:|---:|")
        for what, s, t in cpu:
            md.append(f"| {what} | {s} | {t} |")
        md.append("")
    for k, v in errors.items():
        md.append(f"**Error in {k}:** {v}")
        md.append("")
    md.append("<details><summary>Per-run values</summary>")
    md.append("")
    md.append("```json")
    md.append(json.dumps(details, indent=1))
    md.append("```")
    md.append("</details>")
    md.append("")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 MB file, fewer repetitions")
    ap.add_argument("--size-mb", type=int, help="bulk file size in MB (default 200, quick 50)")
    ap.add_argument("--reps", type=int, help="repetitions of each bulk test per tool (default 5, quick 2)")
    ap.add_argument("--keys", type=int, help="measured keystrokes per tool (default 300, quick 100)")
    ap.add_argument("--warmup-keys", type=int, default=20)
    ap.add_argument("--true-runs", type=int, help="`true` runs per tool (default 20, quick 8)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds allowed per bulk run")
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="also write the results as Markdown")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write all samples as JSON")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before each test, wait up to SECONDS for other work on the machine to stop")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    ap.add_argument("--only", nargs="+", choices=["raw", "true", "echo", "exec", "pty"],
                    help="run only these tests")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the bare-MQTT floor session from the keystroke test")
    ap.add_argument("--recording", choices=["off", "optional", "required"], default="off",
                    help="the policy's recording for the tether sessions (default off: ssh records "
                    "nothing, so like with like; `optional` measures tether as `tether up` "
                    "ships, with every session streamed to the recorder)")
    ap.add_argument("--floor-role", choices=["client", "agent"], help=argparse.SUPPRESS)
    ap.add_argument("--floor-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--floor-tag", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_role:
        return floor_role(args.floor_role, args.floor_port, args.floor_tag)
    size = (args.size_mb or (50 if args.quick else 200)) * MB
    reps = args.reps or (2 if args.quick else 5)
    keys = args.keys or (100 if args.quick else 300)
    true_runs = args.true_runs or (8 if args.quick else 20)
    tests = set(args.only or ["raw", "true", "echo", "exec", "pty"])
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else ""
    if quiet:
        log(quiet)
    started = time.time()
    others0, load0 = others_cpu(), loadavg()
    if os.getloadavg()[0] > 0.5:
        log(f"note: load average is {load0} before the run; other work will add noise")

    # SIGTERM/SIGHUP unwind through the finally blocks below, like Ctrl-C.
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Started in the background, SIGINT may be ignored, and children inherit that: the
    # remote shells would then ignore ^C. A Python handler is reset to default on exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from stack import TETHER, running_stack  # type: ignore[import-not-found]  # tests/ on sys.path

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    results = {k: Result() for k in ("pty", "exec", "echo", "true")}
    raw = Result()
    meta: dict[str, Any] = {}
    interference: dict[str, float] = {}
    sshd = SshServer(tmp / "ssh")
    floor_broker = FloorBroker(tmp / "floor")
    try:
        log(f"work directory {tmp}")
        path = tmp / "bulk.txt"
        size = make_text_file(path, size)
        log(f"wrote {size / MB:.1f} MB of base64 text to {path}")
        log("starting sshd")
        sshd.start()
        log(f"sshd pid {sshd.proc.pid if sshd.proc else '?'} on 127.0.0.1:{sshd.port}")
        (tmp / "tether").mkdir()
        log("starting Mosquitto and tether up")
        with running_stack("mosquitto", tmp / "tether") as stack:
            log(f"mosquitto pid {stack.broker.pid}, tether up pid {stack.up.pid}, port {stack.port}")
            from stack import statement  # type: ignore[import-not-found]

            body = statement(recording=f'"{args.recording}"').replace("OSUSER", getpass.getuser())
            user = re.search(rb'users = \["([^"]+)"\]', stack.home.policy.read_bytes())
            assert user is not None
            stack.home.policy.write_text(body.replace("USER", user.group(1).decode()))
            meta["recording"] = args.recording
            log(f"policy: recording = {args.recording}")
            client_env = dict(os.environ, TERM="xterm-256color")
            ssh_c = ssh_contender(sshd, client_env)
            teth_c = tether_contender(stack, TETHER)
            teth_c.env["TERM"] = "xterm-256color"
            both = [ssh_c, teth_c]
            meta["versions"] = versions(TETHER, stack.env, stack.root)

            # Warm up: page cache, .pyc files, ssh and tether code paths.
            for c in both:
                run_true(c)
                run_true(c)

            ncpu = os.cpu_count() or 1

            def section(name: str, res: Result, what: str, fn: Callable[[], None]) -> None:
                """Run one test; note how much CPU other processes took meanwhile."""
                if args.wait_quiet > 0:
                    log(wait_quiet(args.wait_quiet))
                log(what)
                o0, w0 = others_cpu(), time.monotonic()
                guarded(res, name, fn)
                wall = time.monotonic() - w0
                interference[name] = max(0.0, others_cpu() - o0) / (wall * ncpu)
                if interference[name] > 0.05:
                    log(f"  other processes used {interference[name] * 100:.0f}% of the machine "
                        f"during {name}: its numbers are disturbed")

            def echo_all() -> None:
                trio = list(both)
                try:
                    if not args.no_floor:
                        floor_broker.start()
                        trio.append(floor_contender(floor_broker, client_env))
                    echo_test(trio, keys, args.warmup_keys, results["echo"])
                finally:
                    floor_broker.stop()

            if "raw" in tests:
                section("raw", raw, "raw kernel PTY read", lambda: raw.ssh.extend(
                    raw_pty(path, size, args.timeout) for _ in range(min(reps, 3))))
            if "true" in tests:
                section("true", results["true"], f"`true` wall time, {true_runs} runs each",
                        lambda: alternate(true_runs, both, run_true, results["true"], "true"))
            if "echo" in tests:
                section("echo", results["echo"],
                        f"keystroke echo, {keys} keystrokes each after {args.warmup_keys} warm-up",
                        echo_all)
            if "exec" in tests:
                section("exec", results["exec"], f"exec bulk, {size / MB:.0f} MB, {reps} reps each",
                        lambda: alternate(reps, both, lambda c: exec_bulk(c, path, size, args.timeout),
                                          results["exec"], "exec MB/s"))
            if "pty" in tests:
                section("pty", results["pty"], f"PTY bulk, {size / MB:.0f} MB, {reps} reps each",
                        lambda: alternate(reps, both, lambda c: pty_bulk(c, path, size, args.timeout),
                                          results["pty"], "PTY MB/s"))
            # Everything that ran on the machine meanwhile and was not ours: interference.
            wall = time.time() - started
            other = max(0.0, others_cpu() - others0)
            meta["load"] = ((f"{quiet}; " if quiet else "") + f"load average {load0} at start, {loadavg()} at end; CPU used by "
                            f"other processes during the run: {other:.0f} s "
                            f"({other / (wall * ncpu) * 100:.0f}% of "
                            f"{ncpu} cores x {wall:.0f} s)")
            log(meta["load"])
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    except (BenchError, AssertionError, OSError, subprocess.SubprocessError) as exc:
        # Setting up sshd or the tether stack failed (tests/stack.py raises AssertionError).
        log(f"setup failed, nothing measured: {exc}")
        return 2
    finally:
        floor_broker.stop()
        sshd.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    errors = {k: v.error for k, v in results.items() if v.error}
    if raw.error:
        errors["raw"] = raw.error
    rows = build_rows(results)
    for row in rows:
        row.others = interference.get(row.test, math.nan)
    refs = []
    if raw.ssh:
        refs.append(f"raw kernel PTY read (`cat` straight onto a local PTY, drained by the bench): "
                    f"{median([s.value for s in raw.ssh]):.1f} MB/s "
                    f"(others' CPU {others(interference.get('raw', math.nan))})")
    floor_ms = [x for smp in results["echo"].floor for x in smp.extra.get("all", [])]
    if floor_ms:
        refs.append(f"keystroke echo floor (tether's topology with bare asyncio+paho over Mosquitto: "
                    f"no grant, handshake, crypto or channel): p50 {pct(floor_ms, 50):.3f} ms, "
                    f"p99 {pct(floor_ms, 99):.3f} ms")
    cpu = cpu_rows(results, size)
    print()
    print(render_text(rows, refs, cpu, errors))
    if "load" in meta:
        print(meta["load"])
    details = {
        "raw_pty_mb_s": [s.value for s in raw.ssh],
        **{f"{k}.{who}": [dict(value=round(s.value, 6),
                               **{ek: (round(ev, 6) if isinstance(ev, float) else ev)
                                  for ek, ev in s.extra.items() if ek != "all"})
                          for s in getattr(v, who)]
           for k, v in results.items() if k != "echo" for who in ("ssh", "tether")},
        **{f"echo.{who}_ms": {"p50": pct(vals, 50), "p90": pct(vals, 90), "p99": pct(vals, 99),
                              "max": max(vals) if vals else math.nan, "n": len(vals)}
           for who, vals in (("ssh", [x for s in results["echo"].ssh for x in s.extra.get("all", [])]),
                             ("tether", [x for s in results["echo"].tether for x in s.extra.get("all", [])]),
                             ("floor", floor_ms))},
    }
    meta.update(
        command=shlex.join([sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])]),
        date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine_info(),
        runtime_s=time.time() - started,
        params=f"file {size / MB:.1f} MB, {reps} reps per bulk test, {keys} keystrokes "
               f"(+{args.warmup_keys} warm-up), {true_runs} `true` runs, tools alternated",
    )
    meta.setdefault("versions", {})
    if args.markdown:
        args.markdown.write_text(render_markdown(rows, refs, cpu, errors, meta, details))
        log(f"wrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": details,
                                         "echo_samples_ms": {
                                             "ssh": [x for s in results["echo"].ssh for x in s.extra.get("all", [])],
                                             "tether": [x for s in results["echo"].tether for x in s.extra.get("all", [])],
                                             "floor": floor_ms},
                                         }, indent=1, default=str))
        log(f"wrote {args.json}")
    return 1 if errors else 0


def echo_test(both: Sequence[Contender], keys: int, warmup: int, res: Result) -> None:
    sessions: list[EchoSession] = []
    try:
        for c in both:
            sessions.append(EchoSession(c))
        rng = random.Random(6)
        letters = b"abcdefghijklmnopqrstuvwxyz0123456789"
        for i in range(warmup + keys):
            order = sessions[i % len(sessions):] + sessions[:i % len(sessions)]  # rotate
            for sess in order:
                sess.keystroke(letters[i % len(letters):][:1], record=i >= warmup)
                time.sleep(rng.uniform(0.005, 0.015))  # keys arrive apart, as typed
        for sess in sessions:
            getattr(res, sess.c.name).append(Sample(median(sess.samples), {"all": sess.samples}))
            log(f"  echo {sess.c.name}: p50 {pct(sess.samples, 50):.3f} ms, "
                f"p99 {pct(sess.samples, 99):.3f} ms")
    finally:
        for sess in sessions:
            sess.close()


if __name__ == "__main__":
    sys.exit(main())
