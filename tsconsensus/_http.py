"""A small asyncio HTTP/1.1 server for the command and monitor ports.

Just what the node's JSON endpoints need, with the limits a port open to a network needs:
- deny by default, decided at accept: a connection over the caps (``max_connections`` in all,
  ``max_connections_per_source`` from one address) is answered 503 and closed at once, and a
  peer the ``authorize`` callable refuses gets 403 before a byte it sent is parsed;
  authorization is asked again for a request on a connection last checked over
  :data:`REAUTHORIZE_EVERY_S` ago, so a peer that loses its tag is cut off within a second;
- requests parsed by httptools (llhttp) under the rules of :mod:`tsconsensus._http_request`
  (head and body deadlines, 413 from ``Content-Length`` before the body is read, ambiguous
  framing refused, keep-alive for HTTP/1.1 only);
- the accept loop never spins: when descriptors run out (EMFILE) it backs off and logs once per
  :data:`LOG_EVERY_S`, not once per attempt.
Every error body is JSON with an ``error`` field. Handler exceptions become a 500 with a JSON
body and are logged; they never reach the peer as a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._http_request import MAX_HEADER_BYTES, Head, Refusal, RequestReader
from .address import NodeAddress
from .safejson import dumps_compact

log = logging.getLogger("tsconsensus.http")

__all__ = ["MAX_HEADER_BYTES", "HttpServer", "Request", "Response", "error"]

REAUTHORIZE_EVERY_S = 1.0
LOG_EVERY_S = 10.0
_ACCEPT_BACKOFF_S = (0.01, 1.0)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_LINGER_S = 1.0
_LINGER_BYTES = 64 * 1024
_MAX_LINGERING = 64
"""Refusals over the caps that may wait for the peer to read their 503 (beyond: plain close)."""
_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
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
            payload = self.body.encode("utf-8", "backslashreplace")
        else:
            payload = dumps_compact(self.body).encode()
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


class _Throttle:
    """Says when to log a repeated event: at most once per ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self.held = 0

    def due(self, now: float) -> bool:
        if now < self._next:
            self.held += 1
            return False
        self._next = now + self._interval
        return True

    def take_held(self) -> int:
        held, self.held = self.held, 0
        return held


class HttpServer:
    """Serves ``routes`` (``(method, path) -> handler``) on ``host:port``.

    ``authorize(ip, port)`` decides every connection at accept (``None`` would allow everyone
    and is therefore not accepted). ``resolve_peer(ip, port)``, if given, names an authorized
    connection's peer for the routes (in userspace mode: its tailnet address, not 127.0.0.1).
    Runs on the event loop that calls :meth:`start`.
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
        max_connections: int = 512,
        max_connections_per_source: int = 64,
        read_timeout_s: float = 10.0,
        body_limits: dict[str, int] | None = None,
        resolve_peer: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None,
    ) -> None:
        self.name = name
        self._resolve_peer = resolve_peer
        self._body_limits = dict(body_limits or {})
        """Paths whose bodies may be larger (or smaller) than ``max_body_bytes``."""
        self.address = NodeAddress(host, port)
        self._routes = routes
        self._paths = {path for _, path in routes}
        self._authorize = authorize
        self._max_body = max_body_bytes
        self._max_connections = max_connections
        self._max_per_source = max_connections_per_source
        self._read_timeout = read_timeout_s
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._per_source: dict[str, int] = {}
        self._open = 0
        self._lingering = 0
        self._accept_errors = _Throttle(LOG_EVERY_S)
        self._over_cap = _Throttle(LOG_EVERY_S)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (refused ones never count)."""
        return self._open

    async def start(self) -> None:
        """Listen; raises ``OSError`` if the address cannot be bound."""
        listener = socket.create_server(
            (self.host, self.port), family=self.address.family, backlog=256
        )
        listener.setblocking(False)
        self._start_accepting(listener)
        log.info("%s port listening on %s", self.name, self.address)

    def _start_accepting(self, listener: socket.socket) -> None:
        self._listener = listener
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def stop(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    # -- accepting --------------------------------------------------------------------------

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        listener = self._listener
        backoff = _ACCEPT_BACKOFF_S[0]
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of descriptors the pending connection stays in the backlog and the
                # listener stays readable: retrying at once would spin. Back off instead.
                if self._accept_errors.due(loop.time()):
                    exhausted = exc.errno in _OUT_OF_RESOURCES
                    held = self._accept_errors.take_held()
                    log.warning(
                        "%s port: %s (%s); backing off%s",
                        self.name,
                        "out of file descriptors or memory" if exhausted else "accept failed",
                        exc.strerror or exc,
                        f" ({held} more failures since the last report)" if held else "",
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _ACCEPT_BACKOFF_S[1])
                continue
            backoff = _ACCEPT_BACKOFF_S[0]
            self._admit(sock, self._peer_of(addr))

    def _peer_of(self, addr: Any) -> tuple[str, int]:
        """(ip, port) of an accepted connection's source (a unix listener overrides this)."""
        return str(addr[0]), int(addr[1])

    def _admit(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        ip = peer[0]
        from_source = self._per_source.get(ip, 0)
        if from_source >= self._max_per_source or self.open_connections >= self._max_connections:
            why = (
                f"too many connections from {ip} (limit {self._max_per_source})"
                if from_source >= self._max_per_source
                else f"too many connections (limit {self._max_connections})"
            )
            if self._over_cap.due(asyncio.get_running_loop().time()):
                held = self._over_cap.take_held()
                log.warning(
                    "%s port: refusing connections: %s%s",
                    self.name,
                    why,
                    f" ({held} more refused since the last report)" if held else "",
                )
            payload = error(503, why).encode(keep_alive=False)
            if self._lingering >= _MAX_LINGERING:
                _send_and_close(sock, payload)  # under a flood: no cost, no promise
                return
            self._lingering += 1
            self._track(self._refuse_over_cap(sock, payload))
            return
        self._per_source[ip] = from_source + 1
        self._open += 1
        self._track(self._serve(sock, peer))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _refuse_over_cap(self, sock: socket.socket, payload: bytes) -> None:
        try:
            await _refuse_unread(sock, payload)
        finally:
            self._lingering -= 1
            sock.close()

    def _release(self, ip: str) -> None:
        self._open -= 1
        left = self._per_source.get(ip, 1) - 1
        if left > 0:
            self._per_source[ip] = left
        else:
            self._per_source.pop(ip, None)

    async def _allowed(self, peer: tuple[str, int]) -> bool:
        try:
            return await self._authorize(*peer)
        except Exception:  # a broken check must not open the door
            log.exception("%s port: authorizing %s failed; denying", self.name, peer[0])
            return False

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            if not await self._allowed(peer):
                await _refuse_unread(sock, _denied(peer).encode(keep_alive=False))
                return
            reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
            named = peer if self._resolve_peer is None else await self._resolve_peer(*peer)
            await self._exchanges(reader, writer, named)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self._release(peer[0])
            if writer is None:
                sock.close()
            else:
                writer.close()
                try:
                    await writer.wait_closed()
                except (ConnectionError, OSError, asyncio.CancelledError):
                    pass

    async def _exchanges(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tuple[str, int]
    ) -> None:
        requests = RequestReader(
            reader,
            max_body=self._max_body,
            timeout_s=self._read_timeout,
            body_limits=self._body_limits,
        )
        try:
            await self._serve_requests(requests, writer, peer)
        finally:
            requests.close()

    async def _serve_requests(
        self, requests: RequestReader, writer: asyncio.StreamWriter, peer: tuple[str, int]
    ) -> None:
        loop = asyncio.get_running_loop()
        checked_at = loop.time()
        while True:
            head = await requests.read_head()
            if head is None:
                return
            if isinstance(head, Refusal):
                await _send(writer, error(head.status, head.message), keep_alive=False)
                return
            if loop.time() - checked_at > REAUTHORIZE_EVERY_S:
                if not await self._allowed(peer):
                    await _send(writer, _denied(peer), keep_alive=False)
                    return
                checked_at = loop.time()
            body = await requests.read_body(head, writer)
            if body is None:
                return
            if isinstance(body, Refusal):
                await _send(writer, error(body.status, body.message), keep_alive=False)
                return
            response = await self._dispatch(head, body, peer)
            await _send(writer, response, keep_alive=head.keep_alive)
            if not head.keep_alive:
                return

    async def _dispatch(self, head: Head, body: bytes, peer: tuple[str, int]) -> Response:
        url = urlsplit(head.target)
        request = Request(head.method, url.path, parse_qs(url.query), head.headers, body, peer)
        handler = self._routes.get((head.method, url.path))
        if handler is None:
            if url.path in self._paths:
                response = error(405, f"method {head.method} not allowed on {url.path}")
            else:
                response = error(404, f"no such endpoint: {url.path}")
        else:
            try:
                response = await handler(request)
            except Exception:
                log.exception("%s handler for %s %s failed", self.name, head.method, url.path)
                response = error(500, "internal error (see the node's log)")
        log.debug("%s %s %s -> %d", peer[0], head.method, url.path, response.status)
        return response


def _denied(peer: tuple[str, int]) -> Response:
    return error(403, f"peer {peer[0]} is not authorized: it lacks the cluster tag")


async def _send(writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
    writer.write(response.encode(keep_alive))
    await writer.drain()


def _send_and_close(sock: socket.socket, payload: bytes) -> None:
    """Best effort, never blocks: for refusals that must cost as little as possible."""
    try:
        sock.send(payload)
    except OSError:
        pass
    finally:
        sock.close()


async def _refuse_unread(sock: socket.socket, payload: bytes) -> None:
    """Answer without parsing anything the peer sent, then close without a reset.

    Closing a socket with unread input sends RST, which can destroy the answer before the
    peer reads it; so the input is read and thrown away (at most ``_LINGER_BYTES``, for at
    most ``_LINGER_S``) after our side is shut down.
    """
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, payload), _LINGER_S)
        sock.shutdown(socket.SHUT_WR)
        deadline = loop.time() + _LINGER_S
        drained = 0
        while drained < _LINGER_BYTES:
            chunk = await asyncio.wait_for(
                loop.sock_recv(sock, 16 * 1024), max(0.0, deadline - loop.time())
            )
            if not chunk:
                break
            drained += len(chunk)
    except (OSError, asyncio.TimeoutError):
        pass
