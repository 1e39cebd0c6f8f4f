"""How Raft frames travel, as pure pieces the pysyncobj adapter (:mod:`._raft`) installs.

Nothing here imports pysyncobj: these are stand-ins for modules pysyncobj uses (socket, zlib,
gzip), the frame authenticator it calls as its "encryptor", a log filter, and address helpers.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import ipaddress
import logging
import socket
import struct
import threading
import zlib
from typing import Any

from .errors import TsconsensusError


class ResentEntriesFilter(logging.Filter):
    """Drops pysyncobj's "truncating already-applied log entries" alarm.

    pysyncobj rewinds a follower's next index whenever an older acknowledgement arrives, so a
    busy leader re-sends entries the follower already holds; the follower then truncates and
    re-adds the same entries (same term, same content) and logs a CRITICAL "may have diverged".
    Applied entries are committed, and Raft never replaces committed entries with different
    ones, so what is being replaced is always identical: the alarm is noise here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("truncating already-applied log entries")


class _SourceAddress(threading.local):
    host: str | None = None


source = _SourceAddress()
"""The address the Raft thread of this process is dialling from, while it dials."""


class SourceBindingSocketModule:
    """Stands in for the ``socket`` module inside ``pysyncobj.tcp_connection``.

    pysyncobj creates its outgoing sockets itself and never binds them. While a Raft thread of
    ours dials (see :meth:`_AuthorizingTransport._connectIfNecessarySingle`) it sets its own
    address in a thread-local; sockets made then are bound to it. Any other use falls through
    to the real module unchanged.
    """

    def __getattr__(self, name: str) -> Any:
        value = getattr(socket, name)
        setattr(self, name, value)  # looked up on every frame: resolve each name once
        return value

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        sock = socket.socket(family, type)
        host = source.host
        if host is not None and family_of(host) == family:
            sock.bind((host, 0))
        return sock


def family_of(host: str) -> int:
    return socket.AF_INET if ipaddress.ip_address(host).version == 4 else socket.AF_INET6


class FrameCompression:
    """Stands in for the ``zlib`` module inside ``pysyncobj.tcp_connection``.

    pysyncobj deflates every frame at level 3; for the small frames Raft mostly sends, setting
    up deflate costs more than the rest of the frame's handling. Frames under 64 KiB are sent
    as a *stored* (uncompressed) zlib stream, which any zlib reader accepts, so peers need no
    change; larger ones (snapshot chunks) are still compressed.
    """

    _STORED_LIMIT = 65535

    def __getattr__(self, name: str) -> Any:
        value = getattr(zlib, name)
        setattr(self, name, value)
        return value

    def compress(self, data: bytes, level: int = -1) -> bytes:
        if len(data) > self._STORED_LIMIT:
            return zlib.compress(data, 1)
        # zlib header (deflate, 32K window, no dictionary), one final stored block, adler32.
        size = len(data)
        return b"".join(
            (
                b"\x78\x01",
                struct.pack("<BHH", 1, size, size ^ 0xFFFF),
                data,
                struct.pack(">I", zlib.adler32(data)),
            )
        )

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return zlib.decompress(data)


class FastGzip:
    """Stands in for ``gzip`` inside ``pysyncobj.serializer``: snapshots are written at level 1.

    pysyncobj writes snapshots on the Raft thread (we do not let it fork a threaded process);
    gzip's default level 9 would stall the cluster for a large state, level 1 is several times
    faster for a slightly larger file.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(gzip, name)

    @staticmethod
    def GzipFile(*args: Any, **kwargs: Any) -> gzip.GzipFile:
        kwargs.setdefault("compresslevel", 1)
        return gzip.GzipFile(*args, **kwargs)


class FrameAuthenticator:
    """Authenticates every Raft frame with a keyed BLAKE2b MAC under the cluster password.

    It takes the place of pysyncobj's Fernet "encryptor" (same three methods). The tailnet
    already encrypts every packet (WireGuard), so what the cluster needs from its password is
    authentication: a frame that does not carry a valid tag is dropped, with its connection,
    before it is unpickled. Replays across connections are stopped by pysyncobj's per-connection
    random keys, which travel inside the authenticated payload.
    """

    _HEADER = struct.Struct(">BQ")
    _VERSION = 1
    _MAC_LEN = 32

    def __init__(self, password: str) -> None:
        self._key = hashlib.sha256(b"tsconsensus-raft-frame\x00" + password.encode()).digest()

    def _mac(self, header: bytes, data: bytes) -> bytes:
        # Keyed BLAKE2b is a MAC by design (RFC 7693) and, unlike OpenSSL's HMAC here, costs
        # well under two microseconds for a small frame.
        mac = hashlib.blake2b(header, key=self._key, digest_size=self._MAC_LEN)
        mac.update(data)
        return mac.digest()

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        header = self._HEADER.pack(self._VERSION, max(0, int(current_time)))
        return header + self._mac(header, data) + data

    def extract_timestamp(self, token: bytes) -> int:
        version, timestamp = self._HEADER.unpack_from(token)
        if version != self._VERSION:
            raise ValueError("unknown frame version")
        return int(timestamp)

    def decrypt(self, token: bytes) -> bytes:
        split = self._HEADER.size
        header, mac, data = (
            token[:split],
            token[split : split + self._MAC_LEN],
            token[split + self._MAC_LEN :],
        )
        if len(mac) != self._MAC_LEN or not hmac.compare_digest(mac, self._mac(header, data)):
            raise ValueError("frame authentication failed")
        return data


def split_node_id(node_id: str) -> tuple[str, int]:
    """``"100.64.0.1:6270"`` -> ``("100.64.0.1", 6270)`` (IPv6 hosts may be bracketed)."""
    host, _, port = node_id.rpartition(":")
    return host.strip("[]"), int(port)


def check_bindable(host: str, port: int) -> None:
    """Raise :class:`TsconsensusError` if ``host:port`` cannot be bound (in use, not local)."""
    with socket.socket(family_of(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TsconsensusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
