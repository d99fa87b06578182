"""Deployment paths a person follows from docs/operations.md: the CLI-only Mosquitto
setup, and TLS to the broker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stack import TETHER, Stack, wait_for
from support.brokers import BrokerProcess, free_port, start_embedded, start_mosquitto
from support.pki import make_pki

from tether.edge.keys import write_private_file
from tether.encoding import dumps, loads


def _up(stack: Stack, broker: BrokerProcess) -> None:
    stack.broker = broker
    stack.start_up()


def test_cli_only_mosquitto_deployment(tmp_path: Path) -> None:
    """tether init, tether broker mosquitto-files, mosquitto -c mosquitto.conf, tether up."""
    stack = Stack("mosquitto", tmp_path)
    stack.port = free_port()
    stack.env = dict(os.environ, TETHER_HOME=str(stack.home.root))
    try:
        init = stack.tether("init", "--broker", f"127.0.0.1:{stack.port}")
        assert init.returncode == 0, init.stderr
        assert b"mosquitto-files" in init.stdout
        files = tmp_path / "etc-tether-broker"
        out = stack.tether("broker", "mosquitto-files", "--out", str(files))
        assert out.returncode == 0, out.stderr
        _up(stack, start_mosquitto(files, tmp_path / "mosquitto", port=stack.port))
        r = stack.tether("run", "local", "--", "echo", "deployed")
        assert (r.returncode, r.stdout) == (0, b"deployed\n"), r.stderr
    finally:
        stack.close()


def test_sessions_over_tls(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    stack = Stack("amqtt", tmp_path)
    plain, tls = free_port(), free_port()
    stack.port = tls
    stack.env = dict(os.environ, TETHER_HOME=str(stack.home.root))
    try:
        assert stack.tether("init", "--broker", f"127.0.0.1:{tls}").returncode == 0
        for ident in [stack.home.user_identity, stack.home.authority_identity,
                      stack.home.agent_identity("local"), stack.home.recorder_identity()]:
            doc = loads(ident.read_bytes())
            doc["broker"]["tls"] = {"ca": str(pki["ca.crt"])}
            write_private_file(ident, dumps(doc))
        broker = start_embedded(stack.home.broker_files, port=plain, workdir=stack.root / "tls-broker", extra_args=(
            "--tls-listen", f"127.0.0.1:{tls}", "--certfile", str(pki["server.crt"]),
            "--keyfile", str(pki["server.key"])))
        _up(stack, broker)
        r = stack.tether("run", "local", "--", "echo", "over-tls")
        assert (r.returncode, r.stdout) == (0, b"over-tls\n"), r.stderr
        # A client that does not trust the CA must fail with a clear message.
        doc = loads(stack.home.user_identity.read_bytes())
        doc["broker"]["tls"] = {"ca": str(pki["rogue-ca.crt"])}
        rogue = tmp_path / "rogue.json"
        write_private_file(rogue, dumps(doc))
        bad = stack.tether("run", "--identity", str(rogue), "local", "--", "true")
        assert bad.returncode == 255
        assert f"127.0.0.1:{tls}".encode() in bad.stderr and b"Traceback" not in bad.stderr
    finally:
        stack.close()


def test_help_is_fast_and_explains() -> None:
    r = subprocess.run([TETHER, "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0
    for word in (b"up", b"shell", b"run", b"ls", b"broker", b"tether up"):
        assert word in r.stdout
    for cmd in ("shell", "run", "ls", "up", "broker", "authority", "agent", "init"):
        h = subprocess.run([TETHER, cmd, "--help"], capture_output=True, timeout=10)
        assert h.returncode == 0 and len(h.stdout) > 200, cmd



def test_tether_up_zero_setup_then_add_a_user(tmp_path: Path) -> None:
    """The README path: `tether up` alone, then a second user added while it runs."""
    port = free_port()
    env = dict(os.environ, TETHER_HOME=str(tmp_path / "home"))
    up = subprocess.Popen([TETHER, "up", "--listen", f"127.0.0.1:{port}"], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert up.stdout is not None
        banner = b""
        while b"Stop with Ctrl-C" not in banner:
            line = up.stdout.readline()
            assert line, f"tether up exited: {banner!r}"
            banner += line
        assert b"tether shell local" in banner

        def tether(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([TETHER, *args], env=env, cwd=tmp_path, capture_output=True, timeout=60)

        wait_for(lambda: b" online " in tether("ls").stdout, what="agent local online")
        r = tether("run", "local", "--", "echo", "zero-setup")
        assert (r.returncode, r.stdout) == (0, b"zero-setup\n"), r.stderr
        import getpass

        carol = tmp_path / "carol.json"
        add = tether("authority", "user", "add", "carol", "--allow", "local",
                     "--run-as", getpass.getuser(), "--out", str(carol))
        assert add.returncode == 0, add.stderr
        assert oct(carol.stat().st_mode & 0o777) == "0o600"
        reload = tether("broker", "reload")
        assert reload.returncode == 0, reload.stderr
        r = wait_for(lambda: (x := tether("run", "--identity", str(carol), "local", "--", "id", "-un"))
                     .returncode == 0 and x, what="carol can run")
        assert r.stdout.strip() == getpass.getuser().encode()
    finally:
        up.terminate()
        assert up.wait(20) == 0
