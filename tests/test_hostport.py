"""HOST:PORT on the command line and in URLs: IPv6 addresses keep their brackets."""

from __future__ import annotations

import pytest

from tether.hostport import AddressError, format_hostport, parse_hostport


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("[::1]:8083", ("::1", 8083)),
    ("broker.example.com", ("broker.example.com", 1883)),
    (":9000", ("127.0.0.1", 9000)),
])
def test_parse_and_format_round_trip(text: str, parsed: tuple[str, int]) -> None:
    assert parse_hostport(text) == parsed
    assert parse_hostport(format_hostport(*parsed)) == parsed


def test_ipv6_is_bracketed_for_urls() -> None:
    assert format_hostport("::1", 8083) == "[::1]:8083"  # ws://[::1]:8083 for the console
    assert format_hostport("127.0.0.1", 8083) == "127.0.0.1:8083"


def test_not_a_port_says_what_is_wanted() -> None:
    with pytest.raises(AddressError, match="is not HOST:PORT"):
        parse_hostport("localhost:http")
