"""Shell integration: real bash and dash on real PTYs emit the OSC 133 marks, and the user's own
startup files (aliases, PROMPT_COMMAND, PS1, DEBUG trap) behave as in a plain login shell.
zsh is not installed on the test machines, so it has no test here."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.agent import shell_integration as si
from tether.agent.process import RunAs, spawn_shell
from tether.edge.pty import read_ready, spawn_on_pty

BASH = shutil.which("bash")
DASH = shutil.which("dash")
MARK = re.compile(rb"\x1b\]133;([ABCD])(?:;([^\x07\x1b]*))?(?:\x07|\x1b\\)")
PROMPT_END = rb"\x1b\]133;B\x07"


class Shell:
    """A process on a PTY, read with an expect-style helper (no sleeps)."""

    def __init__(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        self.master = master
        self.proc = proc
        self.buffer = b""

    @classmethod
    def start(cls, launch: si.Launch, cwd: str) -> Shell:
        proc, master = spawn_on_pty(launch.argv, executable=launch.executable, cwd=cwd,
                                    env=launch.env)
        return cls(master, proc)

    def _read(self, timeout: float) -> None:
        data = read_ready(self.master, timeout)
        if data is not None:
            if not data:
                raise EOFError
            self.buffer += data

    def expect(self, pattern: bytes, timeout: float = 10.0) -> bytes:
        """Consume output through the first match of pattern; return what was consumed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buffer)
            if m:
                seen, self.buffer = self.buffer[: m.end()], self.buffer[m.end():]
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; output: {self.buffer[-800:]!r}")
            try:
                self._read(min(left, 0.5))
            except EOFError:
                raise AssertionError(f"{pattern!r} not seen before EOF: {self.buffer!r}") from None

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def run(self, line: bytes) -> tuple[bytes, float]:
        """Type a line; return the output up to the end of the next prompt, and how long it
        took the next prompt to come."""
        start = time.monotonic()
        self.send(line + b"\r")
        out = self.expect(PROMPT_END)
        return out, time.monotonic() - start

    def close(self) -> int:
        self.send(b"exit\r")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self._read(0.5)
            except EOFError:
                break
        os.close(self.master)
        return self.proc.wait(timeout=10)


def marks(out: bytes) -> list[tuple[str, str | None]]:
    return [(m.group(1).decode(), None if m.group(2) is None else m.group(2).decode())
            for m in MARK.finditer(out)]


def between(out: bytes, first: bytes, second: bytes) -> bytes:
    """The bytes between the first mark starting with `first` and the next `second` mark."""
    m1 = re.search(rb"\x1b\]133;" + first + rb"[^\x07]*\x07", out)
    assert m1, out
    m2 = re.compile(rb"\x1b\]133;" + second + rb"[^\x07]*\x07").search(out, m1.end())
    assert m2, out
    return out[m1.end(): m2.start()]


def cmdline(out: bytes) -> str:
    (c,) = [v for k, v in marks(out) if k == "C"]
    assert c is not None and c.startswith("cmdline_url="), out
    return urllib.parse.unquote(c.removeprefix("cmdline_url="))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def bash_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "USER": pwd.getpwuid(os.getuid()).pw_name,
            "PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"}


def start(shell: str, home: Path, env: dict[str, str] | None = None) -> tuple[Shell, si.Launch]:
    directory = si.IntegrationDir(str(home.parent))
    launch = si.prepare(shell, env or bash_env(home), os.getuid(), os.getgid(), False,
                        environ={}, directory=directory)
    return Shell.start(launch, str(home)), launch


BASH_PROFILE = r"""
alias greet='echo hello-from-$((40+2))'
PROMPT_COMMAND='echo "user-pc-saw-$?"'
PS1='custom-prompt> '
echo "profile-ran login=$(shopt -q login_shell && echo yes) zero=$0"
"""


@pytest.fixture
def bash_session(home: Path) -> Iterator[tuple[Shell, Path, si.Launch]]:
    if BASH is None:
        pytest.fail("bash is required")
    (home / ".bash_profile").write_text(BASH_PROFILE)
    (home / ".bashrc").write_text("echo BASHRC-SHOULD-NOT-RUN\n")
    (home / ".profile").write_text("echo PROFILE-SHOULD-NOT-RUN\n")
    before = snapshot(home)
    shell, launch = start(BASH, home)
    try:
        yield shell, home, launch
    finally:
        shell.close()
    after = snapshot(home)
    after.pop(".bash_history", None)  # bash itself saves the history on exit
    assert after == before


def test_bash_marks_alias_prompt_command(bash_session: tuple[Shell, Path, si.Launch]) -> None:
    shell, home, launch = bash_session
    # The integration lives outside HOME, and the shell is a login shell named -bash.
    assert not launch.env["ENV"].startswith(str(home))
    banner = shell.expect(PROMPT_END)
    assert b"profile-ran login=yes zero=-bash" in banner
    assert b"SHOULD-NOT-RUN" not in banner
    assert marks(banner) == [("A", None), ("B", None)]
    assert between(banner, b"A", b"B") == b"custom-prompt> "
    assert b"user-pc-saw-0" in banner

    out, _ = shell.run(b"greet")
    assert [k for k, _ in marks(out)] == ["C", "D", "A", "B"]
    assert cmdline(out) == "greet"
    assert b"hello-from-42" in between(out, b"C", b"D")
    assert ("D", "0") in marks(out)

    out, _ = shell.run(b"false")
    assert [k for k, _ in marks(out)] == ["C", "D", "A", "B"]
    assert cmdline(out) == "false"
    assert ("D", "1") in marks(out)
    # The user's PROMPT_COMMAND runs after D and sees the command's status.
    assert b"user-pc-saw-1" in between(out, b"D", b"A")

    out, _ = shell.run(b"")
    assert [k for k, _ in marks(out)] == ["A", "B"]
    assert b"user-pc-saw-1" in out  # $? is still that of `false`

    out, took = shell.run(b"sleep 1")
    assert [k for k, _ in marks(out)] == ["C", "D", "A", "B"]
    assert cmdline(out) == "sleep 1" and ("D", "0") in marks(out)
    assert 0.9 <= took < 5

    line = "echo hi; echo 'a b%\u00e9' \"$((6*7))\""
    out, _ = shell.run(line.encode())
    assert cmdline(out) == line
    assert between(out, b"C", b"D") == "hi\r\na b%\u00e9 42\r\n".encode()

    out, _ = shell.run(b"sh -c 'exit 7'")
    assert ("D", "7") in marks(out)
    assert b"user-pc-saw-7" in out

    # Nothing of ours is left in the user's environment.
    out, _ = shell.run(b"env | grep -c -e ^ENV= -e ^TETHER_ -e POSIXLY; shopt -qo posix || echo not-posix")
    assert b"0\r\nnot-posix" in between(out, b"C", b"D")


def test_bash_debug_trap_array_prompt_command_and_new_ps1(home: Path, tmp_path: Path) -> None:
    assert BASH is not None
    logout = tmp_path / "logged-out"
    (home / ".bash_login").write_text(
        "source ~/.bashrc\n"
        "PROMPT_COMMAND=('echo pc-one' 'echo pc-two-$?')\n"
        "trap 'debug_count=$((debug_count+1))' DEBUG\n"
        "HISTCONTROL=ignorespace\n"
    )
    (home / ".bashrc").write_text("alias rcalias='echo from-bashrc'\n")
    (home / ".bash_logout").write_text(f"echo bye > {logout}\n")
    shell, _ = start(BASH, home)
    try:
        banner = shell.expect(PROMPT_END)
        assert b"pc-one" in banner and b"pc-two-0" in banner
        out, _ = shell.run(b"rcalias; (exit 3)")
        assert b"from-bashrc" in between(out, b"C", b"D")
        assert ("D", "3") in marks(out) and b"pc-two-3" in between(out, b"D", b"A")

        # The user's DEBUG trap still fires for their commands (ours are not DEBUG-based).
        out, _ = shell.run(b"echo count=$debug_count")
        first = int(re.search(rb"count=(\d+)", between(out, b"C", b"D")).group(1))  # type: ignore[union-attr]
        out, _ = shell.run(b"echo count=$debug_count")
        second = int(re.search(rb"count=(\d+)", between(out, b"C", b"D")).group(1))  # type: ignore[union-attr]
        assert second > first > 0
        out, _ = shell.run(b"trap -p DEBUG")
        assert b"debug_count" in between(out, b"C", b"D")

        # A line the user's history settings keep out of the history: C without the line.
        out, _ = shell.run(b" echo secret-$((1+1))")
        assert ("C", None) in marks(out) and b"secret-2" in between(out, b"C", b"D")

        # A multi-line command is one C/D pair with the whole text.
        shell.send(b"for i in 1 2; do\r")
        out, _ = shell.run(b"echo n$i; done")
        assert [k for k, _ in marks(out)] == ["C", "D", "A", "B"]
        assert cmdline(out) == "for i in 1 2; do echo n$i; done"

        # A PS1 the user sets at the prompt gets the prompt marks too.
        out, _ = shell.run(b"PS1='new-prompt> '")
        assert between(out, b"A", b"B") == b"new-prompt> "
    finally:
        shell.close()
    assert logout.read_text() == "bye\n"  # still a login shell: ~/.bash_logout runs


def test_dash_prompt_marks_only(home: Path) -> None:
    if DASH is None:
        pytest.fail("dash is required")
    (home / ".profile").write_text("PS1='dash-prompt$ '\nalias greet='echo dash-alias'\n")
    before = snapshot(home)
    shell, launch = start(DASH, home)
    try:
        assert launch.argv == ["-dash"]
        banner = shell.expect(PROMPT_END)
        assert marks(banner) == [("A", None), ("B", None)]
        assert between(banner, b"A", b"B") == b"dash-prompt$ "
        out, _ = shell.run(b"greet; echo ENV=$ENV.")
        assert [k for k, _ in marks(out)] == ["A", "B"]  # sh has no hook for C and D
        assert b"dash-alias\r\nENV=.\r\n" in out
        out, _ = shell.run(b"")
        assert [k for k, _ in marks(out)] == ["A", "B"]
    finally:
        shell.close()
    assert snapshot(home) == before


def test_spawn_shell_through_process(home: Path) -> None:
    assert BASH is not None
    (home / ".bash_profile").write_text("PS1='p$ '\n")
    me = pwd.getpwuid(os.getuid())
    ra = RunAs(me.pw_name, me.pw_uid, me.pw_gid, [], str(home), BASH, switch=False)
    spawned = spawn_shell(ra, "xterm", 80, 24, {})
    shell = Shell(spawned.master or -1, spawned.proc)
    os.set_blocking(shell.master, True)
    try:
        assert spawned.proc.args == ["-bash", "--posix"]
        banner = shell.expect(PROMPT_END)
        assert between(banner, b"A", b"B") == b"p$ "
        out, _ = shell.run(b"false")
        assert [k for k, _ in marks(out)] == ["C", "D", "A", "B"] and ("D", "1") in marks(out)
    finally:
        shell.close()
        os.close(spawned.pidfd)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to nobody needs a root agent")
def test_spawn_as_nobody_reads_root_owned_scripts() -> None:
    assert BASH is not None
    nobody = pwd.getpwnam("nobody")
    # Not under pytest's tmp_path: its parents are root's 0700 directories.
    home = Path(tempfile.mkdtemp(prefix="tether-test-nobody-"))
    (home / ".bash_profile").write_text("PS1='nobody$ '\n")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    os.chown(home / ".bash_profile", nobody.pw_uid, nobody.pw_gid)
    ra = RunAs("nobody", nobody.pw_uid, nobody.pw_gid, [nobody.pw_gid], str(home), BASH, switch=True)
    spawned = spawn_shell(ra, "xterm", 80, 24, {})
    shell = Shell(spawned.master or -1, spawned.proc)
    os.set_blocking(shell.master, True)
    try:
        banner = shell.expect(PROMPT_END)
        assert between(banner, b"A", b"B") == b"nobody$ "
        out, _ = shell.run(b"id -un")
        assert between(out, b"C", b"D") == b"nobody\r\n"
        out, _ = shell.run(b"(exit 4)")
        assert ("D", "4") in marks(out)
    finally:
        shell.close()
        os.close(spawned.pidfd)
        shutil.rmtree(home)


def test_integration_dir_is_private_and_repaired(tmp_path: Path) -> None:
    d = si.IntegrationDir(str(tmp_path))
    files = si.integration_files("zsh")
    switch = os.geteuid() == 0
    gid = 65534 if switch else os.getgid()
    sub = d.ensure(files, 12345 if switch else os.getuid(), gid, switch)
    base = sub.parent
    assert stat.S_IMODE(base.stat().st_mode) == (0o711 if switch else 0o700)
    for p in [sub, sub / "zsh"]:
        st = p.stat()
        assert stat.S_IMODE(st.st_mode) == (0o750 if switch else 0o700)
        assert st.st_uid == os.geteuid() and st.st_gid == gid
    for rel, content in files.items():
        st = (sub / rel).stat()
        assert stat.S_IMODE(st.st_mode) == (0o640 if switch else 0o600)
        assert st.st_uid == os.geteuid() and (sub / rel).read_text() == content
    # Tampered or removed files are rewritten before the next spawn.
    (sub / "zsh/.zshrc").write_text("echo tampered\n")
    (sub / "zsh/.zlogin").unlink()
    d.ensure(files, 12345 if switch else os.getuid(), gid, switch)
    assert (sub / "zsh/.zshrc").read_text() == files["zsh/.zshrc"]
    assert (sub / "zsh/.zlogin").read_text() == files["zsh/.zlogin"]
    # A temp cleaner removing the whole tree does no harm either.
    shutil.rmtree(base)
    again = d.ensure(files, os.getuid(), os.getgid(), False)
    assert (again / "zsh/.zshenv").read_text() == files["zsh/.zshenv"]
    d.remove()
    assert not again.exists()


def test_launch_plans() -> None:
    env = {"HOME": "/h", "PATH": "/bin"}
    bash = si.launch("/bin/bash", env, "/d")
    assert bash.argv == ["-bash", "--posix"] and bash.env["ENV"] == "/d/bash-env"
    assert bash.env[si.RESET_DEFAULTS] == "HISTFILE MAILCHECK"
    mine = si.launch("/bin/bash", {**env, "ENV": "/h/.shrc", "HISTFILE": "/h/x"}, "/d")
    assert mine.env[si.ORIG_ENV] == "/h/.shrc" and mine.env[si.RESET_DEFAULTS] == "MAILCHECK"
    zsh = si.launch("/usr/bin/zsh", {**env, "ZDOTDIR": "/h/z"}, "/d")
    assert zsh.argv == ["-zsh"] and zsh.env["ZDOTDIR"] == "/d/zsh"
    assert zsh.env[si.ORIG_ZDOTDIR] == "/h/z"
    assert si.launch("/bin/dash", env, "/d").env["ENV"] == "/d/sh-env"
    for plain in (si.launch("/bin/ksh", env, "/d"), si.launch("/bin/bash", env, None)):
        assert plain.argv[0].startswith("-") and plain.env == env and len(plain.argv) == 1
    assert si.launch("/bin/bash", {**env, "POSIXLY_CORRECT": "1"}, "/d").argv == ["-bash"]


def test_opt_out(tmp_path: Path) -> None:
    env = {"HOME": "/h"}
    d = si.IntegrationDir(str(tmp_path))
    off = si.prepare("/bin/bash", env, os.getuid(), os.getgid(), False,
                     environ={si.OPT_OUT: "0"}, directory=d)
    assert off == si.plain_launch("/bin/bash", env)
    assert list(tmp_path.iterdir()) == []  # nothing written either
    on = si.prepare("/bin/bash", env, os.getuid(), os.getgid(), False, environ={}, directory=d)
    assert on.argv == ["-bash", "--posix"]
    d.remove()
