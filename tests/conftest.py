from __future__ import annotations

from collections.abc import Iterator

import pytest
from stack import Stack, running_stack

BROKERS = ["amqtt", "mosquitto"]


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
