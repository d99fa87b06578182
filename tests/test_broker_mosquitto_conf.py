"""The production mosquitto.conf: the settings tether relies on, and a real Mosquitto that
runs from it opening exactly the listener it was told to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.brokers import MOSQUITTO_CONF, render_test_mosquitto_conf, start_mosquitto

from tether.broker.files import BrokerUser, write_broker_files


def directives() -> list[tuple[str, str]]:
    out = []
    for line in MOSQUITTO_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.append((key, value.strip()))
    return out


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("per_listener_settings", "false"),
        ("allow_anonymous", "false"),
        ("password_file", "/etc/tether/broker/passwd"),
        ("acl_file", "/etc/tether/broker/acl"),
        ("plugin", "/usr/local/lib/tether/tether_console_auth.so"),
        ("plugin_opt_console_keys", "/etc/tether/broker/console-keys"),
        ("persistence", "true"),
        ("persistence_location", "/var/lib/mosquitto/"),
        ("set_tcp_nodelay", "true"),
        ("max_queued_messages", "16384"),
        ("max_packet_size", "131072"),
        ("listener", "1883 127.0.0.1"),
        ("use_username_as_clientid", "true"),
    ],
)
def test_required_settings(key: str, value: str) -> None:
    assert (key, value) in directives()


def test_other_required_settings_are_present() -> None:
    keys = {k for k, _ in directives()}
    assert {"max_inflight_messages", "autosave_interval"} <= keys


def test_username_as_client_id_follows_every_listener() -> None:
    """Placed before the first `listener`, Mosquitto 2.0 opens 0.0.0.0:1883 for it."""
    seen_listener = False
    pending = False
    for key, _ in directives():
        if key == "listener":
            assert not pending, "a listener without use_username_as_clientid"
            seen_listener, pending = True, True
        elif key == "use_username_as_clientid":
            assert seen_listener, "use_username_as_clientid before the first listener"
            pending = False
    assert seen_listener and not pending


def test_credit_window_fits_a_quarter_of_the_queue() -> None:
    queue = int(dict(directives())["max_queued_messages"])
    frames_per_window = 512  # 1 MiB window, frames of at least 2 KiB
    assert 4 * frames_per_window <= queue


def test_rewrite_touches_only_the_test_specific_lines(tmp_path: Path) -> None:
    text = render_test_mosquitto_conf(tmp_path / "files", tmp_path / "work", 18883, stay_root=False)
    original = [line for line in MOSQUITTO_CONF.read_text().splitlines()]
    rewritten = text.splitlines()
    changed = {a.split()[0] for a, b in zip(original, rewritten, strict=False) if a != b}
    assert changed <= {"listener", "password_file", "acl_file", "persistence_location", "plugin",
                       "plugin_opt_console_keys"}
    assert f"password_file {tmp_path.resolve()}/files/passwd" in rewritten
    assert f"plugin_opt_console_keys {tmp_path.resolve()}/files/console-keys" in rewritten
    assert "listener 18883 127.0.0.1" in rewritten


def test_real_mosquitto_opens_only_the_configured_listener(tmp_path: Path) -> None:
    write_broker_files(tmp_path / "files", [BrokerUser.with_password("a", "agent", "pw")])
    broker = start_mosquitto(tmp_path / "files", tmp_path / "work")
    try:
        log = broker.log_text()
        opened = re.findall(r"Opening (ipv[46]|websockets) listen socket on port (\d+)", log)
        assert opened == [("ipv4", str(broker.port)), ("websockets", str(broker.ws_port))], log
        assert "Error" not in log
    finally:
        broker.stop()
