"""Fuzz every decoder of outside bytes with atheris (libFuzzer), one decoder at a time.

    .venv/bin/python tools/fuzz/run.py [--runs N] [--only NAME[,NAME...]] [--list]
    .venv/bin/python tools/fuzz/run.py --only NAME --replay FILE...

Each harness (tools/fuzz/harnesses.py) runs in its own process, at low priority, seeded
with inputs made by the real encoders, and keeps its corpus under build/fuzz/corpus/NAME
for the next run. A crash input is written to build/fuzz/crashes/; --replay runs such a
file through its harness without the fuzzer and shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "build" / "fuzz"
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    name: str
    runs: int
    seconds: float
    exec_per_s: int
    cov: int
    ft: int
    corpus: int
    crash: str | None  # the crash input's path, or a description of the failure
    log: str


sys.path.insert(0, str(ROOT))
from tools.fuzz.harnesses import NAMES, load  # noqa: E402


def worker(name: str, seeds_dir: Path, libfuzzer_args: list[str]) -> None:
    """Runs in the child: instrument tether, write the seeds, then fuzz until -runs."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["tether"]):
        harness = load(name)
    seeds_dir.mkdir(parents=True, exist_ok=True)
    for n, seed in enumerate(harness.seeds()):
        (seeds_dir / f"seed-{n:02d}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *libfuzzer_args], harness.run)
    atheris.Fuzz()


def fuzz(name: str, runs: int, out: Path, *, max_len: int, seed: int, niceness: int,
         echo: bool) -> Result:
    corpus, seeds = out / "corpus" / name, out / "seeds" / name
    crashes, logs = out / "crashes", out / "logs"
    for d in (corpus, crashes, logs):
        d.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    args = [f"-runs={runs}", f"-max_len={max_len}", f"-seed={seed}", "-timeout=10",
            "-print_final_stats=1", f"-artifact_prefix={crashes}/{name}-", str(corpus), str(seeds)]
    cmd = [sys.executable, __file__, "--worker", name, "--seeds-dir", str(seeds), "--", *args]
    start = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
        rc = proc.wait()
    seconds = time.monotonic() - start
    text = log_path.read_text(errors="replace")
    if echo:
        sys.stdout.write(text)
    return _result(name, text, rc, seconds, log_path, runs)


def _result(name: str, text: str, rc: int, seconds: float, log_path: Path, runs: int) -> Result:
    cov = ft = corpus = 0
    stats: dict[str, int] = {}
    for line in text.splitlines():
        if m := _STATUS.match(line):
            cov, ft, corpus = int(m[2]), int(m[3]), int(m[4])
        elif m := _STAT.match(line):
            stats[m[1]] = int(m[2])
    done = stats.get("number_of_executed_units", 0)
    crash = None
    if rc != 0 or done < runs:
        artifact = _ARTIFACT.search(text)
        crash = artifact[1] if artifact else f"exit status {rc} after {done} runs; see {log_path}"
    rate = stats.get("average_exec_per_sec") or round(done / max(seconds, 0.001))
    return Result(name, done, round(seconds, 1), rate, cov, ft, corpus,
                  crash, str(log_path))


def fuzz_all(names: list[str], args: argparse.Namespace) -> list[Result]:
    """Each harness in its own process, `args.jobs` at a time; figures as each finishes."""
    lock = threading.Lock()

    def one(name: str) -> Result:
        print(f"{name}: fuzzing {args.runs:,} inputs ...", flush=True)
        result = fuzz(name, args.runs, args.out, max_len=args.max_len, seed=args.seed, niceness=args.nice,
                      echo=args.verbose)
        status = "no crash" if result.crash is None else f"CRASH: {result.crash}"
        with lock:
            _save(args.out, [result])
            print(f"{name}: {result.runs:,} runs in {result.seconds:,.0f} s, {result.exec_per_s:,} exec/s, "
                  f"cov {result.cov}, ft {result.ft}, corpus {result.corpus}: {status}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, names))


def replay(name: str, files: list[str]) -> int:
    """Run saved inputs through a harness without the fuzzer; 1 if any crashes."""
    harness = load(name)
    failed = 0
    for path in files:
        try:
            harness.run(Path(path).read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: CRASH")
            traceback.print_exc()
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def _table(results: list[Result]) -> str:
    rows = ["| harness | inputs run | time (s) | exec/s | cov | ft | corpus | crashes |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    rows += [f"| {r.name} | {r.runs:,} | {r.seconds:,.0f} | {r.exec_per_s:,} | {r.cov} | {r.ft} | {r.corpus} "
             f"| {'0' if r.crash is None else r.crash} |" for r in results]
    return "\n".join(rows)


def _save(out: Path, results: list[Result]) -> None:
    path = out / "results.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.update({r.name: dict(asdict(r), finished=time.strftime("%Y-%m-%d %H:%M:%S")) for r in results})
    path.write_text(json.dumps(saved, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per decoder (default 1,000,000)")
    parser.add_argument("--only", help="comma-separated harness names (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the harnesses and what they fuzz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus, crashes and logs (build/fuzz)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input, in bytes")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("--nice", type=int, default=19, help="niceness of the fuzzing process (default 19)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="harnesses fuzzed at once (default 1: the long runs share the machine)")
    parser.add_argument("--verbose", action="store_true", help="show libFuzzer's own output")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs through --only's harness")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seeds-dir", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        worker(args.worker, args.seeds_dir, [a for a in rest if a != "--"])
        return 0
    names = list(NAMES) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown harness {', '.join(unknown)}; --list shows them")
    if args.list:
        for name in NAMES:
            print(f"{name:20} {load(name).decoders}")
        return 0
    if args.replay:
        if len(names) != 1:
            parser.error("--replay needs exactly one harness in --only")
        return replay(names[0], args.replay)
    results = fuzz_all(names, args)
    print(_table(results))
    return 1 if any(r.crash for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
