"""Shared test support. ``support.brokers`` runs real brokers (amqtt and Mosquitto).

pytest puts ``tests/`` on sys.path, so tests import it as ``support.brokers``.
"""

from __future__ import annotations
