"""A small asyncio HTTP/1.1 server for the command and monitor ports.

Just what the node's JSON endpoints need, with the limits a public port needs: headers and body
read under deadlines, the body size checked from ``Content-Length`` before a byte of it is read
(413), keep-alive, and an authorization check on every request (403 for a denied peer, then the
connection is closed). Every error body is JSON with an ``error`` field. Handler exceptions
become a 500 with a JSON body and are logged; they never reach the peer as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("tsconsensus.http")

T = TypeVar("T")

MAX_HEADER_BYTES = 16 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Response:
    status: int
    body: Any = None
    """A JSON value, or ``bytes``/``str`` sent as ``content_type``."""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        if isinstance(self.body, bytes):
            payload = self.body
        elif isinstance(self.body, str) and self.content_type != "application/json":
            payload = self.body.encode()
        else:
            payload = json.dumps(self.body, separators=(",", ":")).encode()
        head = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(payload)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        head.extend(f"{k}: {v}" for k, v in self.headers.items())
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def error(status: int, message: str, **extra: Any) -> Response:
    """A JSON error response ``{"error": message, ...extra}``."""
    return Response(status, {"error": message, **extra})


Handler = Callable[[Request], Awaitable[Response]]
Authorize = Callable[[str, int], Awaitable[bool]]


class HttpServer:
    """Serves ``routes`` (``(method, path) -> handler``) on ``host:port``.

    ``authorize(ip, port)`` is awaited for every request; ``None`` would allow everyone and is
    therefore not accepted. Runs on the event loop that calls :meth:`start`.
    """

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        routes: dict[tuple[str, str], Handler],
        authorize: Authorize,
        max_body_bytes: int,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._routes = routes
        self._paths = {path for _, path in routes}
        self._authorize = authorize
        self._max_body = max_body_bytes
        self._read_timeout = read_timeout_s
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEADER_BYTES, backlog=256
        )
        log.info("%s port listening on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peername = writer.get_extra_info("peername") or ("", 0)
        peer = (str(peername[0]), int(peername[1]))
        try:
            keep_alive = True
            while keep_alive:
                response, keep_alive, request = await self._one_exchange(reader, peer)
                if response is None:
                    break
                writer.write(response.encode(keep_alive))
                await writer.drain()
                if request is not None:
                    log.debug(
                        "%s %s %s -> %d", peer[0], request.method, request.path, response.status
                    )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass

    async def _one_exchange(
        self, reader: asyncio.StreamReader, peer: tuple[str, int]
    ) -> tuple[Response | None, bool, Request | None]:
        """Read one request and produce its response; ``None`` means close silently."""
        try:
            head = await _within(self._read_timeout, reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:
            return None, False, None
        except asyncio.LimitOverrunError:
            return error(400, f"request headers exceed {MAX_HEADER_BYTES} bytes"), False, None
        except asyncio.TimeoutError:
            return None, False, None
        try:
            method, target, headers = _parse_head(head)
        except ValueError as exc:
            return error(400, str(exc)), False, None
        keep_alive = headers.get("connection", "").lower() != "close"
        if not await self._authorize(*peer):
            return (
                error(403, f"peer {peer[0]} is not authorized: it lacks the cluster tag"),
                False,
                None,
            )
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return error(411, "chunked bodies are not accepted; send Content-Length"), False, None
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            return error(400, "invalid Content-Length"), False, None
        if length > self._max_body:
            return (
                error(413, f"body of {length} bytes exceeds the limit of {self._max_body}"),
                False,
                None,
            )
        try:
            body = await _within(self._read_timeout, reader.readexactly(length))
        except asyncio.TimeoutError:
            return error(408, "timed out reading the request body"), False, None
        url = urlsplit(target)
        request = Request(method, url.path, parse_qs(url.query), headers, body, peer)
        handler = self._routes.get((method, url.path))
        if handler is None:
            if url.path in self._paths:
                return error(405, f"method {method} not allowed on {url.path}"), keep_alive, request
            return error(404, f"no such endpoint: {url.path}"), keep_alive, request
        try:
            return await handler(request), keep_alive, request
        except Exception:
            log.exception("%s handler for %s %s failed", self.name, method, url.path)
            return error(500, "internal error (see the node's log)"), keep_alive, request


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``await awaitable`` or raise :class:`asyncio.TimeoutError` after ``seconds``.

    On Python 3.11+ this is ``asyncio.timeout``, which, unlike ``asyncio.wait_for``, does not
    start a task per call (two per request here).
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise ValueError("undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"malformed request line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers
