"""A whole tether deployment on loopback for end-to-end tests: a real broker (embedded
amqtt or Mosquitto from the repo's mosquitto.conf, each in its own process), and
`tether up --broker` running the authority and agent `local`."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.brokers import free_port, start_embedded, start_mosquitto

from tether.authority.policy import Policy, Statement
from tether.authority.provision import authority_identity, commit, ensure_local_setup, new_principal
from tether.authority.registry import Registry
from tether.edge.home import Home
from tether.edge.keys import Identity
from tether.edge.pty import open_pty, read_ready, set_winsize, take_controlling_tty

_BESIDE = Path(sys.executable).parent / "tether"
TETHER = str(_BESIDE) if _BESIDE.exists() else (shutil.which("tether") or "tether")
SLOW_FSYNC = Path(__file__).parent / "support" / "slow_fsync.py"  # Stack.start_role(slow_disk=True)
OS_USER = getpass.getuser()


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # polling interval of a condition wait, not synchronisation by sleep
        delay = min(delay * 2, 0.1)


@dataclass
class Stack:
    kind: str
    root: Path
    port: int = 0
    ws_port: int = 0  # the broker's websocket listener (for the browser console)
    console_url: str = ""  # the web console `tether up` serves, if it does
    broker: Any = None
    up: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)  # output of `tether up` / `tether recorder`

    @property
    def home(self) -> Home:
        return Home(self.root / "home")

    @property
    def spy_identity(self) -> Path:
        return self.root / "spy.json"

    @property
    def bob_identity(self) -> Path:
        return self.root / "bob.json"

    def setup(self) -> None:
        self.port = free_port()
        self.env = dict(os.environ, TETHER_HOME=str(self.home.root))
        self.env.pop("TETHER_IDENTITY", None)
        setup = ensure_local_setup(self.home, "127.0.0.1", self.port)
        registry = Registry.load(self.home.registry)
        auth = authority_identity(self.home)
        spy = new_principal(self.home, registry, auth, "spy", "admin", host="127.0.0.1", port=self.port)
        spy.save(self.spy_identity)
        bob = new_principal(self.home, registry, auth, "bob", "user", host="127.0.0.1", port=self.port)
        bob.save(self.bob_identity)
        commit(self.home, registry)
        run_as = [OS_USER] + (["nobody"] if os.geteuid() == 0 else [])
        Policy([Statement(users=[setup.user.name], agents=["local"], actions=["shell", "exec"],
                          run_as=run_as)]).save(self.home.policy)
        self.start_broker()
        self.start_up()

    def start_broker(self) -> None:
        files = self.home.broker_files
        self.ws_port = self.ws_port or free_port()
        if self.kind == "mosquitto":
            self.broker = start_mosquitto(files, self.root / "mosquitto", port=self.port,
                                          ws_port=self.ws_port)
        else:
            self.broker = start_embedded(files, port=self.port, workdir=self.root / "amqtt",
                                         ws_port=self.ws_port)

    def start_up(self, *extra: str) -> None:
        # The console on a free port (parallel stacks), pointing at this broker's websockets.
        self.up = subprocess.Popen(
            [TETHER, "up", "--broker", f"127.0.0.1:{self.port}",
             "--ws-listen", f"127.0.0.1:{self.ws_port}", "--console-listen", "127.0.0.1:0", *extra],
            env=self.env, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.up.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"tether is up" not in seen:
            if time.monotonic() > deadline or self.up.poll() is not None:
                raise AssertionError(f"tether up did not start: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([self.up.stdout], [], [], 0.5)
            if ready:
                seen += os.read(self.up.stdout.fileno(), 4096)
        while b"Stop with Ctrl-C." not in seen and self.up.poll() is None:
            seen += os.read(self.up.stdout.fileno(), 4096)  # the rest of the banner
        m = re.search(rb"Web console: (http://\S+)", seen)
        self.console_url = m.group(1).decode() if m else ""
        self._drain_log(self.up, seen)
        wait_for(lambda: self.agent_status("local") == "online", what="agent local online")

    def _drain_log(self, proc: subprocess.Popen[bytes], seen: bytes) -> None:
        """Keep reading a service's output: a full pipe would block its event loop (it logs
        warnings there), and the tail is there to read when a test fails."""
        import threading

        self.logs.append(seen)
        out = proc.stdout
        assert out is not None

        def pump() -> None:
            while chunk := os.read(out.fileno(), 65536):
                self.logs.append(chunk)
                if len(self.logs) > 4096:
                    del self.logs[:2048]

        threading.Thread(target=pump, daemon=True).start()

    def log_tail(self, n: int = 4000) -> str:
        return b"".join(self.logs)[-n:].decode(errors="replace")

    def stop_up(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(15)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        self.up = None

    def agent_status(self, name: str) -> str | None:
        out = self.tether("ls", "--json", timeout=30).stdout.decode()
        for line in out.splitlines():
            if f'"name":"{name}"' in line:
                m = re.search(r'"status":"(\w+)"', line)
                return m.group(1) if m else None
        return None

    def tether(self, *args: str, input: bytes | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([TETHER, *args], input=input, capture_output=True, timeout=timeout,
                              env=env or self.env, cwd=self.root)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("cwd", self.root)
        proc = subprocess.Popen([TETHER, *args], **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.stop_up()
        if self.broker is not None:
            self.broker.stop()


    # ----- the recorder -----

    def add_agent(self, prefix: str) -> Identity:
        """A new agent principal named PREFIX plus random hex, registered and known to the
        broker: a peer that tests drive by hand (it runs no agent)."""
        from tether.authority.provision import authority_identity, commit, new_principal
        from tether.authority.registry import Registry

        registry = Registry.load(self.home.registry)
        agent = new_principal(self.home, registry, authority_identity(self.home),
                              prefix + os.urandom(2).hex(), "agent", host="127.0.0.1",
                              port=self.port)
        commit(self.home, registry)
        assert self.broker is not None
        self.broker.reload()
        return agent

    def live_session(self, agent: str = "local") -> subprocess.Popen[bytes]:
        """`tether run AGENT` with a command that is running once `ready` is printed: the
        agent has started its process, so it counts (and can end) this session."""
        proc = self.popen("run", agent, "--", "sh", "-c", "echo ready; exec sleep 60",
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 20
        while b"ready" not in out:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"the session did not start: {out!r} {err!r}\n{self.log_tail()}")
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        return proc

    def start_role(self, *args: str, ready: bytes | None = None, env: dict[str, str] | None = None,
                   slow_disk: bool = False, preexec_fn: Any = None,
                   timeout: float = 60) -> subprocess.Popen[bytes]:
        """`tether ARGS` as a process of its own (killed with the stack), its output drained;
        with `ready`, once that text has been printed. `slow_disk` runs it under
        support/slow_fsync.py (every fsync slowed and logged, see there)."""
        cmd = [sys.executable, str(SLOW_FSYNC), *args] if slow_disk else [TETHER, *args]
        proc = subprocess.Popen(cmd, env=env or self.env, cwd=self.root, preexec_fn=preexec_fn,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + timeout
        while ready is not None and ready not in seen:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"tether {' '.join(args)} did not start: {seen.decode(errors='replace')}")
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                seen += os.read(proc.stdout.fileno(), 4096)
        self._drain_log(proc, seen)
        return proc

    def start_recorder(self) -> subprocess.Popen[bytes]:
        """A recorder of its own (after `start_up("--no-recorder")`), so tests can kill it."""
        return self.start_role("recorder", ready=b"recorder is up", timeout=30)

    def recorded(self, sid: str | None = None) -> dict[str, Any]:
        """The recorder's row for a session (the newest one if sid is None)."""
        import sqlite3

        db = sqlite3.connect(self.home.recordings / "index.db", timeout=30)
        db.row_factory = sqlite3.Row
        try:
            row = (db.execute("SELECT * FROM sessions WHERE sid=?", (sid,)) if sid else
                   db.execute("SELECT * FROM sessions ORDER BY started DESC LIMIT 1")).fetchone()
            return dict(row) if row is not None else {}
        finally:
            db.close()

    def wait_recorded(self, status: str = "closed", after: float = 0.0,
                      timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the newest session that started after `after` has `status`.

        `after` is a time.time() taken before the session was asked for: the agent stamps
        `started` with its own time.time() later, so no margin is needed, and a margin would
        let the previous test's session (its row newer until this one's OPEN lands) match.
        """
        def done() -> dict[str, Any] | None:
            row = self.recorded()
            return row if row and row["started"] >= after and row["status"] == status else None
        return dict(wait_for(done, timeout=timeout, what=f"a recorded session {status}"))

    def recorded_shell(self, *lines: bytes) -> dict[str, Any]:
        """Run `lines` in a recorded shell, each after the previous prompt; the session's row."""
        start = time.time()
        client = PtyClient(self, "shell", "local")
        try:
            client.send(b"export PS1='[t''p]$ '\r")
            client.expect(rb"\[tp\]\$ ")
            for line in lines:
                client.send(line + b"\r")
                client.expect(rb"\[tp\]\$ ", timeout=30)
            client.send(b"exit\r")
            assert client.drain_until_exit(timeout=30) == 0
        finally:
            client.close()
        return self.wait_recorded("closed", after=start)

    def log_bytes(self, sid: str) -> bytes:
        return (self.home.recordings / "logs" / f"{sid}.log").read_bytes()


@contextlib.contextmanager
def policy(stack: Stack, body: str) -> Iterator[None]:
    """Replace the stack's policy for the duration; the authority re-reads it by itself."""
    from tether.edge.keys import write_private_file

    path = stack.home.policy
    saved = path.read_bytes()
    user = re.search(rb'users = \["([^"]+)"\]', saved)
    assert user is not None
    text = body.replace("OSUSER", OS_USER).replace("USER", user.group(1).decode())
    write_private_file(path, text.encode())
    try:
        yield
    finally:
        write_private_file(path, saved)


def statement(**extra: str) -> str:
    """A policy statement for the stack's user on `local`, with extra keys (TOML values)."""
    lines = ['[[statement]]', 'id = "test"', 'effect = "allow"', 'users = ["USER"]',
             'agents = ["local"]', 'actions = ["shell", "exec"]', 'run_as = ["OSUSER"]']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def running_stack(kind: str, root: Path) -> Iterator[Stack]:
    stack = Stack(kind, root)
    try:
        stack.setup()
        yield stack
    finally:
        stack.close()


class PtyClient:
    """A tether command on a real pseudo-terminal, driven like a person at a keyboard."""

    def __init__(self, stack: Stack, *args: str, cols: int = 80, rows: int = 24,
                 env: dict[str, str] | None = None) -> None:
        self.master, slave = open_pty(cols, rows)
        self.slave_name = os.ttyname(slave)
        self.proc = subprocess.Popen(
            [TETHER, *args], stdin=slave, stdout=slave, stderr=slave, env=env or stack.env, cwd=stack.root,
            start_new_session=True, preexec_fn=take_controlling_tty,
        )
        os.close(slave)
        self.buffer = b""

    def local_lflag(self) -> int:
        """The local-mode flags of the client's terminal (the slave side holds them)."""
        fd = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY)
        try:
            return int(termios.tcgetattr(fd)[3])
        finally:
            os.close(fd)

    def resize(self, cols: int, rows: int) -> None:
        set_winsize(self.master, cols, rows)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout: float) -> bool:
        chunk = read_ready(self.master, timeout)
        if chunk is None:
            return False
        if not chunk:
            raise EOFError(self.buffer[-2000:].decode(errors="replace"))
        self.buffer += chunk
        return True

    def expect(self, pattern: bytes, timeout: float = 15.0) -> re.Match[bytes]:
        """Wait until pattern appears in output not yet consumed; consume through it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buffer)
            if m:
                self.buffer = self.buffer[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{pattern!r} not seen within {timeout} s; last output: {self.buffer[-600:]!r}"
                )
            try:
                self._read(min(left, 0.5))
            except EOFError as exc:
                raise AssertionError(f"{pattern!r} not seen; the client exited: {exc}") from None

    def drain_until_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                self._read(0.2)
            except EOFError:
                break
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


class Spy:
    """An admin-level MQTT subscriber on `#` that keeps every payload it sees."""

    def __init__(self, stack: Stack) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from tether.edge.keys import Identity

        ident = Identity.load(stack.spy_identity)
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=ident.name, protocol=paho.MQTTv311)
        self.client.username_pw_set(ident.name, ident.broker["password"])
        self.client.on_connect = lambda c, *_: c.subscribe("#", 0)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", stack.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("spy could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
