"""The measurements of bench/compare_ssh.py: bulk output through a PTY and through exec, the
wall time of `true`, the raw kernel PTY rate, keystroke echo; the tools alternated."""

from __future__ import annotations

import base64
import os
import random
import re
import select
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import MB, READY_CMD, READY_RE, BenchError, kill_pid, log, median, pct
from contenders import Contender
from cpu import cpu_delta, wait4_cpu
from pty_driver import PtyProc


@dataclass
class Sample:
    value: float
    extra: dict[str, Any] = field(default_factory=dict)


def make_text_file(path: Path, size: int) -> int:
    """base64 of random bytes in 76-column lines: printable, no control characters."""
    lines = max(1, size // 77)
    raw_per_line = 57
    block_lines = 16384
    with open(path, "wb") as f:
        left = lines
        while left:
            n = min(left, block_lines)
            f.write(base64.encodebytes(os.urandom(raw_per_line * n)))
            left -= n
    return path.stat().st_size


def pty_bulk(c: Contender, file: Path, size: int, timeout: float) -> Sample:
    wall0 = time.time()
    pp = PtyProc(c.shell_argv, c.env, c.cwd)
    try:
        pp.ready()
        cpu0 = c.cpu_snapshot()
        t0 = time.perf_counter()
        pp.send(f"cat {shlex.quote(str(file))}; exit\r".encode())
        n = pp.drain_until_exit(timeout)
        rc, client_cpu = wait4_cpu(pp.proc, 10)
        elapsed = time.perf_counter() - t0
        cpu = cpu_delta(cpu0, c.cpu_snapshot())
    finally:
        pp.close()
    if n < size:
        raise BenchError(f"{c.name}: PTY delivered {n} bytes, expected at least {size} (rc {rc})")
    return Sample(size / elapsed / MB, {"seconds": elapsed, "bytes_on_pty": n, "rc": rc,
                                        "client_cpu_s": client_cpu, **cpu, **recorded(c, wall0)})


def recorded(c: Contender, wall0: float) -> dict[str, Any]:
    """For a recorded contender, what its recorder stored of the session (after the
    measurement: waiting for the recording to close also keeps its tail out of the next
    contender's run)."""
    return {} if c.recorded is None else c.recorded(wall0)


def exec_bulk(c: Contender, file: Path, size: int, timeout: float) -> Sample:
    wall0 = time.time()
    with tempfile.TemporaryFile() as err:
        cpu0 = c.cpu_snapshot()
        t0 = time.perf_counter()
        proc = subprocess.Popen(c.exec_argv(["cat", str(file)]), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, env=c.env, cwd=c.cwd)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        watchdog = threading.Timer(timeout, kill_pid, (proc,))
        watchdog.daemon = True
        watchdog.start()
        n = 0
        first = 0.0
        bufs = [bytearray(1 << 20)]  # reused: no allocation per read
        try:
            got = os.readv(fd, bufs)
            first = time.perf_counter()
            readv = os.readv
            while got:
                n += got
                got = readv(fd, bufs)
            rc, client_cpu = wait4_cpu(proc, 10)
            end = time.perf_counter()
        finally:
            watchdog.cancel()
            kill_pid(proc)
            proc.stdout.close()
        cpu = cpu_delta(cpu0, c.cpu_snapshot())
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if n != size or rc != 0:
        raise BenchError(f"{c.name}: exec got {n} of {size} bytes, rc {rc}: {stderr[-500:]}")
    return Sample(size / (end - first) / MB, {
        "seconds_streaming": end - first, "seconds_total": end - t0,
        "mb_s_total": size / (end - t0) / MB, "first_byte_s": first - t0,
        "client_cpu_s": client_cpu, **cpu, **recorded(c, wall0),
    })


def run_true(c: Contender) -> Sample:
    t0 = time.perf_counter()
    proc = subprocess.Popen(c.exec_argv(["true"]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=c.env, cwd=c.cwd)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_pid(proc)
        raise BenchError(f"{c.name}: `true` took over 60 s") from None
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"{c.name}: `true` exited {proc.returncode}: {stderr.decode(errors='replace')}")
    return Sample(elapsed)


def raw_pty(file: Path, size: int, timeout: float) -> Sample:
    pp = PtyProc(["cat", str(file)], dict(os.environ), file.parent)
    try:
        t0 = time.perf_counter()
        n = pp.drain_until_exit(timeout)
        pp.proc.wait(10)
        elapsed = time.perf_counter() - t0
    finally:
        pp.close()
    if n < size:
        raise BenchError(f"raw PTY delivered {n} of {size} bytes")
    return Sample(size / elapsed / MB, {"seconds": elapsed})


class EchoSession:
    """An interactive session whose remote tty echoes each byte through `cat`."""

    def __init__(self, c: Contender) -> None:
        self.c = c
        self.pp = PtyProc(c.shell_argv, c.env, c.cwd)
        self.pp.ready()
        self.pp.send(b"stty -icanon -echo; echo BENCH_CAT_$((6*7)); cat\r")
        self.pp.expect(re.compile(rb"BENCH_CAT_42"))
        self.pp.discard()
        self.samples: list[float] = []

    def keystroke(self, byte: bytes, record: bool) -> None:
        fd = self.pp.master
        t0 = time.perf_counter_ns()
        os.write(fd, byte)
        got = b""
        while not got:
            if not select.select([fd], [], [], 10.0)[0]:
                raise BenchError(f"{self.c.name}: keystroke {byte!r} not echoed within 10 s")
            got = os.read(fd, 4096)
        t1 = time.perf_counter_ns()
        if got != byte:
            raise BenchError(f"{self.c.name}: sent {byte!r}, got back {got[:80]!r}")
        if record:
            self.samples.append((t1 - t0) / 1e6)

    def close(self) -> None:
        try:
            # ^C ends cat (ISIG is still on). The tty flushes its input queue on ^C, so
            # type nothing else until the shell answers again.
            self.pp.send(b"\x03")
            for _ in range(3):
                time.sleep(0.2)
                try:
                    self.pp.send(READY_CMD)
                    self.pp.expect(READY_RE, 5)
                    break
                except BenchError:
                    continue
            self.pp.send(b"stty sane; exit\r")
            self.pp.drain_for(10)
            self.pp.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired, BenchError):
            pass
        finally:
            self.pp.close()


@dataclass
class Result:
    ssh: list[Sample] = field(default_factory=list)
    tether: list[Sample] = field(default_factory=list)
    tether_rec: list[Sample] = field(default_factory=list)  # tether with the session recorded
    floor: list[Sample] = field(default_factory=list)
    error: str | None = None


def echo_samples(res: Result, who: str) -> list[float]:
    """Every measured keystroke echo of one tool, in ms."""
    return [x for s in getattr(res, who) for x in s.extra.get("all", [])]


def alternate(reps: int, contenders: Sequence[Contender], fn: Callable[[Contender], Sample],
              res: Result, what: str) -> None:
    for i in range(reps):
        order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
        for c in order:
            s = fn(c)
            getattr(res, c.name).append(s)
            log(f"  {what} rep {i + 1}/{reps} {c.name}: {s.value:.4g}")


def guarded(res: Result, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        res.error = str(exc)
        log(f"{what} FAILED: {exc}")


def echo_test(both: Sequence[Contender], keys: int, warmup: int, res: Result) -> None:
    sessions: list[EchoSession] = []
    try:
        for c in both:
            sessions.append(EchoSession(c))
        rng = random.Random(6)
        letters = b"abcdefghijklmnopqrstuvwxyz0123456789"
        for i in range(warmup + keys):
            order = sessions[i % len(sessions):] + sessions[:i % len(sessions)]  # rotate
            for sess in order:
                sess.keystroke(letters[i % len(letters):][:1], record=i >= warmup)
                time.sleep(rng.uniform(0.005, 0.015))  # keys arrive apart, as typed
        for sess in sessions:
            getattr(res, sess.c.name).append(Sample(median(sess.samples), {"all": sess.samples}))
            log(f"  echo {sess.c.name}: p50 {pct(sess.samples, 50):.3f} ms, "
                f"p99 {pct(sess.samples, 99):.3f} ms")
    finally:
        for sess in sessions:
            sess.close()
