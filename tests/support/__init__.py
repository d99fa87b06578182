"""Shared test support. ``support.brokers`` runs real brokers (amqtt and Mosquitto).

pytest puts ``tests/`` on sys.path, so tests import it as ``support.brokers``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tether

REPO_ROOT = Path(__file__).resolve().parents[2]

# The role folders (broker/, agent/, ...) are installed as tether.<role> through
# setuptools' package-dir mapping. Run from the repository root, `import tether` finds
# ./tether first, and an editable install in "strict" mode (a link tree, which mypy can
# follow) then cannot supply tether.broker. Adding the repository root to tether's package
# path maps each folder exactly as the install does. Only done when it is missing.
if (
    importlib.util.find_spec("tether.broker") is None
    and (REPO_ROOT / "broker" / "__init__.py").is_file()
):
    tether.__path__.append(str(REPO_ROOT))
