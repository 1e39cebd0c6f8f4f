"""The receiving half of :mod:`.transport`, and the state both halves share.

Order of checks on an inbound connection, none skipped:

1. ``authorize(ip, port)`` at accept: until it says yes the socket is registered with nothing
   and not a byte is read from it (the kernel holds them); no means it is closed at once;
2. per frame: the header (magic, version, kind, flags, sender, and the declared length against
   ``max_frame_bytes``) before a byte of the body is buffered; ``still_allowed(ip)``; then the
   body, against a deadline; then the MAC (:func:`hmac.compare_digest`); any failure so far
   closes the connection;
3. then cluster id and receiver id (a mismatch drops the frame only), and for RAFT frames the
   decoded message's own sender and receiver.

Everything here runs on the transport's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from .codec import decode_message
from .frames import (
    HEADER_BYTES,
    PREFIX_BYTES,
    FrameError,
    FrameKind,
    FrameMac,
    body_deadline_s,
    encode_hello,
    new_nonce,
    parse_header,
)
from .messages import Message

log = logging.getLogger("tsconsensus.transport")

READ_LIMIT = 1 << 20
NEVER = float("inf")
_LOG_INTERVAL_S = 60.0
# Connections from one source accepted but not yet authenticated by a first valid frame. Per
# source, so that someone on one member's machine (who has its address but not the key) cannot
# crowd out the other members' reconnections.
_MAX_PENDING_PER_SOURCE = 16

STAT_KEYS = (
    "frames_sent",
    "bytes_sent",
    "frames_received",
    "bytes_received",
    "dropped_queue_full",
    "dropped_unreachable",
    "dropped_unroutable",
    "dropped_too_large",
    "dropped_bad_mac",
    "dropped_malformed",
    "dropped_wrong_cluster",
    "dropped_no_cluster_id",
    "dropped_wrong_receiver",
    "denied",
    "revoked",
    "timeouts",
    "connections_accepted",
    "connections_dialled",
    "dial_failures",
    "peers_down",
    "write_failures",
    "callback_errors",
    "errors",
)


class LogLimiter:
    """Lets one log line per key through per interval, and says how many it held back."""

    def __init__(self, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._interval = interval_s
        self._seen: dict[object, tuple[float, int]] = {}

    def check(self, key: object) -> int | None:
        """None: stay quiet. Otherwise log now; the value is how many were suppressed."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if len(self._seen) > 1024:  # hostile sources must not grow this without bound
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._interval}
        self._seen[key] = (now, 0)
        return 0 if seen is None else seen[1]


def more(suppressed: int) -> str:
    return f" ({suppressed} more like it suppressed)" if suppressed else ""


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(eq=False)
class Link:
    """What the sending and receiving halves share. ``cluster_id`` may change (a joining node
    learns it after starting)."""

    key: bytes
    member_id: int
    cluster_id: int
    still_allowed: Callable[[str], bool]
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))
    quiet: LogLimiter = field(default_factory=LogLimiter)

    def allowed(self, ip: str) -> bool:
        try:
            return self.still_allowed(ip) is True
        except Exception:  # deny by default, and say why
            log.exception("still_allowed(%r) raised; treating as not allowed", ip)
            return False

    def call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("transport callback %s raised", getattr(callback, "__name__", "?"))


class _Inbound:
    """One accepted connection: a bare socket, registered with nothing, until authorized."""

    __slots__ = (
        "deadline",
        "ip",
        "pending",
        "port",
        "reader",
        "sender",
        "sock",
        "task",
        "writer",
    )

    def __init__(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        self.sock: socket.socket | None = sock
        self.ip: str = address[0]
        self.port: int = address[1]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.sender = 0  # pinned by the first authenticated frame
        self.deadline = NEVER
        self.pending = False
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        elif self.sock is not None:
            self.sock.close()  # unread bytes in the kernel make this a reset


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
    ) -> None:
        self._link, self._stats = link, link.stats
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
        for conn in self._conns:
            conn.abort()
            if conn.task is not None:
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
            conn = _Inbound(sock, address)
            conn.task = loop.create_task(self._accepted(conn))
            self._conns.add(conn)

    async def _accepted(self, conn: _Inbound) -> None:
        peer_closed = False
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            pass  # close(): end quietly
        except (asyncio.IncompleteReadError, ConnectionError):
            peer_closed = True  # the peer went away, mid-frame or not: nothing to log
        except Exception:
            self._stats["errors"] += 1
            log.exception("inbound connection from %s:%d failed", conn.ip, conn.port)
        finally:
            conn.abort()
            self._conns.discard(conn)
            self._unpend(conn)
            if self._by_sender.get(conn.sender) is conn:
                del self._by_sender[conn.sender]
                if peer_closed and not self._closed:
                    # the member's current connection, ended by its side (not by a redial)
                    self._link.call(self._on_peer_closed, conn.sender)

    async def _serve(self, conn: _Inbound) -> None:
        if self._closed:
            return
        if self._pending.get(conn.ip, 0) >= _MAX_PENDING_PER_SOURCE:
            self._deny(conn, "too many connections awaiting their first frame")
            return
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
            return
        sock, conn.sock = conn.sock, None  # from here on the stream transport owns it
        if self._closed or sock is None or sock.fileno() == -1:
            return  # closed while authorize ran (stop, recheck)
        self._stats["connections_accepted"] += 1
        conn.reader, conn.writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT)
        nonce = new_nonce()
        conn.writer.write(encode_hello(nonce))
        conn.deadline = asyncio.get_running_loop().time() + self._frame_deadline_s
        await self._read_frames(conn, FrameMac(self._link.key, nonce))

    async def _read_frames(self, conn: _Inbound, mac: FrameMac) -> None:
        """Read, check and deliver frames until the connection must close (return) or the
        peer goes away (IncompleteReadError / ConnectionError)."""
        assert conn.reader is not None
        read, ip, stats, link = conn.reader.readexactly, conn.ip, self._stats, self._link
        loop = asyncio.get_running_loop()
        max_frame, min_deadline = self._max_frame_bytes, self._frame_deadline_s
        while True:
            prefix = await read(PREFIX_BYTES)
            try:
                header = parse_header(prefix, max_frame)
            except FrameError as exc:
                too_large = exc.reason == "too-large"
                stats["dropped_too_large" if too_large else "dropped_malformed"] += 1
                self._close(conn, str(exc), exc.reason)
                return
            if not link.allowed(ip):
                stats["revoked"] += 1
                self._close(conn, "no longer allowed")
                return
            length = header.length
            if length:
                conn.deadline = loop.time() + body_deadline_s(length, min_deadline)
                body = await read(length)
            else:
                body = b""
            conn.deadline = NEVER
            if not mac.verify(prefix[:HEADER_BYTES], prefix[HEADER_BYTES:], body):
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
            stats["bytes_received"] += length + PREFIX_BYTES
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
