"""Password and broker files: the Mosquitto $7$ format, atomic 0600 writes, and a real
Mosquitto accepting what we write (right password in, wrong password out)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import ProbeClient, connected, start_mosquitto

from tether.acl import parse_acl
from tether.broker.files import (
    BrokerFilesError,
    BrokerUser,
    read_broker_files,
    write_broker_files,
)
from tether.broker.passwd import (
    PasswdError,
    format_passwd,
    hash_password,
    parse_passwd,
    read_passwd,
    valid_hash,
    verify_password,
    write_passwd,
)

HASH_RE = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- hashing ------------------------------------------------------------------------------


def test_hash_format_is_mosquittos() -> None:
    hashed = hash_password("s3cret")
    assert HASH_RE.match(hashed), hashed
    assert hashed != hash_password("s3cret")  # fresh salt each time
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret ", hashed)
    assert not verify_password("", hashed)


def test_iterations_and_unicode() -> None:
    hashed = hash_password("pässwörd", iterations=1000)
    assert hashed.startswith("$7$1000$")
    assert verify_password("pässwörd", hashed)
    assert not verify_password("passwort", hashed)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plain",
        "$7$101$c2FsdA==$aGFzaA==",  # salt and hash of the wrong length
        "$7$0$" + hash_password("x").split("$", 3)[3],
        "$7$abc$" + hash_password("x").split("$", 3)[3],
        "$8$" + hash_password("x")[3:],
        hash_password("x")[:-4] + "!!==",
        hash_password("x") + "$extra",
    ],
)
def test_malformed_hashes_never_verify(bad: str) -> None:
    assert not valid_hash(bad)
    assert not verify_password("x", bad)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_verifies_hashes_made_by_mosquitto_passwd(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-H", algorithm, "-c", "-b", str(path), "alice", "pw-ä 1"],
        check=True,
        capture_output=True,
    )
    entries = read_passwd(path)
    assert list(entries) == ["alice"]
    assert entries["alice"].startswith("$7$101$" if algorithm == "sha512-pbkdf2" else "$6$")
    assert verify_password("pw-ä 1", entries["alice"])
    assert not verify_password("pw-ä 2", entries["alice"])


def test_parse_passwd_like_mosquitto() -> None:
    good = hash_password("x")
    text = f"# comment\nno colon here\n alice : {good} \nbob:not-a-hash\ncarol:{good}:extra\n"
    assert parse_passwd(text) == {"alice": good, "carol": good}


def test_format_passwd_refuses_what_cannot_be_stored() -> None:
    with pytest.raises(PasswdError):
        format_passwd({"a:b": hash_password("x")})
    with pytest.raises(PasswdError):
        format_passwd({"alice": "nope"})


def test_write_passwd_is_0600_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("old\n")
    path.chmod(0o644)
    entries = {"bob": hash_password("b"), "alice": hash_password("a")}
    write_passwd(path, entries)
    assert mode(path) == 0o600
    assert read_passwd(path) == entries
    assert path.read_text().splitlines()[0].startswith("alice:")  # sorted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]  # no temp files left


# -- broker files -------------------------------------------------------------------------


def users() -> list[BrokerUser]:
    return [
        BrokerUser.with_password("web1", "agent", "pw-web1"),
        BrokerUser.with_password("alice", "user", "pw-alice"),
        BrokerUser.with_password("root", "admin", "pw-root"),
    ]


def test_write_broker_files(tmp_path: Path) -> None:
    d = tmp_path / "broker"
    write_broker_files(d, users())
    assert mode(d) == 0o700
    assert mode(d / "passwd") == 0o600 and mode(d / "acl") == 0o600
    assert mode(d / "console-keys") == 0o600
    passwd, acl = read_broker_files(d)
    assert set(passwd) == {"web1", "alice", "root"}
    assert verify_password("pw-alice", passwd["alice"])
    assert acl.permits("web1", "tether/v1/a/web1/presence", "publish")
    assert not acl.permits("alice", "tether/v1/a/web1/presence", "publish")
    assert sorted(p.name for p in d.iterdir()) == ["acl", "console-keys", "passwd"]
    assert (d / "console-keys").read_text() == ""  # no console users


def test_write_broker_files_custom_prefix(tmp_path: Path) -> None:
    write_broker_files(tmp_path, users(), prefix="acme/t1")
    _, acl = read_broker_files(tmp_path)
    assert acl.permits("web1", "acme/t1/a/web1/presence", "publish")
    assert not acl.permits("web1", "tether/v1/a/web1/presence", "publish")


@pytest.mark.parametrize(
    "bad",
    [
        [BrokerUser("a/b", "user", hash_password("x"))],
        [BrokerUser("a+", "user", hash_password("x"))],
        [BrokerUser("alice", "user", "plaintext")],
        [BrokerUser("alice", "wizard", hash_password("x"))],
        [BrokerUser("alice", "user", hash_password("x"))] * 2,
    ],
)
def test_write_broker_files_refuses_and_writes_nothing(
    tmp_path: Path, bad: list[BrokerUser]
) -> None:
    d = tmp_path / "broker"
    with pytest.raises(BrokerFilesError):
        write_broker_files(d, bad)
    assert not d.exists()


def test_group_readable_files(tmp_path: Path) -> None:
    gid = os.getgid()
    write_broker_files(tmp_path / "b", users(), group=gid)
    for name in ("passwd", "acl"):
        st = (tmp_path / "b" / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == gid
    assert mode(tmp_path / "b") == 0o750


def test_read_broker_files_reports_bad_acl(tmp_path: Path) -> None:
    write_broker_files(tmp_path, users())
    (tmp_path / "acl").write_text("topic read a/#/b\n")
    with pytest.raises(BrokerFilesError, match="invalid ACL topic"):
        read_broker_files(tmp_path)
    (tmp_path / "acl").unlink()
    with pytest.raises(FileNotFoundError):
        read_broker_files(tmp_path)


# -- a real Mosquitto reads them ------------------------------------------------------------


def test_mosquitto_accepts_our_files(tmp_path: Path) -> None:
    custom = BrokerUser("slow", "user", hash_password("pw-slow", iterations=5000))
    write_broker_files(tmp_path / "files", [*users(), custom])
    broker = start_mosquitto(tmp_path / "files", tmp_path / "work")
    try:
        assert "Error" not in broker.log_text(), broker.log_text()
        for name, password in [("alice", "pw-alice"), ("web1", "pw-web1"), ("slow", "pw-slow")]:
            with connected(broker, name, password):
                pass
        for name, password in [("alice", "pw-web1"), ("alice", ""), ("nobody", "pw")]:
            client = ProbeClient(broker, name, password)
            try:
                assert not client.connect(), (name, password)
            finally:
                client.close()
        # It loaded the acl too: same parse as ours.
        parse_acl((tmp_path / "files" / "acl").read_text())
    finally:
        broker.stop()


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="tether-prod-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _mosquitto_account() -> tuple[int, int] | None:
    try:
        return pwd.getpwnam("mosquitto").pw_uid, grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return None


@pytest.mark.skipif(
    os.geteuid() != 0 or _mosquitto_account() is None,
    reason="needs root and a mosquitto user, to run Mosquitto as it runs in production",
)
def test_production_permissions_work_for_a_privilege_dropping_mosquitto(
    world_traversable_dir: Path,
) -> None:
    """Mosquitto started as root drops to `mosquitto` before it reads passwd and acl (at
    start and on every reload): group=mosquitto files must work for both."""
    account = _mosquitto_account()
    assert account is not None
    uid, gid = account
    files, work = world_traversable_dir / "files", world_traversable_dir / "work"
    write_broker_files(files, users(), group="mosquitto")
    work.mkdir()
    os.chown(work, uid, gid)
    broker = start_mosquitto(files, work, stay_root=False)
    try:
        with connected(broker, "alice", "pw-alice"):
            pass
        write_broker_files(
            files, [*users(), BrokerUser.with_password("bob", "user", "pw-bob")], group="mosquitto"
        )
        broker.reload()
        assert "Error" not in broker.log_text(), broker.log_text()
        with connected(broker, "bob", "pw-bob"):
            pass
    finally:
        broker.stop()
