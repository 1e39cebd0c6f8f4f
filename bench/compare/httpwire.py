"""HTTP/1.1 on raw asyncio sockets: keep-alive requests with little client-side cost.

The load generator and the orchestrator's own requests (failover probes, bulk loads) use it,
so every system is driven by the same client code.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Where a client connects, and from which local address (tsconsensus authorizes by it)."""

    host: str
    port: int
    source: str


class HttpError(Exception):
    """A response that could not be read (closed connection, malformed head)."""


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await _trailers(reader)
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _trailers(reader: asyncio.StreamReader) -> None:
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length or chunked framing)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpError(f"no response head: {exc}") from None
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise HttpError(f"bad status line {lines[0][:60]!r}") from None
    length = 0
    chunked = False
    for line in lines[1:]:
        name = line[:18].lower()
        if name.startswith(b"content-length:"):
            length = int(line[15:])
        elif name.startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True  # etcd's gateway, for larger answers
    try:
        body = await (_read_chunked(reader) if chunked else reader.readexactly(length))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise HttpError(f"short body: {exc}") from None
    return status, body


class Connection:
    """One keep-alive connection that sends one request at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.target.host, self.target.port, local_addr=(self.target.source, 0)
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request_bytes(self.target.host, path, body))
        return await read_response(self._reader)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def post_once(target: Target, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    """One request on a fresh connection, within ``timeout`` seconds (raises on failure)."""
    connection = Connection(target)
    try:
        return await asyncio.wait_for(connection.post(path, body), timeout)
    finally:
        await connection.close()
