"""Record real terminal captures through real PTYs into bench/corpus/*.bin.

Each capture is the raw output of one program run on a PTY of a fixed size, with scripted
keystrokes for the interactive ones (vim, top). The files are regenerated, not committed
(bench/corpus/.gitignore). `record(name)` is also used by the tests.

    python bench/record_corpus.py [NAME ...]
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tether.edge.pty import set_winsize

CORPUS = Path(__file__).resolve().parent / "corpus"
COLUMNS, LINES = 120, 40

CJK_TEXT = (
    "中文文本的重建测试：终端中的宽字符。 日本語のテキスト、ひらがなとカタカナ。 한국어 텍스트 줄입니다.\n"  # noqa: RUF001
    "emoji ❤️ heart, 👨‍👩‍👧 family, flags 🇫🇷, zero\u200bwidth, e\u0301 combining, ✔️ done\n"
    "混合 mixed ASCII 和 全角ＡＢＣ，表格：│列一│列二│\n"  # noqa: RUF001
)


@dataclass
class Capture:
    """A program to run and keys to type: (seconds after start, bytes)."""

    argv: list[str]
    keys: list[tuple[float, bytes]] = field(default_factory=list)
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)


def _cjk_file() -> Path:
    path = CORPUS / "cjk.txt"
    if not path.exists():
        CORPUS.mkdir(parents=True, exist_ok=True)
        path.write_text(CJK_TEXT * 2000, encoding="utf-8")
    return path


def _big_text() -> list[str]:
    docs = sorted(Path("/usr/share/vim").glob("vim*/doc/version*.txt"))
    if docs:
        return [str(p) for p in docs]
    return [str(p) for p in sorted(Path("/usr/share/common-licenses").glob("*"))]


def captures() -> dict[str, Callable[[], Capture]]:
    return {
        "ls": lambda: Capture(["ls", "-la", "--color=always", "/usr/lib",
                               "/usr/lib/x86_64-linux-gnu", "/usr/share/doc"]),
        "grep": lambda: Capture(["grep", "-rn", "--color=always", "-m", "5", "-I", "the",
                                 "/usr/share/doc", "/usr/share/perl5"]),
        "cat": lambda: Capture(["cat", *_big_text()]),
        "vim": lambda: Capture(
            ["vim", "-N", "-u", "NONE", "-i", "NONE", "-c", "syntax on", _big_text()[-1]],
            keys=[(0.5, b"Go"), (0.6, b"a line typed in vim\x1b"), (0.7, b"gg"),
                  *[(0.8 + i * 0.01, b"\x06") for i in range(150)],  # ^F pages
                  (2.4, b"/Vim\r"), (2.6, b"nnn"), (2.8, b":q!\r")]),
        "top-batch": lambda: Capture(["top", "-b", "-n", "3", "-d", "0.2", "-w", "120"]),
        "top": lambda: Capture(["top", "-d", "0.2"], keys=[(3.0, b"q")]),
        "cjk": lambda: Capture(["cat", str(_cjk_file())]),
        "seq": lambda: Capture(["seq", "1", "100000"]),
    }


def run_pty(cap: Capture, columns: int = COLUMNS, lines: int = LINES) -> list[tuple[float, bytes]]:
    """Run a capture on a fresh PTY; return the output chunks with their times."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of the given size, then the program
        env = dict(os.environ, TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8",
                   COLUMNS=str(columns), LINES=str(lines), **cap.env)
        try:
            set_winsize(0, columns, lines)
            os.execvpe(cap.argv[0], cap.argv, env)
        finally:
            os._exit(127)
    set_winsize(fd, columns, lines)
    start = time.monotonic()
    chunks: list[tuple[float, bytes]] = []
    keys = list(cap.keys)
    try:
        while True:
            now = time.monotonic() - start
            if now > cap.timeout:
                os.kill(pid, signal.SIGKILL)
                break
            while keys and keys[0][0] <= now:
                os.write(fd, keys.pop(0)[1])
            wait = min(0.05, keys[0][0] - now) if keys else 0.05
            ready, _, _ = select.select([fd], [], [], max(wait, 0.0))
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append((now, data))
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return chunks


def record(name: str, columns: int = COLUMNS, lines: int = LINES) -> bytes:
    data = b"".join(c for _, c in run_pty(captures()[name](), columns, lines))
    CORPUS.mkdir(parents=True, exist_ok=True)
    (CORPUS / f"{name}.bin").write_bytes(data)
    return data


def load(name: str) -> bytes:
    path = CORPUS / f"{name}.bin"
    return path.read_bytes() if path.exists() else record(name)


def main(argv: list[str]) -> int:
    names = argv or list(captures())
    for name in names:
        data = record(name)
        print(f"{name:10} {len(data):>10,} bytes -> {CORPUS / (name + '.bin')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
