"""Starting session processes: a login shell on a PTY, or a command on pipes, as the
grant's run-as user. Exit is observed through a pidfd, so no SIGCHLD handler is needed
and no zombie is left."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass

from tether.agent import shell_integration
from tether.edge.pty import open_pty, take_controlling_tty
from tether.errors import TetherError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SpawnError(TetherError):
    """The session process cannot be started; the message is shown to the user."""


@dataclass
class RunAs:
    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str
    shell: str
    switch: bool  # whether the agent must change identity (it runs as root)


def root_refusal(name: str, uid: int) -> str | None:
    """Why account `name` (uid `uid`) may not be run as, or None. The policy gives root
    only where it lists `root` literally; a pattern such as `app-*` must not reach it
    through another name for uid 0 (`toor`, or an alias made with `useradd -o -u 0`)."""
    if uid == 0 and name != "root":
        return (f"account {name!r} has uid 0 (it is root under another name); root is given "
                "only to grants whose run-as is literally 'root'")
    return None


def resolve_run_as(name: str) -> RunAs:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SpawnError(f"user {name!r} does not exist on this agent") from None
    refusal = root_refusal(name, pw.pw_uid)
    if refusal is not None:
        raise SpawnError(refusal)
    me = os.geteuid()
    if me != 0 and pw.pw_uid != me:
        raise SpawnError(
            f"this agent runs as {pwd.getpwuid(me).pw_name!r} and cannot switch to {name!r}; "
            "run the agent as root to allow run-as"
        )
    groups = os.getgrouplist(name, pw.pw_gid) if me == 0 else []
    shell = pw.pw_shell if pw.pw_shell and os.path.exists(pw.pw_shell) else "/bin/sh"
    if shell.endswith(("/nologin", "/false")):
        shell = "/bin/sh"
    return RunAs(name, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir, shell, me == 0)


def session_env(ra: RunAs, term: str | None, extra: dict[str, str]) -> dict[str, str]:
    env = {
        "HOME": ra.home,
        "USER": ra.name,
        "LOGNAME": ra.name,
        "SHELL": ra.shell,
        "PATH": DEFAULT_PATH,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if term:
        env["TERM"] = term
    for key in ("LANG", "LC_ALL", "LC_CTYPE", "COLORTERM"):
        if key in extra and isinstance(extra[key], str):
            env[key] = extra[key]
    return env


def _workdir(ra: RunAs) -> str:
    return ra.home if os.path.isdir(ra.home) else "/"


@dataclass
class Spawned:
    proc: subprocess.Popen[bytes]
    pidfd: int
    master: int | None = None  # PTY master (shell mode)
    stdin: int | None = None  # pipes (exec mode)
    stdout: int | None = None
    stderr: int | None = None


def _nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


def _pidfd(proc: subprocess.Popen[bytes]) -> int:
    """A pidfd for the new process; if there is none (out of fds), the process is ended
    and reaped here, since nothing else would ever see it exit."""
    try:
        return os.pidfd_open(proc.pid)
    except OSError as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise SpawnError(f"cannot watch the session's process: {exc.strerror}") from exc


def spawn_shell(ra: RunAs, term: str, cols: int, rows: int, extra_env: dict[str, str]) -> Spawned:
    master, slave = open_pty(cols, rows)
    try:
        if ra.switch:
            os.fchown(slave, ra.uid, -1)
            os.fchmod(slave, 0o620)
        # A login shell, as sshd starts it, with the OSC 133 marks the recorder needs.
        launch = shell_integration.prepare(
            ra.shell, session_env(ra, term, extra_env), ra.uid, ra.gid, ra.switch
        )
        proc = subprocess.Popen(
            launch.argv,
            executable=launch.executable,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=_workdir(ra),
            env=launch.env,
            start_new_session=True,
            preexec_fn=take_controlling_tty,
            close_fds=True,
            user=ra.uid if ra.switch else None,
            group=ra.gid if ra.switch else None,
            extra_groups=ra.groups if ra.switch else None,
        )
    except OSError as exc:
        os.close(master)
        raise SpawnError(f"cannot start {ra.shell}: {exc.strerror}") from exc
    except BaseException:
        os.close(master)  # whatever failed, the master must not outlive this call
        raise
    finally:
        os.close(slave)
    try:
        return Spawned(proc, _pidfd(proc), master=_nonblocking(master))
    except BaseException:
        os.close(master)
        raise


def spawn_exec(ra: RunAs, argv: list[str], extra_env: dict[str, str]) -> Spawned:
    env = session_env(ra, None, extra_env)
    exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
    if exe is None:
        raise SpawnError(f"{argv[0]}: command not found")
    try:
        proc = subprocess.Popen(
            argv,
            executable=exe,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=_workdir(ra),
            env=env,
            start_new_session=True,
            close_fds=True,
            user=ra.uid if ra.switch else None,
            group=ra.gid if ra.switch else None,
            extra_groups=ra.groups if ra.switch else None,
        )
    except OSError as exc:
        raise SpawnError(f"{argv[0]}: {exc.strerror}") from exc
    assert proc.stdin and proc.stdout and proc.stderr
    return Spawned(
        proc,
        _pidfd(proc),
        stdin=_nonblocking(proc.stdin.fileno()),
        stdout=_nonblocking(proc.stdout.fileno()),
        stderr=_nonblocking(proc.stderr.fileno()),
    )
