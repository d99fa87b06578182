from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from stack import Stack, running_stack

if TYPE_CHECKING:
    from test_e2e_browser import Browser

BROKERS = ["amqtt", "mosquitto"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium through Playwright, one per browser test module."""
    from test_e2e_browser import Browser

    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module", params=BROKERS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A shared deployment per broker kind, for tests that leave it as they found it."""
    with running_stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}")) as s:
        yield s


@pytest.fixture(params=BROKERS)
def fresh_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A deployment of its own, for tests that restart or stop parts of it."""
    with running_stack(request.param, tmp_path_factory.mktemp(f"fresh-{request.param}")) as s:
        yield s


# What makes a test end to end: a deployment fixture, or a module that starts processes,
# brokers or a browser. `pytest -m "not e2e"` runs the rest (the unit tests) in well under
# a minute; plain `pytest` runs everything.
_E2E_FIXTURES = frozenset({"stack", "fresh_stack"})
_E2E_SIGNS = ("subprocess", "Popen", "start_embedded", "start_mosquitto", "BrokerProcess",
              "running_stack", "playwright", "chromium", "os.fork", "pty.fork")
_module_is_e2e: dict[str, bool] = {}


def _starts_processes(module: object) -> bool:
    path = getattr(module, "__file__", None)
    if path is None:
        return False
    if path not in _module_is_e2e:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        _module_is_e2e[path] = any(sign in source for sign in _E2E_SIGNS)
    return _module_is_e2e[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or _starts_processes(
                getattr(item, "module", None)):
            item.add_marker(pytest.mark.e2e)
