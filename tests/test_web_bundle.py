"""The committed web console bundle (client/web/dist) is exactly what its sources build.

`./install.sh` runs `npm ci` in client/web, so node_modules holds the lockfile's packages;
this test checks that it does, rebuilds the bundle with client/web/build.mjs (esbuild,
deterministic) into a temporary directory and fails on any difference from the committed
files. After changing client/web/src: `cd client/web && node build.mjs` and commit dist/.

Node and the npm packages are required: this fails, never skips, without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "client" / "web"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.fail("node and client/web/node_modules are required: run ./install.sh "
                    "(apt nodejs npm, then `npm ci` in client/web)")
    return node


def test_node_modules_match_the_lockfile() -> None:
    _node()
    lock = json.loads((WEB / "package-lock.json").read_text())
    wrong = []
    for path, entry in lock["packages"].items():
        if not path or entry.get("link") or entry.get("optional"):
            continue
        manifest = WEB / path / "package.json"
        got = json.loads(manifest.read_text()).get("version") if manifest.exists() else None
        if got != entry.get("version"):
            wrong.append(f"{path}: locked {entry.get('version')}, installed {got}")
    assert not wrong, "node_modules differs from package-lock.json (run `npm ci` in client/web):\n" + "\n".join(wrong)


def test_committed_bundle_is_the_build_of_the_sources(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    proc = subprocess.run([_node(), "build.mjs", "--out", str(out)], cwd=WEB, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    dist = WEB / "dist"
    committed = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert built == committed, f"files differ: built {built}, committed {committed}"
    stale = [name for name in built if (out / name).read_bytes() != (dist / name).read_bytes()]
    assert not stale, (f"client/web/dist is not the build of client/web/src: {stale} differ. "
                       "Rebuild with `cd client/web && node build.mjs` and commit dist/.")
    tracked = subprocess.run(["git", "ls-files", "client/web/dist"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    if tracked:  # in a git checkout, the bundle is committed, not just present
        assert sorted(Path(t).relative_to("client/web/dist").as_posix() for t in tracked) == committed
