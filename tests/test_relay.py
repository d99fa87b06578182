"""tests/support/relay.py against a plain echo server on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.relay import Relay


class EchoServer:
    """Echoes every connection until EOF, then closes it; one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(262144):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._accepting.join(5)
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _open_fds() -> dict[str, str]:
    """This process's descriptors and what each is (listdir's own, gone by now, left out)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


def _exchange(port: int, payload: bytes) -> bytes:
    """Send payload and read the echo until EOF, concurrently (the echo would block
    against an unread receive buffer otherwise)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while chunk := s.recv(1 << 20):
            got += chunk
        sender.join(30)
        return bytes(got)


def _turned_away(port: int) -> bool:
    """A connection is reset (at connect, write or read) or closed without an answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"during")
            return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_bytes_pass_both_ways_fast_and_exact(echo: EchoServer) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    with Relay(echo.port) as relay:
        start = time.monotonic()
        got = _exchange(relay.port, payload)
        elapsed = time.monotonic() - start
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert relay.accepted == 1 and relay.refused == 0
        assert relay.bytes_up == relay.bytes_down == len(payload)
        # 20 MB each way: far below the relay's pace, but it must not be what limits a test.
        assert elapsed < 20, f"{elapsed:.1f} s for 2 x 20 MB"
        print(f"relay: {2 * len(payload) / elapsed / 1e6:.0f} MB/s through (both ways)")


def test_cut_resets_both_sides_and_refuses_until_restored(echo: EchoServer) -> None:
    with Relay(echo.port) as relay:
        conn = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        conn.sendall(b"before")
        assert conn.recv(100) == b"before"
        assert relay.active == 1
        relay.cut()
        assert relay.active == 0 and relay.cuts == 1 and relay.is_cut
        # The client side was reset: a read ends with an error or EOF at once, not a wait.
        with pytest.raises((ConnectionResetError, EOFError)):
            data = conn.recv(100)
            if not data:
                raise EOFError
        conn.close()
        # The server side was closed too: its echo thread finished.
        for t in echo.threads:
            t.join(10)
            assert not t.is_alive()
        # New connections during the cut are reset, never relayed.
        for _ in range(3):
            assert _turned_away(relay.port)
        assert relay.refused == 3 and relay.accepted == 1 and len(relay.attempts) == 4
        assert len(echo.conns) == 1  # nothing reached the server during the cut
        relay.restore()
        assert _exchange(relay.port, b"after") == b"after"
        assert relay.accepted == 2


def test_close_stops_the_thread_and_leaks_no_socket(echo: EchoServer) -> None:
    before = _open_fds()
    relay = Relay(echo.port)
    conns = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(3)]
    for c in conns:
        c.sendall(b"x")
        assert c.recv(1) == b"x"
    relay.close()
    assert not relay._thread.is_alive()
    for c in conns:
        c.close()
    for t in echo.threads:  # the server's ends of the relayed connections close on the reset
        t.join(10)
    after = _open_fds()
    assert not {fd: what for fd, what in after.items() if before.get(fd) != what}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=5).close()
    with pytest.raises(RuntimeError):
        relay.cut()
    relay.close()  # twice is harmless


def test_a_silent_cut_moves_nothing_and_closes_nothing_until_restored(echo: EchoServer) -> None:
    with Relay(echo.port) as relay:
        conn = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        conn.sendall(b"before")
        assert conn.recv(100) == b"before"
        relay.cut(silent=True)
        assert relay.is_cut and relay.active == 1
        conn.sendall(b"during")
        # A connection made during the partition waits, unanswered, like the old one.
        late = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        late.sendall(b"late")
        for s in (conn, late):
            s.settimeout(0.5)
            with pytest.raises(TimeoutError):
                s.recv(100)  # nothing came through and nothing was closed
        assert relay.accepted == 1 and len(echo.conns) == 1
        relay.restore()
        for s, sent in ((conn, b"during"), (late, b"late")):
            s.settimeout(10)
            got = b""
            while len(got) < len(sent):
                got += s.recv(100)
            assert got == sent  # held, then delivered once
            s.close()
        assert relay.accepted == 2 and relay.refused == 0
