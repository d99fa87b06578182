"""The default name an enrolling agent asks for: this host's short name."""

from __future__ import annotations

import socket

from tether.topics import valid_name


def default_name() -> str:
    host = socket.gethostname().split(".")[0]
    return host if valid_name(host) else "agent"
