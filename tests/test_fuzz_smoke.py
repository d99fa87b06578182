"""A seconds-long run of every fuzz harness (tools/fuzz), coverage-guided by atheris.

The long runs (a million inputs per decoder, docs/testing.md "Fuzzing") are run by hand;
this keeps every harness working and fails on any crash a couple of thousand inputs find.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools.fuzz import run
from tools.fuzz.harnesses import NAMES

RUNS = 2000


def test_every_harness_fuzzes_without_a_crash(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(run.__file__)), "--runs", str(RUNS), "--jobs", "2", "--nice", "0",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=110, check=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == sorted(NAMES), proc.stdout + proc.stderr
    crashed = {name: r["crash"] for name, r in results.items() if r["crash"]}
    logs = "\n".join(Path(results[name]["log"]).read_text()[-3000:] for name in crashed)
    assert not crashed, f"{crashed}\n{logs}"
    assert {name: r["runs"] for name, r in results.items()} == dict.fromkeys(NAMES, RUNS)
    assert all(r["cov"] > 0 and r["corpus"] > 0 for r in results.values())
    assert proc.returncode == 0, proc.stdout + proc.stderr


CRASH_LOG = """\
INFO: Seed: 1
#2\tINITED cov: 26 ft: 28 corp: 3/118b exec/s: 0 rss: 49Mb

 === Uncaught Python exception: ===
JSONDecodeError: unexpected control character in string: line 1 column 15 (char 14)
Traceback (most recent call last):
  File "tools/fuzz/base.py", line 36, in run
JSONDecodeError: unexpected control character in string: line 1 column 15 (char 14)

==16437== ERROR: libFuzzer: fuzz target exited
artifact_prefix='out/crashes/handshake-reply-'; Test unit written to out/crashes/handshake-reply-crash-d797e6
stat::number_of_executed_units: 9
stat::average_exec_per_sec:     0
"""

DONE_LOG = """\
#2000\tDONE   cov: 35 ft: 37 corp: 9/400b lim: 4096 exec/s: 2000 rss: 50Mb
Done 2000 runs in 1 second(s)
stat::number_of_executed_units: 2000
stat::average_exec_per_sec:     2000
"""


def test_a_crash_in_libfuzzers_output_is_reported_with_its_input() -> None:
    crashed = run._result("handshake-reply", CRASH_LOG, 1, 0.5, Path("log"), RUNS)
    assert crashed.crash == "out/crashes/handshake-reply-crash-d797e6"
    assert (crashed.runs, crashed.cov, crashed.ft, crashed.corpus) == (9, 26, 28, 3)
    done = run._result("handshake-reply", DONE_LOG, 0, 1.0, Path("log"), RUNS)
    assert done.crash is None
    assert (done.runs, done.exec_per_s, done.cov, done.ft, done.corpus) == (RUNS, 2000, 35, 37, 9)
    # A worker that stops early without a crash input (killed, or out of memory) fails too.
    stopped = run._result("handshake-reply", DONE_LOG.replace("2000", "700"), 0, 1.0, Path("log"), RUNS)
    assert stopped.crash is not None and "700 runs" in stopped.crash
