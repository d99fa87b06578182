"""Mutation testing of tether's security-critical core (issue 17).

Usage (from the repository root; the tool is cosmic-ray, pinned in the ``test`` extras):

    .venv/bin/python tools/mutation/run.py                       # every module, one after another
    .venv/bin/python tools/mutation/run.py --module tether/frames.py --module recorder/verify.py
    .venv/bin/python tools/mutation/run.py --report              # print the table from the saved sessions
    .venv/bin/python tools/mutation/run.py --rerun-survivors     # after adding tests: retry survivors only
    .venv/bin/python tools/mutation/run.py --list                # modules and the tests each one runs
    .venv/bin/python tools/mutation/run.py --hand                # the hand-written verify_log mutants
    .venv/bin/python tools/mutation/run.py --module tether/authz.py --limit 3   # a smoke run

Results, survivors and why each is equivalent: docs/testing.md, "Mutation testing".

How it works, and why it is safe to run in a shared working tree:

* Each module is mutated in a private copy of the Python tree (tether/, agent/, authority/,
  recorder/, client/, broker/, tests/, docs/, pyproject.toml) under ``--workdir`` (default
  ``$TMPDIR/tether-mutation``). The checkout itself is never written to, so nobody else's test
  run can import a mutant, and an interrupted run cannot leave mutated source behind. The copy is
  made afresh on every invocation, so a mutant left in a copy by a killed run is discarded.
* The copy gets symlinks tether/agent -> ../agent etc. (the package map of pyproject.toml), and
  the tests run with the copy's root first on sys.path, so ``tether.recorder.verify`` is the
  copy's file, not the editable install's. The tool checks this before mutating anything.
* cosmic-ray's ``local`` distributor runs one mutant at a time (one worker); ``--jobs N`` runs N
  modules side by side, each in its own copy. Each mutant runs only the fast unit tests of its
  module (``MODULES`` below), with ``-x``; no broker is started.
* Sessions (cosmic-ray's SQLite work databases) live in the work directory, one per module, so a
  run can be stopped and resumed: finished mutants are not run again unless the module's source
  changed (then its session is rebuilt) or ``--fresh`` / ``--rerun-survivors`` is given.
* The results (counts per module, every survivor with its diff) go to ``<workdir>/results.json``.

Operators: cosmic-ray's full set replaces every binary operator by every other one (11 mutants per
``+``) and adds random ``VariableReplacer``/``VariableInserter`` mutants. To keep a run within the
time a 2-core machine has, ``EXCLUDED_OPERATORS`` drops those cross-products to one replacement per
operator (the one a slip of the hand makes: + for -, < for <=, and for or, is for is not ...), and
drops RemoveDecorator (it only removes @dataclass/@property/@classmethod, which every test notices).
Everything else (NumberReplacer, AddNot, ReplaceTrueWithFalse, ExceptionReplacer,
ZeroIterationForLoop, unary operators, break/continue) runs in full.

The policy (authority/policy/): only policy *evaluation* is mutated: the functions of
``evaluation.py`` (``evaluate``, ``access``, ``_applies``, ``labels_match``, ``run_as_allowed``,
``_is_literal``, ``command_line``, ``_check_allow``, ``_deny_bites``) and, in ``model.py``,
``TimeWindow.contains``, ``Policy.decide``, ``Decision.statement_label`` and ``Statement.label``;
TOML parsing, validation and writing (``parse.py``, ``write.py``) are excluded (the parser is covered by
the fuzz harness and tests/test_policy.py, but its many message strings would swamp the figures).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_MAP = {"edge": "edge", "commands": "commands", "agent": "agent", "authority": "authority",
               "recorder": "recorder",
               "client": "client", "broker": "broker"}
COPY_DIRS = ["tether", "edge", "commands", "agent", "authority", "recorder", "client", "broker", "tests", "docs"]
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", ".hypothesis",
                                     ".mypy_cache", "dist", "*.so")

# module -> (unit tests it runs, extra pytest arguments)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "tether/frames.py": (["tests/test_frames.py"], []),
    "tether/channel.py": (["tests/test_channel.py"], []),
    "tether/handshake.py": (["tests/test_handshake.py"], []),
    "tether/grants.py": (["tests/test_grants.py"], []),
    "tether/paseto.py": (["tests/test_paseto.py"], []),
    "tether/authz.py": (["tests/test_authz.py"], []),
    # recorder/verify.py's tests are the ones that check open_signer_matches and read
    # what RecordingSender/RecordingReceiver produce.
    "tether/recording.py": (["tests/test_recording.py", "tests/test_verify_log.py"], []),
    "tether/recevents.py": (["tests/test_recording.py", "tests/test_verify_log.py"], []),
    # The primitives and the RTO came out of frames, handshake and recording, whose tests pin
    # them to the documented vectors and timers. The all-zero check in crypto.dh survives: it
    # is unreachable through PyNaCl, which refuses that result itself.
    "tether/crypto.py": (["tests/test_crypto.py", "tests/test_frames.py", "tests/test_frames_mutants.py",
                          "tests/test_handshake.py", "tests/test_handshake_mutants.py",
                          "tests/test_recording.py", "tests/test_recording_mutants.py"], []),
    "tether/retransmit.py": (["tests/test_channel.py", "tests/test_channel_mutants.py",
                              "tests/test_recording.py", "tests/test_recording_mutants.py"], []),
    # The CLI tests run the installed `tether` executable (the checkout, not the mutated copy),
    # and the dumps round-trip property exercises only the excluded writer: both are left out.
    "authority/policy/evaluation.py": (["tests/test_policy.py", "tests/test_policy_mutants.py"],
                                     ["-k", "not test_cli and not dumps_parses_back"]),
    "authority/policy/model.py": (["tests/test_policy.py", "tests/test_policy_mutants.py"],
                                  ["-k", "not test_cli and not dumps_parses_back"]),
    "recorder/verify.py": (["tests/test_verify_log.py"], []),
}

# Modules of which only these functions are mutated (the policy's evaluation); everything else
# in them is not.
MUTATED_FUNCTIONS: dict[str, set[str]] = {
    "authority/policy/evaluation.py": {"evaluate", "access", "_applies", "labels_match",
                                     "run_as_allowed", "_is_literal", "command_line",
                                     "_check_allow", "_deny_bites"},
    "authority/policy/model.py": {"TimeWindow.contains", "Policy.decide",
                                  "Decision.statement_label", "Statement.label"},
}

_KEEP_BINARY = {("Add", "Sub"), ("Sub", "Add"), ("Mul", "Div"), ("Div", "Mul"),
                ("FloorDiv", "Mul"), ("Mod", "FloorDiv"), ("Pow", "Mul"),
                ("LShift", "RShift"), ("RShift", "LShift"), ("BitOr", "BitAnd"),
                ("BitAnd", "BitOr"), ("BitXor", "BitOr")}
_KEEP_COMPARE = {("Eq", "NotEq"), ("NotEq", "Eq"), ("Lt", "LtE"), ("LtE", "Lt"),
                 ("Gt", "GtE"), ("GtE", "Gt"), ("Is", "IsNot"), ("IsNot", "Is"),
                 ("In", "NotIn"), ("NotIn", "In")}


@dataclass(frozen=True)
class HandMutant:
    """A mutation cosmic-ray has no operator for (it cannot delete a statement or a check)."""

    module: str
    old: str  # must occur exactly once in the module
    new: str
    what: str


# The attacks issue 17 names for recorder/verify.py, each as the one-line slip that would let it
# through. Every one must be killed by the module's unit tests (`--hand`).
HAND_MUTANTS = [
    HandMutant("recorder/verify.py",
               "        agent_key.verify(checkpoint_message(sid, ev.index, chain, "
               "ev.kind == EventKind.END), ev.data)\n",
               "        pass\n",
               "skip the agent-signature check (a rewritten event with a recomputed chain passes)"),
    HandMutant("recorder/verify.py",
               "                _signature(report, sid, rec, chain, agent_key, where)\n",
               "                report.signed_through = ev.index\n",
               "never call the signature check, but count the checkpoint as signed"),
    HandMutant("recorder/verify.py",
               "checkpoint_message(sid, ev.index, chain, ev.kind == EventKind.END)",
               "checkpoint_message(sid, ev.index, rec.chain, ev.kind == EventKind.END)",
               "check the signature over the checkpoint's own stored chain value"),
    HandMutant("recorder/verify.py",
               "            if not gap and computed != rec.chain:\n",
               "            if False:\n",
               "no chain comparison (a changed byte without recomputed hashes passes)"),
    HandMutant("recorder/verify.py",
               "            chain = rec.chain  # carry on",
               "            chain = computed  # carry on",
               "carry the recomputed chain instead of the stored one"),
    HandMutant("recorder/verify.py",
               "    if index < expected:\n        report.problems.append",
               "    if False:\n        report.problems.append",
               "accept reordered or repeated events"),
    HandMutant("recorder/verify.py",
               "            if report.ended:\n                report.problems.append",
               "            if False:\n                report.problems.append",
               "accept events after the end manifest"),
    HandMutant("recorder/verify.py",
               "    if index > expected:\n",
               "    if False:\n",
               "accept a removed event or checkpoint (no gap check)"),
    HandMutant("recorder/verify.py",
               "            if ev.kind in (EventKind.CHECKPOINT, EventKind.END) and not gap:\n",
               "            if ev.kind == EventKind.CHECKPOINT and not gap:\n",
               "do not check the end manifest's signature"),
    HandMutant("recorder/verify.py",
               "    if not open_signer_matches(open_message, sid, bytes(agent_key), grant_token):\n",
               "    if False:\n",
               "accept a missing or foreign OPEN"),
    HandMutant("recorder/verify.py",
               "        return not self.problems and self.unsigned == 0\n",
               "        return not self.problems\n",
               "report an unsigned tail as verified"),
    HandMutant("recorder/verify.py",
               "    except (grants.GrantError, ValueError) as exc:\n",
               "    except ValueError as exc:\n",
               "let a grant that does not verify raise instead of being reported (cosmic-ray's "
               "ExceptionReplacer crashes on this line)"),
    HandMutant("recorder/verify.py",
               "        if changed:\n",
               "        if False:\n",
               "accept a session row that differs from its grant"),
    HandMutant("recorder/verify.py",
               "    elif status == \"closed\":\n",
               "    elif False:\n",
               "accept a closed session without its end manifest"),
]


def run_hand(workdir: Path) -> list[dict[str, Any]]:
    """Apply each hand mutant in a private copy, run the module's tests, and restore it."""
    tree = workdir / "tree-hand"
    make_copy(tree)
    out = []
    for hm in HAND_MUTANTS:
        path = tree / hm.module
        original = path.read_text()
        if original.count(hm.old) != 1:
            raise SystemExit(f"hand mutant {hm.what!r}: its text occurs {original.count(hm.old)} "
                             f"times in {hm.module}; update HAND_MUTANTS")
        path.write_text(original.replace(hm.old, hm.new))
        try:
            t0 = time.monotonic()
            r = subprocess.run(test_command(hm.module), cwd=tree, env=test_env(),
                               capture_output=True, text=True, timeout=600)
        finally:
            path.write_text(original)
        failing = re.findall(r"^FAILED (\S+)", r.stdout, re.M)
        out.append({"module": hm.module, "what": hm.what, "killed": r.returncode != 0,
                    "killed_by": failing, "seconds": round(time.monotonic() - t0, 1)})
        print(f"{'killed  ' if r.returncode else 'SURVIVED'} {hm.module}: {hm.what}"
              f"{' by ' + ', '.join(failing) if failing else ''}", flush=True)
    return out


def operator_excluded(name: str) -> bool:
    """True for the operators this tool does not run (see the module docstring)."""
    name = name.removeprefix("core/")
    if name in {"VariableReplacer", "VariableInserter", "RemoveDecorator"}:
        return True
    m = re.fullmatch(r"Replace(Binary|Comparison)Operator_(\w+?)_(\w+)", name)
    if m:
        keep = _KEEP_BINARY if m.group(1) == "Binary" else _KEEP_COMPARE
        return (m.group(2), m.group(3)) not in keep
    return False


def function_line_ranges(module: str, source: str) -> list[tuple[int, int]]:
    """Line ranges (inclusive) of the functions of `module` that are mutated."""
    names = MUTATED_FUNCTIONS[module]
    ranges: list[tuple[int, int]] = []
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            ranges.append((node.lineno, node.end_lineno or node.lineno))
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                qual = f"{node.name}.{getattr(sub, 'name', '')}"
                if isinstance(sub, ast.FunctionDef) and qual in names:
                    ranges.append((sub.lineno, sub.end_lineno or sub.lineno))
    missing = names - {n for n in _names(tree)}
    if missing:
        raise SystemExit(f"{module} no longer defines {sorted(missing)}: update the tool")
    return ranges


def _names(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.add(node.name)
        if isinstance(node, ast.ClassDef):
            out.update(f"{node.name}.{s.name}" for s in node.body if isinstance(s, ast.FunctionDef))
    return out


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every type annotation.

    Every mutated module has ``from __future__ import annotations``, so an annotation is never
    evaluated at run time and a mutant inside one (``X | None`` -> ``X & None``) is equivalent by
    construction; they are not run.
    """
    tree = ast.parse(source)
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body):
        return []
    spans = []
    for node in ast.walk(tree):
        anns: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            anns.append(node.returns)
        elif isinstance(node, ast.arg | ast.AnnAssign):
            anns.append(node.annotation)
        for a in anns:
            if a is not None:
                spans.append(((a.lineno, a.col_offset),
                              (a.end_lineno or a.lineno, a.end_col_offset or 0)))
    return spans


def slug(module: str) -> str:
    return module.replace("/", "_").removesuffix(".py")


def make_copy(tree: Path) -> None:
    """A fresh private copy of the Python tree, laid out as the installed package."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for d in COPY_DIRS:
        shutil.copytree(ROOT / d, tree / d, ignore=COPY_IGNORE, symlinks=True)
    shutil.copy2(ROOT / "pyproject.toml", tree / "pyproject.toml")
    for sub, src in PACKAGE_MAP.items():
        (tree / "tether" / sub).symlink_to(Path("..") / src, target_is_directory=True)


def test_command(module: str) -> list[str]:
    tests, extra = MODULES[module]
    stem = Path(module).stem
    for extra_file in sorted((ROOT / "tests").glob(f"test_{stem}_mutants.py")):
        tests = [*tests, f"tests/{extra_file.name}"]
    # -x: a killed mutant costs only the tests up to the first failure.
    # -p no:cacheprovider: no .pytest_cache in the copy; -o addopts=: no -ra summaries.
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-o", "addopts=", "--timeout=120", *extra, *tests]


def check_copy_imports(tree: Path, module: str) -> None:
    dotted = "tether." + module.removesuffix(".py").replace("/", ".").removeprefix("tether.")
    code = f"import {dotted} as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                         env=test_env(), check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{dotted} imports from {out}, not from the copy {tree}: refusing to run")


def test_env() -> dict[str, str]:
    env = dict(os.environ)
    # A mutant can keep the size and mtime second of the original, so a cached .pyc would hide
    # it; nothing in the copy is ever compiled to disk.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class ModuleResult:
    module: str
    mutants: int = 0
    killed: int = 0
    timeouts: int = 0
    survived: int = 0
    incompetent: int = 0
    pending: int = 0
    seconds: float = 0.0
    survivors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        done = self.killed + self.timeouts + self.survived
        return 100.0 * (self.killed + self.timeouts) / done if done else 0.0


def _cr(args: list[str], cwd: Path, log: Path) -> None:
    exe = Path(sys.executable).with_name("cosmic-ray")
    with log.open("a") as fh:
        subprocess.run([str(exe), *args], cwd=cwd, env=test_env(), check=True,
                       stdout=fh, stderr=subprocess.STDOUT)


def run_module(module: str, workdir: Path, fresh: bool, rerun_survivors: bool,
               timeout: float | None, limit: int | None = None) -> ModuleResult:
    started = time.monotonic()
    tree = workdir / f"tree-{slug(module)}"
    session = workdir / f"{slug(module)}.sqlite"
    stamp = workdir / f"{slug(module)}.source-sha256"
    log = workdir / f"{slug(module)}.log"
    source = (ROOT / module).read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()

    make_copy(tree)
    check_copy_imports(tree, module)

    cmd = test_command(module)
    t0 = time.monotonic()
    base = subprocess.run(cmd, cwd=tree, env=test_env(), capture_output=True, text=True)
    baseline = time.monotonic() - t0
    if base.returncode != 0:
        raise SystemExit(f"{module}: the unmutated tests fail in the copy:\n{base.stdout[-3000:]}")
    per_mutant = timeout or max(30.0, 10 * baseline)

    config = workdir / f"{slug(module)}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {per_mutant}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(shlex.join(cmd))}\n"
        "[cosmic-ray.distributor]\nname = \"local\"\n"
    )
    stale = not stamp.exists() or stamp.read_text() != digest
    if fresh or stale or not session.exists():
        session.unlink(missing_ok=True)
        _cr(["init", str(config), str(session)], tree, log)
        mark_skipped(session, module, source, limit)
        stamp.write_text(digest)
    elif rerun_survivors:
        with sqlite3.connect(session) as db:
            db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED' "
                       "OR test_outcome = 'survived'")
    _cr(["exec", str(config), str(session)], tree, log)
    # cosmic-ray restores each file after its mutant; check it did before trusting the figures.
    if (tree / module).read_text() != source:
        raise SystemExit(f"{module}: the copy was left mutated; the results are not trustworthy")
    result = summarize(module, session, source)
    result.seconds = time.monotonic() - started
    return result


def mark_skipped(session: Path, module: str, source: str, limit: int | None = None) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    ranges = function_line_ranges(module, source) if module in MUTATED_FUNCTIONS else None
    annotations = annotation_spans(source)
    with use_db(str(session), WorkDB.Mode.open) as db:
        skipped = []
        kept = []
        for item in db.pending_work_items:
            mutation = item.mutations[0]
            line = mutation.start_pos[0]
            out_of_scope = ranges is not None and not any(a <= line <= b for a, b in ranges)
            in_annotation = any(a <= tuple(mutation.start_pos) < b for a, b in annotations)
            if operator_excluded(mutation.operator_name) or out_of_scope or in_annotation:
                skipped.append(item.job_id)
            else:
                kept.append((tuple(mutation.start_pos), mutation.operator_name,
                             mutation.occurrence, item.job_id))
        if limit is not None:  # a smoke run: the first `limit` mutants of the file
            skipped += [job for *_, job in sorted(kept)[limit:]]
        db.set_multiple_results(skipped, WorkResult(output="excluded by tools/mutation/run.py",
                                                    worker_outcome=WorkerOutcome.SKIPPED))


def summarize(module: str, session: Path, source: str) -> ModuleResult:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    lines = source.splitlines()
    res = ModuleResult(module)
    with use_db(str(session), WorkDB.Mode.open) as db:
        results = dict(db.results)
        for item in db.work_items:
            r = results.get(item.job_id)
            if r is not None and r.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            res.mutants += 1
            if r is None:
                res.pending += 1
            elif r.test_outcome == TestOutcome.SURVIVED:
                res.survived += 1
                m = item.mutations[0]
                res.survivors.append({
                    "line": m.start_pos[0], "col": m.start_pos[1],
                    "operator": m.operator_name.removeprefix("core/"),
                    "occurrence": m.occurrence, "source": lines[m.start_pos[0] - 1].strip(),
                    "diff": r.diff})
            elif r.test_outcome == TestOutcome.KILLED and r.output == "timeout":
                res.timeouts += 1
            elif r.test_outcome == TestOutcome.KILLED:
                res.killed += 1
            else:
                res.incompetent += 1
    res.survivors.sort(key=lambda s: (s["line"], s["col"], s["operator"]))
    return res


def report(results: list[ModuleResult]) -> str:
    rows = ["| module | mutants | killed | timeouts | survived | other | kill rate | time |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    tot = ModuleResult("total")
    for r in results:
        rows.append(f"| {r.module} | {r.mutants} | {r.killed} | {r.timeouts} | {r.survived} | "
                    f"{r.incompetent + r.pending} | {r.rate:.1f} % | {r.seconds:.0f} s |")
        for k in ("mutants", "killed", "timeouts", "survived", "incompetent", "pending"):
            setattr(tot, k, getattr(tot, k) + getattr(r, k))
        tot.seconds += r.seconds
    rows.append(f"| **total** | {tot.mutants} | {tot.killed} | {tot.timeouts} | {tot.survived} | "
                f"{tot.incompetent + tot.pending} | {tot.rate:.1f} % | {tot.seconds:.0f} s |")
    lines = ["\n".join(rows), ""]
    for r in results:
        for s in r.survivors:
            lines.append(f"SURVIVED {r.module}:{s['line']}:{s['col']} {s['operator']} "
                         f"#{s['occurrence']}: {s['source']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--module", action="append", choices=sorted(MODULES),
                    help="mutate only this module (repeatable); default: all")
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "tether-mutation",
                    help="copies, sessions and results.json (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="modules run side by side (default 1)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant (default: max(30, 10 x the unmutated run))")
    ap.add_argument("--fresh", action="store_true", help="discard saved sessions")
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N mutants of each module (a smoke run; implies --fresh)")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="run the saved survivors again (after adding tests)")
    ap.add_argument("--report", action="store_true", help="only print the saved results")
    ap.add_argument("--list", action="store_true", help="list modules and their test commands")
    ap.add_argument("--hand", action="store_true",
                    help="run only the hand-written mutants (HAND_MUTANTS); exit 1 if one survives")
    args = ap.parse_args(argv)
    modules = args.module or list(MODULES)
    workdir: Path = args.workdir.resolve()
    if workdir.is_relative_to(ROOT) and not workdir.is_relative_to(ROOT / "tmp"):
        ap.error("--workdir must be outside the checkout (or under its ignored tmp/)")
    workdir.mkdir(parents=True, exist_ok=True)
    results_file = workdir / "results.json"
    saved: dict[str, Any] = json.loads(results_file.read_text()) if results_file.exists() else {}

    if args.list:
        for m in modules:
            print(f"{m}: {shlex.join(test_command(m)[1:])}")
        return 0
    if args.hand:
        hand = run_hand(workdir)
        (workdir / "hand.json").write_text(json.dumps(hand, indent=1))
        print(f"hand mutants: {sum(h['killed'] for h in hand)} of {len(hand)} killed")
        return 0 if all(h["killed"] for h in hand) else 1
    if not args.report:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_module, m, workdir, args.fresh or args.limit is not None,
                                   args.rerun_survivors, args.timeout, args.limit): m
                       for m in modules}
            for fut in concurrent.futures.as_completed(futures):
                r = fut.result()
                entry = r.__dict__ | {"rate": r.rate,
                                      "commit": _git("rev-parse", "HEAD"),
                                      "dirty": bool(_git("status", "--porcelain", "--", r.module)),
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                # Another invocation may have saved other modules meanwhile: merge, not clobber.
                if results_file.exists():
                    saved = json.loads(results_file.read_text())
                if args.rerun_survivors and r.module in saved:
                    entry["seconds"] = saved[r.module]["seconds"]
                    entry["rerun_seconds"] = saved[r.module].get("rerun_seconds", 0) + r.seconds
                saved[r.module] = entry
                results_file.write_text(json.dumps(saved, indent=1, sort_keys=True))
                print(f"{r.module}: {r.mutants} mutants, {r.rate:.1f} % killed, "
                      f"{r.seconds:.0f} s", flush=True)
    # The figures come from the sessions themselves (results.json may be older, e.g. when a
    # --rerun-survivors of one module ran beside a full run).
    if results_file.exists():
        saved = json.loads(results_file.read_text())
    results = []
    for m in modules:
        session = workdir / f"{slug(m)}.sqlite"
        if session.exists():
            r = summarize(m, session, (ROOT / m).read_text())
            r.seconds = saved.get(m, {}).get("seconds", 0.0) + saved.get(m, {}).get("rerun_seconds", 0.0)
            results.append(r)
    print(report(results))
    print(f"\nresults: {results_file}")
    return 0


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
