"""HOST:PORT as people type it and as URLs and listen addresses want it."""

from __future__ import annotations

from tether.errors import TetherError


class AddressError(TetherError, ValueError):
    """Not a HOST:PORT."""


def parse_hostport(text: str, default_port: int = 1883) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:1883
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise AddressError(f"{text!r} is not HOST:PORT") from None


def format_hostport(host: str, port: int) -> str:
    """HOST:PORT as a URL or a listen address wants it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["AddressError", "format_hostport", "parse_hostport"]
