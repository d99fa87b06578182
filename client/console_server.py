"""The web console's HTTP server: client/web/dist and its /config.json.

A small static HTTP/1.1 server on asyncio streams, loopback by default. It serves only
public material: the bundle, and the broker's websocket URL, the topic prefix and the
authority's public keys. Logins happen in the browser (tether.console_login) and every
session is end-to-end encrypted there, so whoever serves the page never sees a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from tether.encoding import dumps
from tether.errors import TetherError

log = logging.getLogger("tether.client.console_server")

DEFAULT_LISTEN: Final = "127.0.0.1:8080"
DEFAULT_WS_LISTEN: Final = "127.0.0.1:8083"
MAX_HEADER: Final = 16 * 1024
IDLE_TIMEOUT: Final = 30.0
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The page's Content-Security-Policy, beside the broker's websocket in connect-src. Scripts
# come only from the bundle; 'wasm-unsafe-eval' lets libsodium compile its WebAssembly
# (no eval of JavaScript); mqtt.js runs its keepalive timers in a worker it makes from a
# blob: URL; xterm.js sets inline styles (a <style> per terminal, style attributes for
# colours). Never framed, no plugins, no <base>, no form sent anywhere.
_CSP: Final = {
    "default-src": "'self'",
    "script-src": "'self' 'wasm-unsafe-eval'",
    "style-src": "'self' 'unsafe-inline'",
    "worker-src": "'self' blob:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}
_URL_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/:[]%")
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   431: "Request Header Fields Too Large"}


def dist_dir() -> Path:
    """The committed bundle inside the installed package (client/web/dist), or the one
    $TETHER_CONSOLE_DIST names (a bundle under development)."""
    import os

    import tether.client

    override = os.environ.get("TETHER_CONSOLE_DIST")
    if override:
        return Path(override).expanduser()
    return Path(tether.client.__file__).resolve().parent / "web" / "dist"


def console_config(ws_url: str, authority: Mapping[str, str], prefix: str) -> dict[str, Any]:
    return {"ws_url": ws_url, "prefix": prefix,
            "authority": {"ed25519": authority["ed25519"], "x25519": authority["x25519"]}}


def ws_source(url: str) -> str:
    """The broker's websocket URL as a CSP source (scheme://host[:port][/path]); ValueError
    if it is not a plain ws:// or wss:// URL that a policy can name."""
    if not set(url) <= _URL_SAFE:
        raise ValueError(f"{url!r} has characters a URL to the broker does not need")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not ws[s]://HOST[:PORT][/PATH]")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{url!r} has a port that is not 1 to 65535")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def content_security_policy(ws_url: object) -> str:
    """The policy for every response: the bundle, and connections to itself and `ws_url`
    (none to the broker if it is not a URL a policy can name: the page then says it cannot
    connect, rather than connect anywhere)."""
    connect = "'self'"
    if isinstance(ws_url, str):
        with contextlib.suppress(ValueError):
            connect += " " + ws_source(ws_url)
    directives = {**_CSP, "connect-src": connect}
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def resolve(root: Path, url_path: str) -> Path | None:
    """The file under `root` for a URL path, or None: no traversal, no hidden files, no
    symlinks out of the bundle."""
    path = unquote(url_path.split("?", 1)[0].split("#", 1)[0], errors="strict")
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    candidate = root.joinpath(*parts) if parts else root
    if candidate.is_dir():
        candidate = candidate / "index.html"
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root.resolve()) or not real.is_file():
        return None
    return real


class ConsoleServer:
    """Serves `dist` and GET /config.json (`config`, which may be replaced while running)."""

    def __init__(self, dist: Path, config: dict[str, Any], host: str = "127.0.0.1",
                 port: int = 8080) -> None:
        self.dist = Path(dist)
        self.config = config
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen. Raises OSError (errno EADDRINUSE) if the port is taken."""
        self._server = await asyncio.start_server(self._handle, self.host, self._port,
                                                  limit=MAX_HEADER)

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        from tether.hostport import format_hostport

        return f"http://{format_hostport(self.host, self.port)}/"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except (asyncio.LimitOverrunError, ValueError):
            with contextlib.suppress(ConnectionError):
                await self._send(writer, 431, b"request headers too large\n", "text/plain", False)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            await self._send(writer, 400, b"bad request\n", "text/plain", False)
            return False
        method, target, version = words
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers or "transfer-encoding" in headers:
            await self._send(writer, 400, b"no request bodies here\n", "text/plain", False)
            return False
        conn_header = headers.get("connection", "").lower()
        keep = (version == "HTTP/1.1" and conn_header != "close") or conn_header == "keep-alive"
        if method not in ("GET", "HEAD"):
            await self._send(writer, 405, b"only GET and HEAD\n", "text/plain", keep,
                             extra={"Allow": "GET, HEAD"})
            return keep
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        if path == "/config.json":
            await self._send(writer, 200, dumps(self.config), "application/json", keep,
                             head_only=head_only, cache="no-store")
            return keep
        try:
            file = resolve(self.dist, target)
        except UnicodeDecodeError:
            file = None
        if file is None:
            await self._send(writer, 404, b"not found\n", "text/plain", keep, head_only=head_only)
            return keep
        body = file.read_bytes()
        ctype = CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
        await self._send(writer, 200, body, ctype, keep, head_only=head_only)
        return keep

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    keep: bool, *, head_only: bool = False, cache: str = "no-cache",
                    extra: Mapping[str, str] | None = None) -> None:
        headers = {"Date": formatdate(usegmt=True), "Content-Type": ctype,
                   "Content-Length": str(len(body)), "Cache-Control": cache,
                   "Connection": "keep-alive" if keep else "close", **_HEADERS,
                   "Content-Security-Policy": content_security_policy(self.config.get("ws_url")),
                   **(extra or {})}
        text = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(text.encode("latin-1") + (b"" if head_only else body))
        await writer.drain()


def listen_error(what: str, host: str, port: int, exc: OSError, hint: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{what} cannot listen on {host}:{port}: the port is already in use. {hint}"
    return f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}). {hint}"


class ConsoleError(TetherError):
    """The console cannot be served (its bundle is missing)."""


def check_dist(dist: Path) -> None:
    if not (dist / "index.html").is_file():
        raise ConsoleError(f"the console bundle is missing ({dist / 'index.html'}); build it with "
                        "`npm ci && node build.mjs` in client/web, or pass --dist DIR")
