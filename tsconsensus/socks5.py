"""A minimal SOCKS5 client (RFC 1928: no authentication, ``CONNECT`` only).

tailscaled in userspace-networking mode can serve a SOCKS5 proxy (``--socks5-server=ADDR``)
through which local processes reach tailnet peers; with ``tailnet.socks5`` set, the LocalAPI
backend dials through it instead of the LocalAPI ``dial`` upgrade. Both ``connect`` functions
raise :class:`OSError` (``ConnectionRefusedError`` when the proxy refuses the request).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from .address import NodeAddress

_REPLIES = {
    1: "general failure",
    2: "not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _request(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port)
    atyp = b"\x01" if ip.version == 4 else b"\x04"
    return b"\x05\x01\x00" + atyp + ip.packed + struct.pack("!H", port)


def _check_greeting(answer: bytes, proxy: str) -> None:
    if answer != b"\x05\x00":
        raise ConnectionRefusedError(f"SOCKS5 proxy {proxy} refused (greeting {answer!r})")


def _reply_rest(head: bytes, proxy: str, host: str, port: int) -> int:
    """Check a reply's first four bytes; how many bytes of address and port follow."""
    if len(head) < 4 or head[0] != 5:
        raise ConnectionRefusedError(f"SOCKS5 proxy {proxy} answered oddly ({head!r})")
    if head[1] != 0:
        why = _REPLIES.get(head[1], f"error {head[1]}")
        raise ConnectionRefusedError(f"SOCKS5 proxy {proxy} could not reach {host}:{port}: {why}")
    return {1: 4, 4: 16}.get(head[3], -1) + 2


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from blocking ``sock`` (within its timeout). Raises
    :class:`ConnectionResetError` if the other side closes first, :class:`OSError` otherwise.

    Public within the package so the testing emulator's SOCKS5 server reads with it too.
    """
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError(
                f"SOCKS5 peer closed the connection ({len(data)} of {n} bytes read)"
            )
        data += chunk
    return data


def connect(proxy: str, host: str, port: int, timeout: float) -> socket.socket:
    """A stream to ``host:port`` through the SOCKS5 proxy at ``proxy`` (``host:port``)."""
    where = NodeAddress.parse(proxy)
    sock = socket.create_connection((where.host, where.port), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x00")
        _check_greeting(recv_exactly(sock, 2), proxy)
        sock.sendall(_request(host, port))
        rest = _reply_rest(recv_exactly(sock, 4), proxy, host, port)
        if rest < 2:  # a domain name: its length comes first
            rest = recv_exactly(sock, 1)[0] + 2
        recv_exactly(sock, rest)
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise


async def connect_async(
    proxy: str, host: str, port: int, *, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """:func:`connect` for asyncio (the caller bounds it with its timeout)."""
    where = NodeAddress.parse(proxy)
    reader, writer = await asyncio.open_connection(where.host, where.port, limit=limit)
    try:
        writer.write(b"\x05\x01\x00")
        _check_greeting(await reader.readexactly(2), proxy)
        writer.write(_request(host, port))
        rest = _reply_rest(await reader.readexactly(4), proxy, host, port)
        if rest < 2:
            rest = (await reader.readexactly(1))[0] + 2
        await reader.readexactly(rest)
        return reader, writer
    except asyncio.IncompleteReadError as exc:
        writer.close()
        raise ConnectionResetError("SOCKS5 proxy closed the connection") from exc
    except BaseException:
        writer.close()
        raise
