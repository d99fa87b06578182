"""`tether broker`: errors a user can act on, reload, clean exit, files for Mosquitto."""

from __future__ import annotations

import grp
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.brokers import connected, free_port, poll, start_embedded

from tether.broker.files import BrokerUser, write_broker_files
from tether.commands.main import main


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "broker"
    write_broker_files(
        d,
        [
            BrokerUser.with_password("alice", "user", "pw-alice"),
            BrokerUser.with_password("web1", "agent", "pw-web1"),
        ],
    )
    return d


def test_port_in_use(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["broker", "--files", str(files), "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 255
    assert (
        f"127.0.0.1:{port} is already in use; is another broker running? pick another with --listen"
        in err
    )
    assert "Traceback" not in err


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["broker", "--files", str(tmp_path / "nothing"), "--listen", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 255
    assert "run `tether init` first" in err
    assert err.count("\n") == 1


def test_default_files_dir_is_under_tether_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    assert main(["broker", "--listen", "127.0.0.1:1"]) == 255
    assert str(tmp_path / "home" / "broker") in capsys.readouterr().err


@pytest.mark.parametrize("listen", ["1883", "localhost", "127.0.0.1:", "127.0.0.1:99999", ":1883"])
def test_bad_listen(files: Path, listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broker", "--files", str(files), "--listen", listen]) == 255
    assert "--listen wants HOST:PORT" in capsys.readouterr().err


def test_reload_without_a_running_broker_says_what_to_do(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["broker", "reload", "--files", str(files)]) == 255
    err = capsys.readouterr().err
    assert "kill -HUP $(pidof mosquitto)" in err and "systemctl reload mosquitto" in err


def test_reload_signals_the_running_broker_and_it_exits_cleanly(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = start_embedded(files, workdir=tmp_path / "work")
    try:
        assert "listening on mqtt://127.0.0.1:" in broker.log_text()
        assert (files / "broker.pid").read_text().strip() == str(broker.pid)
        write_broker_files(files, [BrokerUser.with_password("carol", "user", "pw-carol")])
        assert main(["broker", "reload", "--files", str(files)]) == 0
        assert f"pid {broker.pid}" in capsys.readouterr().out
        poll(lambda: "reloaded passwd and acl" in broker.log_text())
        with connected(broker, "carol", "pw-carol"):
            pass
    finally:
        rc = broker.stop()
    assert rc == 0
    assert not (files / "broker.pid").exists()


def test_ctrl_c_exits_cleanly(files: Path, tmp_path: Path) -> None:
    broker = start_embedded(files, workdir=tmp_path / "work")
    assert broker.stop(signal.SIGINT) == 0
    assert "Traceback" not in broker.log_text()


def test_mosquitto_files(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "etc" / "tether" / "broker"
    assert main(["broker", "mosquitto-files", "--files", str(files), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"password_file {out}/passwd" in printed
    assert f"acl_file {out}/acl" in printed
    assert "use_username_as_clientid true" in printed
    for name in ("passwd", "acl"):
        assert (out / name).read_bytes() == (files / name).read_bytes()
        st = (out / name).stat()
        if os.geteuid() == 0 and _has_group("mosquitto"):
            assert stat.S_IMODE(st.st_mode) == 0o640
            assert st.st_gid == grp.getgrnam("mosquitto").gr_gid
        else:
            assert stat.S_IMODE(st.st_mode) == 0o600


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_help_explains_and_does_not_import_amqtt(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tether.commands.main import main\n"
        "try:\n"
        "    main(['broker', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('AMQTT' if 'amqtt' in sys.modules else 'NO-AMQTT')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().endswith("NO-AMQTT")
    for words in ("passwd", "acl", "reload", "mosquitto-files", "$TETHER_HOME", "--listen"):
        assert words in result.stdout


def test_broker_listens_where_told(files: Path, tmp_path: Path) -> None:
    port = free_port()
    broker = start_embedded(files, port=port, workdir=tmp_path / "work")
    try:
        assert broker.port == port
        assert f"listening on mqtt://127.0.0.1:{port}" in broker.log_text()
    finally:
        broker.stop()
