"""The receiving half of :mod:`.transport`.

Order of checks on an inbound connection, none skipped:

1. ``authorize(ip, port)`` at accept: until it says yes the socket is registered with nothing
   and not a byte is read from it (the kernel holds them); no means it is closed at once;
2. per frame: the header (magic, version, kind, flags, sender, and the declared length against
   ``max_frame_bytes``) before a byte of the body is buffered; ``still_allowed(ip)``; then the
   body, against a deadline; then the MAC (:func:`hmac.compare_digest`); any failure so far
   closes the connection. Only an incomplete frame's bytes are ever kept;
3. then cluster id and receiver id (a mismatch drops the frame only), and for RAFT frames the
   decoded message's own sender and receiver.

Everything here runs on the transport's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..errors import DecodeError
from ._link import NEVER, Link, describe, more
from .codec import decode_message
from .frames import (
    HEADER_BYTES,
    PREFIX_BYTES,
    FrameError,
    FrameHeader,
    FrameKind,
    FrameMac,
    body_deadline_s,
    encode_hello,
    new_nonce,
    parse_header,
)
from .messages import Message

log = logging.getLogger("tsconsensus.transport")

# Connections from one source accepted but not yet authenticated by a first valid frame. Per
# source, so that someone on one member's machine (who has its address but not the key) cannot
# crowd out the other members' reconnections.
_MAX_PENDING_PER_SOURCE = 16
_READ_BUFFER_BYTES = 64 * 1024
"""What one read may take in: a few frames, or a large body's next part."""


class _Inbound(asyncio.BufferedProtocol):
    """One accepted connection: a bare socket, registered with nothing, until authorized; then
    the protocol of its transport, cutting bytes into frames as they arrive. There is no reader
    task: a frame is checked and delivered in the loop turn that read its last byte.

    The transport reads into this connection's own buffer (``rbuf``, ``fill`` bytes of it
    unconsumed), not into a new object per read: asyncio's plain protocols get a fresh
    256 KiB bytes object for every read, which glibc may serve with mmap, mremap and munmap
    (three system calls and a page fault per read). The buffer is :data:`_READ_BUFFER_BYTES`,
    larger only for a frame whose header (and so its length, against the limit) has already
    been checked, and back to that size after it. Bytes are kept only while a frame is
    incomplete: a partial prefix, or such a frame's body.
    """

    __slots__ = (
        "closed",
        "deadline",
        "fill",
        "finished",
        "header",
        "hello",
        "ip",
        "mac",
        "need",
        "pending",
        "port",
        "prefix",
        "rbuf",
        "receiver",
        "sender",
        "sock",
        "task",
        "transport",
    )

    def __init__(self, receiver: Receiver, sock: socket.socket, address: tuple[Any, ...]) -> None:
        self.receiver = receiver
        self.sock: socket.socket | None = sock
        self.ip: str = address[0]
        self.port: int = address[1]
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.sender = 0  # pinned by the first authenticated frame
        self.deadline = NEVER
        self.pending = False
        self.closed = False  # aborted from this side
        self.finished = False
        self.hello = b""
        self.mac: FrameMac | None = None
        self.rbuf = bytearray()  # allocated once authorized (connection_made)
        self.fill = 0
        self.need = PREFIX_BYTES  # bytes wanted before the next step: a prefix, or a body
        self.prefix = b""
        self.header: FrameHeader | None = None  # checked; its body not yet complete

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        elif self.sock is not None:
            self.sock.close()  # unread bytes in the kernel make this a reset

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.rbuf = bytearray(_READ_BUFFER_BYTES)
        if self.closed:  # aborted while the transport was being made
            transport.abort()
        else:
            transport.write(self.hello)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.fill == len(self.rbuf):
            # a checked body from a peer not yet authenticated, growing with what arrives;
            # never empty, since what stays unconsumed is less than ``need``
            grown = bytearray(min(self.need, 2 * self.fill))
            grown[: self.fill] = self.rbuf
            self.rbuf = grown
        return memoryview(self.rbuf)[self.fill :]

    def buffer_updated(self, nbytes: int) -> None:
        fill = self.fill + nbytes
        if fill < self.need:
            self.fill = fill
            return
        receiver = self.receiver
        try:
            with receiver.batch:
                receiver._frames(self, fill)
        except Exception:
            receiver._failed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # Not aborted from this side: the peer closed or reset it, mid-frame or not.
        self.receiver._finish(self, peer_closed=not self.closed)


class Receiver:
    """The listener and every inbound connection. Runs on one loop; see the module docstring.

    ``authorize`` is awaited once per connection, bounded by ``authorize_timeout_s`` (timeout
    or exception: denied); ``on_message`` and ``on_driver_frame`` are called synchronously.
    """

    def __init__(
        self,
        link: Link,
        *,
        authorize: Callable[[str, int], Awaitable[bool]],
        on_message: Callable[[Message], None],
        on_driver_frame: Callable[[int, bytes], None],
        on_peer_closed: Callable[[int], None],
        max_frame_bytes: int,
        authorize_timeout_s: float,
        frame_deadline_s: float,
        batch: AbstractContextManager[object] | None = None,
    ) -> None:
        self._link, self._stats = link, link.stats
        # entered around each read's callbacks (Transport's ``batch``)
        self.batch: AbstractContextManager[object] = batch or nullcontext()
        self._authorize = authorize
        self._on_message, self._on_driver_frame = on_message, on_driver_frame
        self._on_peer_closed = on_peer_closed
        self._max_frame_bytes = max_frame_bytes
        self._authorize_timeout_s, self._frame_deadline_s = authorize_timeout_s, frame_deadline_s
        self._conns: set[_Inbound] = set()
        self._by_sender: dict[int, _Inbound] = {}
        self._pending: dict[str, int] = {}
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def listen(self, host: str, port: int) -> int:
        """Listen on ``host`` (an IP literal), ``port``; the bound port. Raises
        :class:`OSError` naming the address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self._listener = sock
        self._accept_task = asyncio.get_running_loop().create_task(self._accept(sock))
        return int(sock.getsockname()[1])

    def close(self) -> list[asyncio.Task[None]]:
        """Stop listening, abort every connection; the tasks to await (already cancelled)."""
        self._closed = True
        tasks = []
        if self._accept_task is not None:
            self._accept_task.cancel()
            tasks.append(self._accept_task)
        if self._listener is not None:
            self._listener.close()
        for conn in list(self._conns):
            conn.abort()
            if conn.task is not None and not conn.task.done():  # still being authorized
                conn.task.cancel()
                tasks.append(conn.task)
        return tasks

    def recheck(self) -> None:
        """Close every connection whose source no longer passes ``still_allowed``."""
        for conn in list(self._conns):
            if not self._link.allowed(conn.ip):
                self._stats["revoked"] += 1
                self._close(conn, "no longer allowed")

    def expire(self, now: float) -> None:
        """Abort connections whose frame (or first frame) is overdue: a slowloris peer."""
        for conn in list(self._conns):
            if conn.deadline < now:
                self._stats["timeouts"] += 1
                self._close(conn, "frame did not arrive in time")

    async def _accept(self, listener: socket.socket) -> None:
        # Accepting by hand, not through asyncio's servers: a socket that is not yet
        # authorized is registered with nothing, so nothing can read from it.
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the peer gave up before we got to it
            except OSError as exc:  # out of descriptors or buffers: do not spin on it
                suppressed = self._link.quiet.check(("accept", exc.errno))
                if suppressed is not None:
                    log.error("accepting transport connections failed: %s%s", exc, more(suppressed))
                await asyncio.sleep(0.1)
                continue
            conn = _Inbound(self, sock, address)
            conn.task = loop.create_task(self._accepted(conn))
            self._conns.add(conn)

    async def _accepted(self, conn: _Inbound) -> None:
        """Authorize, then hand the socket to a transport with ``conn`` as its protocol; from
        then on ``conn.connection_lost`` ends it. Otherwise it ends here."""
        try:
            connected = await self._admit(conn)
        except asyncio.CancelledError:
            connected = False  # close(): end quietly
        except Exception:
            connected = False
            self._failed(conn)
        if not connected:
            conn.abort()
            self._finish(conn, peer_closed=False)

    async def _admit(self, conn: _Inbound) -> bool:
        if self._closed:
            return False
        if self._pending.get(conn.ip, 0) >= _MAX_PENDING_PER_SOURCE:
            self._deny(conn, "too many connections awaiting their first frame")
            return False
        conn.pending = True
        self._pending[conn.ip] = self._pending.get(conn.ip, 0) + 1
        try:
            allowed = await asyncio.wait_for(
                self._authorize(conn.ip, conn.port), self._authorize_timeout_s
            )
        except asyncio.TimeoutError:
            allowed, why = False, "authorization timed out"
        except Exception as exc:
            allowed, why = False, f"authorization failed: {describe(exc)}"
        else:
            why = "not authorized"
        if allowed is not True:
            self._deny(conn, why)
            return False
        sock = conn.sock
        if self._closed or conn.closed or sock is None or sock.fileno() == -1:
            return False  # closed while authorize ran (stop, recheck)
        conn.sock = None  # from here on the transport owns it
        self._stats["connections_accepted"] += 1
        nonce = new_nonce()
        conn.hello, conn.mac = encode_hello(nonce), FrameMac(self._link.key, nonce)
        loop = asyncio.get_running_loop()
        conn.deadline = loop.time() + self._frame_deadline_s
        await loop.connect_accepted_socket(lambda: conn, sock)
        return True

    def _finish(self, conn: _Inbound, *, peer_closed: bool) -> None:
        if conn.finished:
            return
        conn.finished = True
        conn.rbuf, conn.fill = bytearray(), 0
        self._conns.discard(conn)
        self._unpend(conn)
        if self._by_sender.get(conn.sender) is conn:
            del self._by_sender[conn.sender]
            if peer_closed and not self._closed:
                # the member's current connection, ended by its side (not by a redial)
                self._link.call(self._on_peer_closed, conn.sender)

    def _failed(self, conn: _Inbound) -> None:
        """In an ``except`` block: count and log what went wrong, close the connection."""
        self._stats["errors"] += 1
        log.exception("inbound connection from %s:%d failed", conn.ip, conn.port)
        conn.abort()

    def _frames(self, conn: _Inbound, end: int) -> None:
        """Check and deliver the frames in ``conn.rbuf[:end]`` (at least ``conn.need`` bytes,
        following what was consumed before); move the incomplete rest to the buffer's start,
        into a buffer that can hold the rest of its frame. Stops at the first frame that
        closes the connection."""
        data = conn.rbuf
        view = memoryview(data)
        pos = 0
        header, prefix = conn.header, conn.prefix
        while True:
            if header is None:
                if end - pos < PREFIX_BYTES:
                    break
                prefix = bytes(view[pos : pos + PREFIX_BYTES])
                pos += PREFIX_BYTES
                header = self._check_header(conn, prefix)
                if header is None:
                    return
            length = header.length
            if end - pos < length:
                conn.deadline = asyncio.get_running_loop().time() + body_deadline_s(
                    length, self._frame_deadline_s
                )
                break
            body = bytes(view[pos : pos + length])  # the buffer is read into again
            pos += length
            conn.deadline = NEVER
            self._frame(conn, prefix, header, body)
            if conn.closed:
                return
            header = None
        conn.header, conn.prefix = header, prefix
        need = PREFIX_BYTES if header is None else header.length
        conn.need, rest = need, end - pos
        # Room for the whole body once the peer has shown the key (a frame with a valid MAC);
        # before that, the buffer grows with what arrives (get_buffer), not with what a
        # header declares: a peer without the key holds no more memory than it sends.
        size = max(need if conn.sender else rest + 1, _READ_BUFFER_BYTES)
        if size != len(data):  # a checked body larger than the buffer, or back after one
            conn.rbuf = bytearray(size)
            conn.rbuf[:rest] = view[pos:end]
        elif rest and pos:
            data[:rest] = data[pos:end]  # a copy first: the two ranges may overlap
        conn.fill = rest

    def _check_header(self, conn: _Inbound, prefix: bytes) -> FrameHeader | None:
        """The header, checked before a byte of its body is kept; None: connection closed."""
        stats = self._stats
        try:
            header = parse_header(prefix, self._max_frame_bytes)
        except FrameError as exc:
            too_large = exc.reason == "too-large"
            stats["dropped_too_large" if too_large else "dropped_malformed"] += 1
            self._close(conn, str(exc), exc.reason)
            return None
        if not self._link.allowed(conn.ip):
            stats["revoked"] += 1
            self._close(conn, "no longer allowed")
            return None
        return header

    def _frame(self, conn: _Inbound, prefix: bytes, header: FrameHeader, body: bytes) -> None:
        """One whole frame: its MAC, its sender, then where it is for."""
        stats, link = self._stats, self._link
        assert conn.mac is not None
        if not conn.mac.verify(prefix[:HEADER_BYTES], prefix[HEADER_BYTES:], body):
            stats["dropped_bad_mac"] += 1
            self._close(conn, "frame failed authentication (wrong key, or replayed)")
            return
        sender = header.sender
        if sender != conn.sender:
            if conn.sender:
                stats["dropped_malformed"] += 1
                self._close(conn, "sender changed within a connection")
                return
            self._authenticated(conn, sender)
        stats["bytes_received"] += header.length + PREFIX_BYTES
        if link.cluster_id == 0:
            stats["dropped_no_cluster_id"] += 1
        elif header.cluster_id != link.cluster_id:
            stats["dropped_wrong_cluster"] += 1
            self._note(conn, f"frame for cluster {header.cluster_id:016x}", "cluster")
        elif header.receiver != link.member_id:
            stats["dropped_wrong_receiver"] += 1
            self._note(conn, f"frame for member {header.receiver:016x}", "receiver")
        elif header.kind is FrameKind.RAFT:
            self._deliver_raft(conn, sender, body)
        else:
            stats["frames_received"] += 1
            link.call(self._on_driver_frame, sender, body)

    def _deliver_raft(self, conn: _Inbound, sender: int, body: bytes) -> None:
        try:
            msg = decode_message(body)
        except DecodeError as exc:
            self._stats["dropped_malformed"] += 1
            self._note(conn, f"undecodable message: {exc}", "decode")
            return
        if msg.frm != sender or msg.to != self._link.member_id:
            self._stats["dropped_malformed"] += 1
            self._note(conn, "message's sender or receiver differs from its frame's")
            return
        self._stats["frames_received"] += 1
        self._link.call(self._on_message, msg)

    def _authenticated(self, conn: _Inbound, sender: int) -> None:
        conn.sender = sender
        self._unpend(conn)
        older = self._by_sender.get(sender)
        if older is not None and older is not conn:
            older.abort()  # the peer redialled: its old connection is dead or about to be
        self._by_sender[sender] = conn

    def _unpend(self, conn: _Inbound) -> None:
        if conn.pending:
            conn.pending = False
            left = self._pending[conn.ip] - 1
            if left:
                self._pending[conn.ip] = left
            else:
                del self._pending[conn.ip]

    def _deny(self, conn: _Inbound, why: str) -> None:
        self._stats["denied"] += 1
        conn.abort()
        suppressed = self._link.quiet.check(("deny", conn.ip))
        if suppressed is not None:
            log.warning(
                "refused transport connection from %s:%d: %s%s",
                *(conn.ip, conn.port, why, more(suppressed)),
            )

    def _close(self, conn: _Inbound, why: str, category: str = "") -> None:
        conn.abort()
        suppressed = self._link.quiet.check(("close", conn.ip, category or why))
        if suppressed is not None:
            log.warning(
                "closed transport connection from %s:%d (member %016x): %s%s",
                *(conn.ip, conn.port, conn.sender, why, more(suppressed)),
            )

    def _note(self, conn: _Inbound, what: str, category: str = "") -> None:
        suppressed = self._link.quiet.check(("drop", conn.ip, category or what))
        if suppressed is not None:
            log.info(
                "dropped a frame from %s (member %016x): %s%s",
                *(conn.ip, conn.sender, what, more(suppressed)),
            )
