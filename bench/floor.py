"""The echo floor: tether's topology with no tether session layer.

A PTY client and a PTY "agent", each bare asyncio + paho (tether.edge.mqtt.MqttConnection, as
tether uses it), relaying raw bytes through Mosquitto: no grant, no handshake, no
encryption, no channel. The keystroke test runs it alongside ssh and tether, to show how
much of tether's echo latency the topology itself costs. Both roles run as
`compare_ssh.py --floor-role ...`."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

from bench_common import BenchError, free_port, stop_pid
from contenders import Contender

MAIN = Path(__file__).resolve().with_name("compare_ssh.py")  # runs the roles: --floor-role


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
    me = [sys.executable, str(MAIN)]
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
        agent = subprocess.Popen([sys.executable, str(MAIN), "--floor-role", "agent",
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
