"""`tether broker`: run the embedded broker, write files for Mosquitto, or reload.

amqtt is imported only inside the run functions, so `tether broker --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tether.commands.main import UserError
from tether.topics import DEFAULT_PREFIX

if TYPE_CHECKING:
    from tether.broker.embedded import EmbeddedBroker

PID_FILE = "broker.pid"
DEFAULT_LISTEN = "127.0.0.1:1883"

_DESCRIPTION = """\
Run tether's embedded MQTT broker (amqtt) in the foreground, or prepare a production
Mosquitto.

Both brokers read the same two files from the broker files directory: `passwd`
(Mosquitto $7$ password hashes) and `acl` (a Mosquitto acl_file). The authority writes
them whenever principals change; `tether init` creates the first ones. The embedded
broker enforces that acl file with the same semantics as Mosquitto, so the rules are
literally the same text on both.
"""

_EPILOG = """\
examples:
  tether broker                               serve 127.0.0.1:1883 from $TETHER_HOME/broker
  tether broker --listen 127.0.0.1:18830      another port
  tether broker reload                        re-read passwd and acl (SIGHUP)
  tether broker mosquitto-files --out /etc/tether/broker
                                              files for Mosquitto, plus the config lines

$TETHER_HOME defaults to ~/.local/state/tether. The broker stops cleanly on Ctrl-C or
SIGTERM and reloads its files on SIGHUP.
"""


def default_files_dir() -> Path:
    home = os.environ.get("TETHER_HOME")
    root = Path(home).expanduser() if home else Path("~/.local/state/tether").expanduser()
    return root / "broker"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise UserError(f"--listen wants HOST:PORT, e.g. {DEFAULT_LISTEN}; got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_s)


def _fmt(host: str, port: int) -> str:
    from tether.hostport import format_hostport

    return format_hostport(host, port)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--files",
        type=Path,
        default=None,
        metavar="DIR",
        help="broker files directory with passwd and acl (default: $TETHER_HOME/broker)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"MQTT over TCP address (default: {DEFAULT_LISTEN}; loopback only unless you say so)",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="tether's topic prefix: where presence is (rate-limited, retained) and what the acl "
        f"should have rules for (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--ws-listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve MQTT over websockets here (for the browser console)",
    )
    parser.add_argument(
        "--tls-listen", default=None, metavar="HOST:PORT", help="also serve MQTT over TLS here"
    )
    parser.add_argument("--certfile", type=Path, help="TLS server certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, help="TLS server key (PEM)")
    parser.add_argument(
        "--cafile",
        type=Path,
        help="TLS: require client certificates signed by this CA (in addition to passwords)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections and denials")
    sub = parser.add_subparsers(dest="action", metavar="[ACTION]")
    mf = sub.add_parser(
        "mosquitto-files",
        help="write passwd and acl for Mosquitto and print the mosquitto.conf lines",
        description="Copy the broker files (passwd, acl) to DIR for a production Mosquitto, "
        "check that Mosquitto will load them, and print the lines to put in mosquitto.conf. "
        "The authority keeps them current afterwards with write_broker_files().",
    )
    mf.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write them")
    mf.add_argument(
        "--files", type=Path, default=argparse.SUPPRESS, metavar="DIR", help="source directory"
    )
    mf.add_argument(
        "--group",
        default=None,
        help="make the files 0640 and the directory 0750 with this group, so the broker can "
        "read them (default when run as root: mosquitto, if that group exists)",
    )
    rl = sub.add_parser(
        "reload",
        help="make the running embedded broker re-read passwd and acl (SIGHUP)",
        description="Send SIGHUP to the embedded broker whose pid is in DIR/broker.pid. "
        "For Mosquitto use: kill -HUP $(pidof mosquitto), or systemctl reload mosquitto.",
    )
    rl.add_argument(
        "--files", type=Path, default=argparse.SUPPRESS, metavar="DIR", help="broker files dir"
    )


def run(args: argparse.Namespace) -> int:
    files_dir: Path = args.files if args.files is not None else default_files_dir()
    if args.action == "mosquitto-files":
        return _mosquitto_files(files_dir, args.out, args.group)
    if args.action == "reload":
        return _reload(files_dir)
    return _serve(args, files_dir)


# -- tether broker ------------------------------------------------------------------------


def _serve(args: argparse.Namespace, files_dir: Path) -> int:
    import asyncio
    import logging

    from tether.broker.embedded import EmbeddedBroker, TlsConfig

    host, port = parse_listen(args.listen)
    ws_port: int | None = None
    if args.ws_listen:
        ws_host, ws_port = parse_listen(args.ws_listen)
        if ws_host != host:
            raise UserError("--ws-listen must use the same host as --listen")
    tls: TlsConfig | None = None
    if args.tls_listen:
        if args.certfile is None or args.keyfile is None:
            raise UserError("--tls-listen needs --certfile and --keyfile")
        tls_host, tls_port = parse_listen(args.tls_listen)
        tls = TlsConfig(tls_port, args.certfile, args.keyfile, args.cafile, tls_host)
    _check_files(files_dir)

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s tether broker: %(message)s", stream=sys.stderr
    )
    logging.getLogger("tether.broker").setLevel(logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    broker = EmbeddedBroker(files_dir, host, port, args.prefix, ws_port=ws_port, tls=tls)
    try:
        return asyncio.run(_serve_async(broker, files_dir))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"{_fmt(host, port)} is already in use; is another broker running? "
                "pick another with --listen"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UserError(f"cannot listen on {_fmt(host, port)}: {exc.strerror}") from None
        raise


async def _serve_async(broker: EmbeddedBroker, files_dir: Path) -> int:
    import asyncio

    from tether.broker.files import BrokerFilesError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        await broker.start()
    except FileNotFoundError:
        raise UserError(f"no broker files in {files_dir}; run `tether init` first") from None
    except BrokerFilesError as exc:
        raise UserError(str(exc)) from None

    def on_hup() -> None:
        try:
            broker.reload()
        except (OSError, ValueError) as exc:
            print(f"tether broker: reload failed, keeping old rules: {exc}", file=sys.stderr)
        else:
            print("tether broker: reloaded passwd and acl", file=sys.stderr)

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    pid_path = files_dir / PID_FILE
    _write_pid(pid_path)
    addrs = [f"mqtt://{_fmt(broker.host, broker.port)}"]
    if broker.ws_port is not None:
        addrs.append(f"ws://{_fmt(broker.host, broker.ws_port)}")
    if broker.tls is not None and broker.tls_port is not None:
        addrs.append(f"mqtts://{_fmt(broker.tls.host, broker.tls_port)}")
    print(
        f"tether broker: listening on {', '.join(addrs)} (files {files_dir}, pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await broker.stop()
        _remove_pid(pid_path)
    return 0


def _check_files(files_dir: Path) -> None:
    from tether.broker.files import ACL_FILE, PASSWD_FILE

    missing = [n for n in (PASSWD_FILE, ACL_FILE) if not (files_dir / n).is_file()]
    if missing:
        raise UserError(
            f"no broker files in {files_dir} (missing {', '.join(missing)}); run `tether init` "
            "first, or point --files at the directory with passwd and acl"
        )


def _write_pid(path: Path) -> None:
    from tether.broker.passwd import atomic_write

    with contextlib.suppress(OSError):
        atomic_write(path, f"{os.getpid()}\n".encode(), mode=0o644)


def _remove_pid(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


# -- tether broker reload -----------------------------------------------------------------

_MOSQUITTO_RELOAD = (
    "For Mosquitto, reload with: kill -HUP $(pidof mosquitto)  (or: systemctl reload mosquitto)"
)


def _reload(files_dir: Path) -> int:
    pid_path = files_dir / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        raise UserError(
            f"no running embedded broker found ({pid_path} missing or unreadable). "
            + _MOSQUITTO_RELOAD
        ) from None
    if not _is_tether_broker(pid):
        raise UserError(
            f"pid {pid} in {pid_path} is not a running tether broker. " + _MOSQUITTO_RELOAD
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise UserError(f"pid {pid} in {pid_path} is gone. " + _MOSQUITTO_RELOAD) from None
    except PermissionError:
        raise UserError(f"not allowed to signal pid {pid}; run as its owner") from None
    print(f"sent SIGHUP to the tether broker (pid {pid}); it re-reads {files_dir}")
    return 0


def _is_tether_broker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        # No /proc (not Linux): trust the pid file if the process exists.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # `tether broker` and `tether up` (which embeds the broker) both reload on SIGHUP.
    return (b"broker" in cmdline or b"up" in cmdline) and any(b"tether" in part for part in cmdline)


# -- tether broker mosquitto-files --------------------------------------------------------


def _mosquitto_files(files_dir: Path, out: Path, group: str | None) -> int:
    import grp

    from tether.broker.files import (
        ACL_FILE,
        CONSOLE_KEYS_FILE,
        PASSWD_FILE,
        BrokerFilesError,
        read_broker_files,
    )
    from tether.broker.passwd import atomic_write

    _check_files(files_dir)
    try:
        passwd, _acl = read_broker_files(files_dir)
    except BrokerFilesError as exc:
        raise UserError(str(exc)) from None
    if not passwd:
        raise UserError(f"{files_dir / PASSWD_FILE} has no usable entries")
    if group is None and os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            grp.getgrnam("mosquitto")
            group = "mosquitto"
    gid: int | None = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UserError(f"no such group {group!r}") from None
    out = out.expanduser().resolve()
    file_mode, dir_mode = (0o600, 0o700) if gid is None else (0o640, 0o750)
    try:
        out.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        if gid is not None:
            shutil.chown(out, group=gid)
            out.chmod(dir_mode)
        for name in (CONSOLE_KEYS_FILE, PASSWD_FILE, ACL_FILE):
            source = files_dir / name
            data = source.read_bytes() if source.exists() or name != CONSOLE_KEYS_FILE else b""
            atomic_write(out / name, data, mode=file_mode, group=gid)
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from None
    readable = f"group {group} can read them" if group else "only the owner can read them"
    print(f"wrote {out / PASSWD_FILE}, {out / ACL_FILE} and {out / CONSOLE_KEYS_FILE} "
          f"({len(passwd)} principals; {readable})")
    print()
    print("Put these lines in mosquitto.conf (tether's mosquitto.conf has them):")
    print()
    print("per_listener_settings false")
    print("allow_anonymous false")
    print(f"password_file {out / PASSWD_FILE}")
    print(f"acl_file {out / ACL_FILE}")
    print("# web console logins (./install.sh builds and installs the plugin):")
    print("plugin /usr/local/lib/tether/tether_console_auth.so")
    print(f"plugin_opt_console_keys {out / CONSOLE_KEYS_FILE}")
    print("# and after every `listener` line:")
    print("use_username_as_clientid true")
    print()
    print("Mosquitto reads these files as its own user (mosquitto), at start and on reload.")
    print(_MOSQUITTO_RELOAD)
    return 0
