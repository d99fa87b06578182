"""CPU accounting for bench/compare_ssh.py: per process from /proc, of a reaped child from
wait4, of the whole machine and its kernel threads, and what other work on the machine costs."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

from bench_common import BenchError, kill_pid, log

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime is field 14 -> index 11
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / CLK_TCK, (cut + cst) / CLK_TCK


def thread_cpu(pid: int) -> tuple[float, float]:
    """(main thread, all other live threads) of a process, CPU seconds: tether up's event
    loop (agent, authority and recorder loop) against its helper threads (the recorder's
    store thread: writes, fsync, commit)."""
    main = other = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return math.nan, math.nan
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
        if int(tid) == pid:
            main = cpu
        else:
            other += cpu
    return main, other


def descendants_cpu(pid: int, cmdline_has: str) -> float:
    """Own CPU seconds (plus reaped children) of the live descendants of pid whose command
    line contains `cmdline_has` ("" for all): e.g. the recorder's index worker, a long-lived
    child whose CPU shows in no cutime until it exits."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        for child in _children(p):
            todo.append(child)
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                own, reaped = proc_cpu(child)
            except OSError:
                continue
            if cmdline_has in cmd:
                total += own + reaped
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


def wait4_cpu(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Reap proc (which must still be unreaped); (return code, its user+sys CPU seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (the watchdog killed it)
            return proc.returncode if proc.returncode is not None else -9, math.nan
        if pid == proc.pid:
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            return rc, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            kill_pid(proc)
            raise BenchError(f"{proc.args!r} did not exit within {timeout:.0f} s")
        time.sleep(0.0005)


def system_busy() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


PF_KTHREAD = 0x00200000
SCHED_IDLE = 5  # /proc/PID/stat field 41, policy


def scan_cpu() -> tuple[float, dict[int, float]]:
    """(others, kernel threads): CPU seconds (own + reaped children) of every user-space
    process that is not this bench or one of its descendants, and of all kernel threads.

    The difference of two calls is what other work used in between: a process that exits
    meanwhile moves into its parent's reaped-children time. Kernel threads are counted
    apart, because the kernel does PTY work for us (and others) in kworker threads.
    Processes at SCHED_IDLE (other tether stacks' recorder index workers) are left out:
    they run only on a core that would otherwise idle, so they take nothing from us."""
    procs: dict[int, tuple[int, float]] = {}
    kernel: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = sum(int(x) for x in rest[11:15]) / CLK_TCK
        if int(rest[6]) & PF_KTHREAD:
            kernel[int(entry)] = cpu
        elif len(rest) > 38 and int(rest[38]) == SCHED_IDLE:
            continue
        else:
            procs[int(entry)] = (int(rest[1]), cpu)
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == me:
                return True
            if pid <= 1 or pid not in procs:
                return False
            pid = procs[pid][0]
        return False

    return sum(cpu for pid, (_, cpu) in procs.items() if not ours(pid)), kernel


def others_cpu() -> float:
    return scan_cpu()[0]


def kernel_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU that kernel threads used in between (threads that exited meanwhile are lost)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 5.0) -> str:
    """Wait (at most max_wait s) until the machine is nearly idle over `window` seconds:
    busy CPU below `threshold` of one core. Returns what happened, for the report."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy()
        time.sleep(window)
        busy = (system_busy() - b0) / window
        if busy < threshold:
            return f"machine idle ({busy * 100:.0f}% of a core busy) at start"
        if time.monotonic() > deadline:
            return f"machine still busy ({busy * 100:.0f}% of a core) after waiting {max_wait:.0f} s"
        log(f"waiting for a quiet machine: {busy * 100:.0f}% of a core busy")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_delta(before: tuple[dict[str, float], dict[int, float]],
              after: tuple[dict[str, float], dict[int, float]]) -> dict[str, float]:
    d = {f"cpu {k} s": after[0][k] - before[0][k] for k in before[0]}
    # "server:X: Y" is a breakdown of part X (tether up's threads), already in X's figure.
    d["server_cpu_s"] = sum(v for k, v in d.items()
                            if k.startswith("cpu server:") and ": " not in k.removeprefix("cpu server:"))
    d["cpu kernel threads s"] = kernel_delta(before[1], after[1])
    return d
