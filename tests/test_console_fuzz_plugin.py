"""The Mosquitto plugin's console-login decision under libFuzzer (tools/fuzz_plugin/): a
seconds-long smoke of the same command that runs the million-input campaign. It builds the
harness with clang-14 (ASan, UBSan, libFuzzer), runs a few thousand inputs from scratch,
and must end with no crash and no broken property (a token logging in twice, outside its
window, a spoiled token logging in, one slot crowding out another, an unbounded table)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "tools" / "fuzz_plugin" / "run.sh"


def test_fuzz_smoke(tmp_path: Path) -> None:
    runs = 3000
    r = subprocess.run([str(RUN), "--runs", str(runs), "--out", str(tmp_path), "--no-coverage"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"fuzz_plugin: (\d+) runs in \d+ s, cov (\d+) ft \d+, corpus \d+, crashes 0", summary)
    assert found, summary
    assert int(found[1]) == runs
    assert int(found[2]) > 50, summary  # it reached well past the parser's first branch
    assert not any((tmp_path / "crashes").iterdir())
