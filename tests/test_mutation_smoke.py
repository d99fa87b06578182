"""Smoke run of tools/mutation/run.py (the mutation-testing command of docs/testing.md): a few
mutants of tether/authz.py, in a work directory under tmp_path. It must kill some, report
them, and leave the checkout as it was (it mutates a private copy, never the tree)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = "tether/authz.py"


def snapshot() -> dict[str, str]:
    """Hashes of the files the run could touch: the mutated package and the tool."""
    files = [*ROOT.glob("tether/*.py"), *ROOT.glob("tools/mutation/*"), *ROOT.glob("tests/test_authz*.py")]
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


def test_a_smoke_run_kills_mutants_and_leaves_the_tree_unchanged(tmp_path: Path) -> None:
    before = snapshot()
    r = subprocess.run([sys.executable, "tools/mutation/run.py", "--module", MODULE, "--limit", "3",
                        "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot() == before
    assert "tether/authz.py" in r.stdout and "kill rate" in r.stdout
    result = json.loads((tmp_path / "results.json").read_text())[MODULE]
    assert result["mutants"] == 3
    assert result["killed"] + result["timeouts"] > 0
    assert result["killed"] + result["timeouts"] + result["survived"] == 3
    # The copy it mutated is back to the original source.
    assert (tmp_path / "tree-tether_authz" / MODULE).read_bytes() == (ROOT / MODULE).read_bytes()
