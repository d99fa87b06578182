"""A loopback TCP relay a test controls: a network cut it can switch on and off.

``Relay(target_port)`` listens on a free port of 127.0.0.1 and forwards every connection
to ``127.0.0.1:target_port``, both ways, on one thread with a selector (no busy loop;
backpressure by reading a side only while the other side's buffer is drained).

* ``cut()`` closes every relayed connection at once, both sides, with a reset (what was
  in flight in the relay is lost, as on a broken link), and from then on every new
  connection is accepted and reset at once (counted in ``refused``), until
  ``restore()``. Both return once the relay thread has done it.
* ``cut(silent=True)`` is a partition instead: nothing moves and nothing is closed;
  neither end learns of it except by its own timeouts. New connections wait in the
  listen backlog. ``restore()`` lets everything flow again, so a connection that neither
  end gave up on carries on where it stopped, as TCP would over a mended link; one that
  an end closed meanwhile is closed on the other end only then.
* ``close()`` stops the thread and closes every socket it opened.

Counters: ``accepted`` (connections relayed), ``refused`` (reset during a cut),
``active`` (open now), ``bytes_up`` (client to target), ``bytes_down`` (back), ``cuts``;
``attempts``, the time.monotonic() of every connection accepted, relayed or refused.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
CHUNK = 256 * 1024
# Past this much unwritten in one direction, the relay stops reading that direction's
# source: TCP then pushes back on the sender, as a real link would.
HIGH_WATER = 1024 * 1024

__all__ = ["Relay"]


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): no orderly FIN, unread data dropped."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(eq=False)
class _Side:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)  # bytes waiting to be written to sock
    eof_in: bool = False  # sock sent FIN: nothing more to read from it
    shut_out: bool = False  # we have shut down writing to sock


@dataclass(eq=False)
class _Pair:
    client: _Side
    target: _Side

    def other(self, side: _Side) -> _Side:
        return self.target if side is self.client else self.client


class Relay:
    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        if target_host != HOST:
            raise ValueError("the relay forwards on loopback only")
        self.target = (target_host, target_port)
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.attempts: list[float] = []
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._is_cut = False
        self._silent = False
        self._stopping = False
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._sel = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"relay:{self.port}", daemon=True)
        self._thread.start()

    # ----- the test's side -----

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._pairs)

    @property
    def is_cut(self) -> bool:
        return self._is_cut

    def cut(self, silent: bool = False) -> None:
        """Reset every relayed connection now and refuse new ones until restore(); or,
        `silent`, stop every byte without closing anything."""
        self._call(self._do_silence if silent else self._do_cut)

    def restore(self) -> None:
        self._call(self._do_restore)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._do_stop)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the relay thread did not stop")

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Relay {HOST}:{self.port} -> {self.target[1]} accepted={self.accepted} "
                f"refused={self.refused} active={self.active} cut={self._is_cut}>")

    def _call(self, fn: Callable[[], None], timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the relay is closed")
        done = threading.Event()
        with self._lock:
            self._commands.append((fn, done))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if not done.wait(timeout):
            raise RuntimeError("the relay thread did not answer")

    # ----- the relay thread -----

    def _do_cut(self) -> None:
        self._is_cut = True
        self.cuts += 1
        for pair in list(self._pairs):
            self._drop(pair)

    def _do_silence(self) -> None:
        self._is_cut = self._silent = True
        self.cuts += 1
        for key in list(self._sel.get_map().values()):
            if key.data != "wake":
                self._sel.unregister(key.fileobj)

    def _do_restore(self) -> None:
        self._is_cut = False
        if self._silent:
            self._silent = False
            self._sel.register(self._listener, selectors.EVENT_READ, "accept")
            for pair in list(self._pairs):
                self._refresh(pair)

    def _do_stop(self) -> None:
        self._stopping = True
        for pair in list(self._pairs):
            self._drop(pair)

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._sel.select():
                    data: Any = key.data
                    if data == "wake":
                        self._drain_wake()
                    elif data == "accept" and not self._silent:
                        self._accept()
                    elif not self._silent:  # (events of a batch that a silent cut began)
                        pair, side = data
                        if pair in self._pairs:
                            self._service(pair, side, mask)
                    if self._stopping:
                        break
        finally:
            for pair in list(self._pairs):
                self._drop(pair)
            self._sel.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            commands, self._commands = self._commands, []
        for fn, done in commands:
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.attempts.append(time.monotonic())
            if self._is_cut:
                self.refused += 1
                _reset(conn)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self.refused += 1
                _reset(conn)
                continue
            for s in (conn, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(_Side(conn), _Side(upstream))
            with self._lock:
                self._pairs.append(pair)
            self.accepted += 1
            self._sel.register(conn, selectors.EVENT_READ, (pair, pair.client))
            self._sel.register(upstream, selectors.EVENT_READ, (pair, pair.target))

    def _refresh(self, pair: _Pair) -> None:
        """Read a side only while the other side's buffer is below HIGH_WATER; write it
        while it has something waiting. A selector cannot hold an empty mask, so a side
        with neither leaves the selector until it has."""
        if self._silent:
            return
        for side in (pair.client, pair.target):
            other = pair.other(side)
            events = 0
            if not side.eof_in and len(other.out) < HIGH_WATER:
                events |= selectors.EVENT_READ
            if side.out:
                events |= selectors.EVENT_WRITE
            registered = side.sock in self._sel.get_map()
            if events and registered:
                self._sel.modify(side.sock, events, (pair, side))
            elif events:
                self._sel.register(side.sock, events, (pair, side))
            elif registered:
                self._sel.unregister(side.sock)

    def _service(self, pair: _Pair, side: _Side, mask: int) -> None:
        other = pair.other(side)
        try:
            if mask & selectors.EVENT_READ and not side.eof_in:
                data = side.sock.recv(CHUNK)
                if data:
                    other.out += data
                    if side is pair.client:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    self._flush(other)
                else:
                    side.eof_in = True
            if mask & selectors.EVENT_WRITE and side.out:
                self._flush(side)
            # A half-close passes through once what came before it is written.
            for src, dst in ((pair.client, pair.target), (pair.target, pair.client)):
                if src.eof_in and not dst.out and not dst.shut_out:
                    dst.shut_out = True
                    dst.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self._drop(pair)
                return
        if pair.client.eof_in and pair.target.eof_in and not pair.client.out and not pair.target.out:
            self._drop(pair, graceful=True)
            return
        self._refresh(pair)

    def _flush(self, side: _Side) -> None:
        while side.out and not self._silent:
            try:
                n = side.sock.send(side.out[:CHUNK])
            except (BlockingIOError, InterruptedError):
                return
            del side.out[:n]

    def _drop(self, pair: _Pair, graceful: bool = False) -> None:
        """Forget a pair and close both sockets: with a reset, unless both ends have
        closed in order (a reset then could discard what is still in the send buffer)."""
        with self._lock:
            if pair not in self._pairs:
                return
            self._pairs.remove(pair)
        for side in (pair.client, pair.target):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(side.sock)
            if graceful:
                side.sock.close()
            else:
                _reset(side.sock)
