"""The map of the code (docs/architecture.md, "Map of the code"), checked.

* `tether` (tether/) is the sans-IO core: bytes and time in, bytes and events out. It
  imports no I/O module, never reads the clock or the OS random source (randomness and
  time are parameters, supplied by the edges), and no other tether package.
* Each package imports only the packages the map allows it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> its directory, as pyproject.toml maps them
DIRS = {"core": "tether", "edge": "edge", "commands": "commands", "agent": "agent",
        "authority": "authority", "recorder": "recorder", "client": "client", "broker": "broker"}

# What each package may import (besides itself and third-party libraries its job needs).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "edge": frozenset({"core"}),
    "agent": frozenset({"core", "edge"}),
    "recorder": frozenset({"core", "edge"}),
    "client": frozenset({"core", "edge"}),
    "broker": frozenset({"core", "edge"}),
    # The authority writes the broker's password, ACL and console-key files.
    "authority": frozenset({"core", "edge", "broker"}),
    "commands": frozenset({"core", "edge", "agent", "recorder", "client", "broker", "authority"}),
}

# Modules the core must not import: I/O, the clock, randomness, processes, threads.
CORE_FORBIDDEN_MODULES = frozenset({
    "asyncio", "socket", "selectors", "ssl", "threading", "multiprocessing", "concurrent",
    "subprocess", "os", "sys", "time", "secrets", "random", "pathlib", "io", "signal",
    "shutil", "tempfile", "glob", "fcntl", "termios", "pty", "tty", "sqlite3", "logging",
    "urllib", "http", "email", "paho", "amqtt", "pyte",
})
# Calls that read the clock, the OS random source or files, by their dotted name.
CORE_FORBIDDEN_CALLS = frozenset({
    "open", "PrivateKey.generate", "SigningKey.generate", "datetime.now", "datetime.utcnow",
    "datetime.today", "date.today", "nacl.utils.random", "random",
})


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tether":
        return None
    if len(parts) == 1 or parts[1] not in DIRS or parts[1] == "core":
        return "core"
    return parts[1]


def sources(package: str) -> list[Path]:
    return sorted((ROOT / DIRS[package]).rglob("*.py"))


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def test_every_package_directory_is_checked() -> None:
    configured = (ROOT / "pyproject.toml").read_text()
    for package, directory in DIRS.items():
        assert (ROOT / directory / "__init__.py").exists(), package
        assert f'"{directory}"' in configured, f"{directory} is not mapped in pyproject.toml"


@pytest.mark.parametrize("path", sources("core"), ids=lambda p: p.name)
def test_the_core_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for line, module in imports(tree):
        top = module.split(".")[0]
        if top in CORE_FORBIDDEN_MODULES and not module.startswith("tether"):
            problems.append(f"line {line}: imports {module}")
        package = package_of(module)
        if package not in (None, "core"):
            problems.append(f"line {line}: imports {module} (the core imports no other package)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in CORE_FORBIDDEN_CALLS or (name and name.endswith((".generate", ".urandom"))):
                problems.append(f"line {node.lineno}: calls {name}()")
    assert not problems, f"{path.relative_to(ROOT)} is not sans-IO:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", sorted(set(DIRS) - {"core"}))
def test_each_package_imports_only_what_the_map_allows(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    problems = []
    for path in sources(package):
        for line, module in imports(ast.parse(path.read_text(), str(path))):
            target = package_of(module)
            if target is not None and target not in allowed:
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {module} ({target})")
    assert not problems, "\n".join(problems)


def test_a_planted_violation_is_caught(tmp_path: Path) -> None:
    """The checks above would see an I/O import and a clock read in a core module."""
    bad = ast.parse("import os\nfrom tether.edge.mqtt import MqttConnection\nx = time.time()\n"
                    "k = PrivateKey.generate()\n")
    modules = [m for _, m in imports(bad)]
    assert "os" in modules and package_of("tether.edge.mqtt") == "edge"
    calls = [dotted(n.func) for n in ast.walk(bad) if isinstance(n, ast.Call)]
    assert "PrivateKey.generate" in calls and "time.time" in calls
