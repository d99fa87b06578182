#!/usr/bin/env python3
"""tether versus OpenSSH, side by side in one run (docs/sources.md#performance-budget).

Starts a throwaway sshd and a whole tether deployment on a real Mosquitto (the repo's
mosquitto.conf, through tests/stack.py), both on 127.0.0.1, then measures, alternating
the two tools:

* PTY bulk output: ``cat`` of a big printable file inside an interactive shell
  (``ssh -tt`` / ``tether shell``), each client on a real pseudo-terminal whose master
  this script drains as fast as it can. Timed from sending the command to client exit.
* exec bulk output, no PTY: ``ssh -T HOST cat FILE`` / ``tether run local -- cat FILE``,
  stdout into a pipe drained by this script. Timed from the first output byte to client
  exit (connection setup is measured separately, below); the end-to-end rate including
  setup is reported too.
* keystroke echo round trip: one session of each open at once, remote tty in
  ``-icanon -echo`` with ``cat`` echoing; one printable byte written to the local PTY
  master, timed until it comes back. Keystrokes rotate between the sessions, which
  include a third, "floor" session: tether's topology with bare asyncio+paho relays.
* wall time of ``ssh HOST true`` / ``tether run local -- true``.
* for reference, the raw kernel PTY rate: ``cat FILE`` straight onto a local PTY.

Usage (as root or any user; see bench/README.md)::

    python3 bench/compare_ssh.py                 # full run, about 5 minutes (recorded and unrecorded)
    python3 bench/compare_ssh.py --quick         # 50 MB, fewer repetitions
    nice -n -10 python3 bench/compare_ssh.py --wait-quiet 240 --markdown out.md --json out.json

Every process it starts (sshd, mosquitto, tether up, the clients) is stopped by pid.

The pieces, one job each: bench_common.py (paths, logging, stopping by pid, statistics),
cpu.py (CPU accounting), pty_driver.py (a client on a PTY), sshd.py, contenders.py (ssh
and tether), floor.py (the bare-MQTT echo floor), measure.py (the tests), render.py (the
report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# tests/ for stack.py. Not the repository root: its tether/ is the core alone, and would hide
# the installed package's tether.edge (the floor roles failed on that after the restructure).
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests")]

from bench_common import MB, BenchError, log, median, pct  # noqa: E402
from contenders import ssh_contender, tether_contender  # noqa: E402
from cpu import loadavg, others_cpu, wait_quiet  # noqa: E402
from floor import FloorBroker, floor_contender, floor_role  # noqa: E402
from measure import (  # noqa: E402
    Result,
    alternate,
    echo_samples,
    echo_test,
    exec_bulk,
    guarded,
    make_text_file,
    pty_bulk,
    raw_pty,
    run_true,
)
from render import (  # noqa: E402
    build_rows,
    cpu_rows,
    details_of,
    machine_info,
    others,
    render_markdown,
    render_text,
    versions,
)
from sshd import SshServer  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 MB file, fewer repetitions")
    ap.add_argument("--size-mb", type=int, help="bulk file size in MB (default 200, quick 50)")
    ap.add_argument("--reps", type=int, help="repetitions of each bulk test per tool (default 5, quick 2)")
    ap.add_argument("--keys", type=int, help="measured keystrokes per tool (default 300, quick 100)")
    ap.add_argument("--warmup-keys", type=int, default=20)
    ap.add_argument("--true-runs", type=int, help="`true` runs per tool (default 20, quick 8)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds allowed per bulk run")
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="also write the results as Markdown")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write all samples as JSON")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before each test, wait up to SECONDS for other work on the machine to stop")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    ap.add_argument("--only", nargs="+", choices=["raw", "true", "echo", "exec", "pty"],
                    help="run only these tests")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the bare-MQTT floor session from the keystroke test")
    ap.add_argument("--recording", choices=["both", "off", "optional", "required"], default="both",
                    help="the policy's recording for the tether sessions. `both` (default): two "
                    "tether contenders in the same run and rotation, one unrecorded (`off`, like "
                    "ssh, which records nothing) and one recorded as `tether up` ships "
                    "(`optional`, every session streamed to the recorder); the report adds the "
                    "ratios recorded / unrecorded. Otherwise one tether contender with that "
                    "recording")
    ap.add_argument("--recorder-process", action="store_true",
                    help="run the recorder as a process of its own (`tether up --no-recorder` and "
                    "`tether recorder`) instead of inside `tether up`, so its CPU is counted apart")
    ap.add_argument("--shadow-recorder", action="store_true",
                    help="with --recording both: the second tether contender runs unrecorded while "
                    "bench/shadow_recorder.py, a stand-in for a one-stream recorder, reads and "
                    "stores its agent-to-client stream (no acks, no pacing)")
    ap.add_argument("--floor-role", choices=["client", "agent"], help=argparse.SUPPRESS)
    ap.add_argument("--floor-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--floor-tag", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


@dataclass
class Run:
    """One run's parameters and everything it measured."""

    args: argparse.Namespace
    size: int
    reps: int
    keys: int
    true_runs: int
    tests: set[str]
    quiet: str = ""
    started: float = field(default_factory=time.time)
    others0: float = 0.0
    load0: str = ""
    results: dict[str, Result] = field(
        default_factory=lambda: {k: Result() for k in ("pty", "exec", "echo", "true")})
    raw: Result = field(default_factory=Result)
    meta: dict[str, Any] = field(default_factory=dict)
    interference: dict[str, float] = field(default_factory=dict)


def catch_signals() -> None:
    # SIGTERM/SIGHUP unwind through the finally blocks of measure_all, like Ctrl-C.
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Started in the background, SIGINT may be ignored, and children inherit that: the
    # remote shells would then ignore ^C. A Python handler is reset to default on exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_role:
        return floor_role(args.floor_role, args.floor_port, args.floor_tag)
    run = Run(args, size=(args.size_mb or (50 if args.quick else 200)) * MB,
              reps=args.reps or (2 if args.quick else 5),
              keys=args.keys or (100 if args.quick else 300),
              true_runs=args.true_runs or (8 if args.quick else 20),
              tests=set(args.only or ["raw", "true", "echo", "exec", "pty"]))
    run.quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else ""
    if run.quiet:
        log(run.quiet)
    run.started = time.time()
    run.others0, run.load0 = others_cpu(), loadavg()
    if os.getloadavg()[0] > 0.5:
        log(f"note: load average is {run.load0} before the run; other work will add noise")
    catch_signals()
    failed = measure_all(run)
    if failed is not None:
        return failed
    return report(run, argv)


def measure_all(run: Run) -> int | None:
    """Start sshd and the tether stack, run the tests; an exit code if nothing was measured."""
    from stack import TETHER, running_stack  # type: ignore[import-not-found]  # tests/ on sys.path

    args, results, raw, meta = run.args, run.results, run.raw, run.meta
    reps, keys, true_runs, tests = run.reps, run.keys, run.true_runs, run.tests
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    sshd = SshServer(tmp / "ssh")
    floor_broker = FloorBroker(tmp / "floor")
    try:
        log(f"work directory {tmp}")
        path = tmp / "bulk.txt"
        size = run.size = make_text_file(path, run.size)
        log(f"wrote {size / MB:.1f} MB of base64 text to {path}")
        log("starting sshd")
        sshd.start()
        log(f"sshd pid {sshd.proc.pid if sshd.proc else '?'} on 127.0.0.1:{sshd.port}")
        (tmp / "tether").mkdir()
        log("starting Mosquitto and tether up")
        with running_stack("mosquitto", tmp / "tether") as stack:
            log(f"mosquitto pid {stack.broker.pid}, tether up pid {stack.up.pid}, port {stack.port}")
            from stack import statement  # type: ignore[import-not-found]

            recorder_pid = None
            if args.recorder_process:
                stack.stop_up()
                stack.start_up("--no-recorder")
                recorder = stack.start_recorder()
                recorder_pid = recorder.pid
                log(f"tether up --no-recorder pid {stack.up.pid}, tether recorder pid {recorder.pid}")
            meta["recorder"] = ("its own process (`tether recorder`)" if args.recorder_process
                                else "inside `tether up`, as shipped")
            if args.shadow_recorder:
                # bob's sessions, which the policy leaves unrecorded: the session topic names
                # the client by its principal (tether.topics.Topics.session).
                shadow = subprocess.Popen(
                    [sys.executable, str(_HERE / "shadow_recorder.py"), str(stack.spy_identity),
                     "tether/v1/a/local/s/bob/+/a2c", str(tmp / "shadow.log")],
                    env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                stack.procs.append(shadow)  # killed by pid with the stack
                assert shadow.stdout is not None
                log(f"{shadow.stdout.readline().decode().strip()}, pid {shadow.pid}")
                recorder_pid = shadow.pid
                meta["recorder"] = "one-stream stand-in (bench/shadow_recorder.py) for the second contender"
            both_modes = args.recording == "both"
            body = statement(recording='"off"' if both_modes else f'"{args.recording}"')
            if both_modes:
                # The second user, bob, is recorded as `tether up` ships; the first is not.
                rec = '"off"' if args.shadow_recorder else '"optional"'
                body += "\n" + statement(recording=rec).replace(
                    'id = "test"', 'id = "recorded"').replace('users = ["USER"]', 'users = ["bob"]')
            body = body.replace("OSUSER", getpass.getuser())
            user = re.search(rb'users = \["([^"]+)"\]', stack.home.policy.read_bytes())
            assert user is not None
            stack.home.policy.write_text(body.replace("USER", user.group(1).decode()))
            meta["recording"] = ("both: tether unrecorded (`off`) and tether recorded (`optional`)"
                                 if both_modes else args.recording)
            log(f"policy: recording = {meta['recording']}")
            client_env = dict(os.environ, TERM="xterm-256color")
            ssh_c = ssh_contender(sshd, client_env)
            teth_c = tether_contender(stack, TETHER, recorder_pid=lambda: recorder_pid)
            teth_c.env["TERM"] = "xterm-256color"
            both = [ssh_c, teth_c]
            if both_modes:
                rec_c = tether_contender(stack, TETHER, "tether_rec", identity=stack.bob_identity,
                                         recorder_pid=lambda: recorder_pid,
                                         recorded_user=None if args.shadow_recorder else "bob")
                rec_c.env["TERM"] = "xterm-256color"
                both.append(rec_c)
            meta["versions"] = versions(TETHER, stack.env, stack.root)

            # Warm up: page cache, .pyc files, ssh and tether code paths.
            for c in both:
                run_true(c)
                run_true(c)

            ncpu = os.cpu_count() or 1

            def section(name: str, res: Result, what: str, fn: Callable[[], None]) -> None:
                """Run one test; note how much CPU other processes took meanwhile."""
                if args.wait_quiet > 0:
                    log(wait_quiet(args.wait_quiet))
                log(what)
                o0, w0 = others_cpu(), time.monotonic()
                guarded(res, name, fn)
                wall = time.monotonic() - w0
                run.interference[name] = max(0.0, others_cpu() - o0) / (wall * ncpu)
                if run.interference[name] > 0.05:
                    log(f"  other processes used {run.interference[name] * 100:.0f}% of the machine "
                        f"during {name}: its numbers are disturbed")

            def echo_all() -> None:
                trio = list(both)
                try:
                    if not args.no_floor:
                        floor_broker.start()
                        trio.append(floor_contender(floor_broker, client_env))
                    echo_test(trio, keys, args.warmup_keys, results["echo"])
                finally:
                    floor_broker.stop()

            if "raw" in tests:
                section("raw", raw, "raw kernel PTY read", lambda: raw.ssh.extend(
                    raw_pty(path, size, args.timeout) for _ in range(min(reps, 3))))
            if "true" in tests:
                section("true", results["true"], f"`true` wall time, {true_runs} runs each",
                        lambda: alternate(true_runs, both, run_true, results["true"], "true"))
            if "echo" in tests:
                section("echo", results["echo"],
                        f"keystroke echo, {keys} keystrokes each after {args.warmup_keys} warm-up",
                        echo_all)
            if "exec" in tests:
                section("exec", results["exec"], f"exec bulk, {size / MB:.0f} MB, {reps} reps each",
                        lambda: alternate(reps, both, lambda c: exec_bulk(c, path, size, args.timeout),
                                          results["exec"], "exec MB/s"))
            if "pty" in tests:
                section("pty", results["pty"], f"PTY bulk, {size / MB:.0f} MB, {reps} reps each",
                        lambda: alternate(reps, both, lambda c: pty_bulk(c, path, size, args.timeout),
                                          results["pty"], "PTY MB/s"))
            meta["recorded sessions"] = recorded_summary(stack.home.recordings / "index.db")
            log(f"recorder's index: {meta['recorded sessions']}")
            # Everything that ran on the machine meanwhile and was not ours: interference.
            wall = time.time() - run.started
            other = max(0.0, others_cpu() - run.others0)
            meta["load"] = ((f"{run.quiet}; " if run.quiet else "") + f"load average {run.load0} at start, {loadavg()} at end; CPU used by "
                            f"other processes during the run: {other:.0f} s "
                            f"({other / (wall * ncpu) * 100:.0f}% of "
                            f"{ncpu} cores x {wall:.0f} s)")
            log(meta["load"])
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    except (BenchError, AssertionError, OSError, subprocess.SubprocessError) as exc:
        # Setting up sshd or the tether stack failed (tests/stack.py raises AssertionError).
        log(f"setup failed, nothing measured: {exc}")
        return 2
    finally:
        floor_broker.stop()
        sshd.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def recorded_summary(db_path: Path) -> str:
    """What the recorder stored, by user: proof that the recorded contender's sessions were
    recorded (and the unrecorded one's were not)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT user, COUNT(*), SUM(bytes_out), SUM(log_bytes) FROM sessions "
                              "GROUP BY user").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"unknown ({exc})"
    return "; ".join(f"{user}: {n} sessions, {(out or 0) / MB:.0f} MB output, "
                     f"{(log or 0) / MB:.0f} MB of logs" for user, n, out, log in rows) or "none"


def report(run: Run, argv: list[str] | None) -> int:
    """Print the results; write the Markdown and JSON files asked for. 1 if a test failed."""
    args, results, raw, meta, size = run.args, run.results, run.raw, run.meta, run.size
    errors = {k: v.error for k, v in results.items() if v.error}
    if raw.error:
        errors["raw"] = raw.error
    rows = build_rows(results)
    for row in rows:
        row.others = run.interference.get(row.test, math.nan)
    refs = []
    if raw.ssh:
        refs.append(f"raw kernel PTY read (`cat` straight onto a local PTY, drained by the bench): "
                    f"{median([s.value for s in raw.ssh]):.1f} MB/s "
                    f"(others' CPU {others(run.interference.get('raw', math.nan))})")
    floor_ms = echo_samples(results["echo"], "floor")
    if floor_ms:
        refs.append(f"keystroke echo floor (tether's topology with bare asyncio+paho over Mosquitto: "
                    f"no grant, handshake, crypto or channel): p50 {pct(floor_ms, 50):.3f} ms, "
                    f"p99 {pct(floor_ms, 99):.3f} ms")
    for key, label in (("exec", "exec bulk"), ("pty", "PTY bulk")):
        recs = [s.extra for s in results[key].tether_rec if "recorded_bytes_out" in s.extra]
        if recs:
            fracs = [x["recorded_bytes_out"] / x.get("bytes_on_pty", size) for x in recs]
            short = sum(1 for f in fracs if f < 0.999)
            refs.append(f"recording of the recorded {label} runs: the recorder stored "
                        f"{min(fracs) * 100:.0f}-{max(fracs) * 100:.0f}% of each session's output"
                        + (f"; {short} of {len(fracs)} runs lost output (the optional recording "
                           f"stopped pacing when its recorder fell silent for 3 s and dropped "
                           f"what did not fit, with a recorded gap): those runs were partly "
                           f"unrecorded" if short else ""))
    cpu = cpu_rows(results, size)
    print()
    print(render_text(rows, refs, cpu, errors))
    if "load" in meta:
        print(meta["load"])
    details = details_of(results, raw)
    meta.update(
        command=shlex.join([sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])]),
        date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine_info(),
        runtime_s=time.time() - run.started,
        params=f"file {size / MB:.1f} MB, {run.reps} reps per bulk test, {run.keys} keystrokes "
               f"(+{args.warmup_keys} warm-up), {run.true_runs} `true` runs, tools alternated",
    )
    meta.setdefault("versions", {})
    if args.markdown:
        args.markdown.write_text(render_markdown(rows, refs, cpu, errors, meta, details))
        log(f"wrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": details,
                                         "echo_samples_ms": {
                                             who: echo_samples(results["echo"], who)
                                             for who in ("ssh", "tether", "tether_rec", "floor")},
                                         }, indent=1, default=str))
        log(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
