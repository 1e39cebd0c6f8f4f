"""asyncio TCP between members: authorized at accept, bounded, authenticated frames.

Each member listens on its own address only, and dials its peers from that same address (so a
peer can authorize it by source IP). Connections carry frames one way: a member dials a peer
for its messages to that peer, and accepts the peer's connection for the messages coming back.
The wire format, MAC and limits are in :mod:`.frames`; the receiving half, with the order in
which every inbound byte is checked, in :mod:`._receiver`; this module is the sending half and
the :class:`Transport` the driver uses.

Everything runs on the event loop that called :meth:`Transport.start`; no method is
thread-safe, and callbacks are called on that loop, synchronously.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from ._link import NEVER, Link, describe, more
from ._receiver import Receiver
from .codec import encode_message
from .frames import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HELLO_BYTES,
    MAGIC,
    PREFIX_BYTES,
    VERSION,
    FrameKind,
    FrameMac,
    decode_hello,
    derive_key,
)
from .messages import MAX_ID, Message

__all__ = ["Dial", "FrameKind", "Streams", "Transport"]

log = logging.getLogger("tsconsensus.transport")

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Dial = Callable[[str, int], Awaitable[Streams]]

READ_LIMIT = 1 << 20
"""The outbound connections' stream buffer (they only ever read the hello)."""
_DIRECT_WRITE_LIMIT = 256 * 1024
"""Below this many bytes in the socket's send buffer a frame is written at once."""
_BATCH_BYTES = 1 << 20  # one write per batch; bounded so one peer's backlog cannot hog the loop
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 1.0


class _Peer:
    """One member we send to: its queue, its writer task and its outbound connection."""

    __slots__ = (
        "deadline",
        "host",
        "mac",
        "member",
        "queue",
        "queued_bytes",
        "reader",
        "task",
        "wake",
        "writer",
    )

    def __init__(self, member: int) -> None:
        self.member = member
        self.queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.mac: FrameMac | None = None
        self.host = ""
        self.deadline = NEVER

    def connected(self) -> bool:
        # The acceptor never sends after its hello: EOF (or anything) there means it has gone.
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.transport.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = self.mac = None
        self.deadline = NEVER


class Transport:
    """Frames between this member and its peers over TCP; see the module docstring.

    All methods must be called on the event loop :meth:`start` ran on. ``authorize`` is awaited
    once per inbound connection, before anything is read from it (bounded by
    ``connect_timeout_s``; an exception or timeout denies); ``still_allowed`` is called per
    inbound frame, before each dial and by :meth:`recheck` (an exception counts as "no");
    ``on_message``, ``on_driver_frame``, ``on_unreachable`` and ``on_down`` are called
    synchronously on the loop and must not block (what they raise is logged and counted as
    ``callback_errors``).

    ``max_frame_bytes`` bounds a whole frame (header, MAC and body). ``queue_limit`` and
    ``queue_bytes_limit`` bound each peer's outbound queue; when either is reached the *oldest*
    queued frame is dropped (Raft tolerates loss, and what is newest carries the latest term
    and commit index: a peer coming back gets fresh state, not a backlog it would discard).
    After a failed dial or write the queue is discarded too (``dropped_unreachable``): the core
    resends what still matters once it hears from the peer again.

    A node whose cluster id is 0 (joining, before :meth:`set_cluster_id`) accepts no frame of
    either kind (``dropped_no_cluster_id``); what it sends carries cluster id 0, which every
    member drops.

    Additions to the agreed interface (keywords with defaults): ``queue_bytes_limit``,
    ``write_timeout_s`` (an outbound connection whose writes have not drained by then is closed
    and reported unreachable), ``frame_deadline_s`` (the least time a peer gets to deliver a
    frame body, and its first frame after the hello; larger bodies get ``length / 1 MB/s``),
    ``on_down`` (a member closed its connection to us and a fresh dial to it was refused or
    ended before the hello: its process is gone; see :meth:`_probe`), ``batch`` (a reusable
    context manager entered around the callbacks of each read from a connection, so that the
    receiver can act once on what arrived together), and the read-only
    properties ``address``, ``member_id`` and ``cluster_id``.

    The constructor raises :class:`ValueError` for a ``host`` that is not a literal, specific IP
    address (never a wildcard) or an out-of-range id or limit.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        member_id: int,
        cluster_id: int,
        key: bytes,
        authorize: Callable[[str, int], Awaitable[bool]],
        still_allowed: Callable[[str], bool],
        resolve: Callable[[int], tuple[str, int] | None],
        on_message: Callable[[Message], None],
        on_driver_frame: Callable[[int, bytes], None],
        on_unreachable: Callable[[int], None],
        on_down: Callable[[int], None] = lambda member: None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        queue_limit: int = 4096,
        connect_timeout_s: float = 2.0,
        dial: Dial | None = None,
        queue_bytes_limit: int = 64 * 1024 * 1024,
        write_timeout_s: float = 10.0,
        frame_deadline_s: float = 5.0,
        batch: AbstractContextManager[object] | None = None,
    ) -> None:
        address = ipaddress.ip_address(host)  # raises ValueError for names and garbage
        if address.is_unspecified:
            raise ValueError(f"transport must listen on the node's own address, not {host}")
        if not 0 < member_id <= MAX_ID or not 0 <= cluster_id <= MAX_ID:
            raise ValueError("member id must be in 1..2**64-1 and cluster id in 0..2**64-1")
        if max_frame_bytes < PREFIX_BYTES + 1024 or queue_limit < 1 or queue_bytes_limit < 1:
            raise ValueError("max_frame_bytes, queue_limit or queue_bytes_limit is too small")
        self._host, self._port = host, port
        self._link = Link(derive_key(key), member_id, cluster_id, still_allowed)
        self._stats = self._link.stats
        self._receiver = Receiver(
            self._link,
            authorize=authorize,
            on_message=on_message,
            on_driver_frame=on_driver_frame,
            on_peer_closed=self._probe_soon,
            max_frame_bytes=max_frame_bytes,
            authorize_timeout_s=connect_timeout_s,
            frame_deadline_s=frame_deadline_s,
            batch=batch,
        )
        self._resolve, self._on_unreachable, self._on_down = resolve, on_unreachable, on_down
        self._probes: dict[int, asyncio.Task[None]] = {}  # held: the loop keeps weak refs
        self._max_body = max_frame_bytes - PREFIX_BYTES
        self._queue_limit, self._queue_bytes_limit = queue_limit, queue_bytes_limit
        self._connect_timeout_s, self._write_timeout_s = connect_timeout_s, write_timeout_s
        self._watch_interval_s = min(0.5, frame_deadline_s / 2)
        self._dial: Dial = dial if dial is not None else self._dial_bound
        self._peers: dict[int, _Peer] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) listened on; the port is the bound one once started (port 0 allowed)."""
        return self._host, self._port

    @property
    def member_id(self) -> int:
        return self._link.member_id

    @property
    def cluster_id(self) -> int:
        return self._link.cluster_id

    async def start(self) -> None:
        """Listen on ``host:port`` (only there). Raises :class:`OSError` naming the address,
        or :class:`RuntimeError` if called twice (a transport is used once)."""
        if self._started:
            raise RuntimeError("a transport can be started once")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._port = await self._receiver.listen(self._host, self._port)
        self._watchdog = self._loop.create_task(self._watch())
        log.info("transport of member %016x listening on %s:%d", self.member_id, *self.address)

    async def stop(self) -> None:
        """Close the listener and every connection, cancel every task, drop what is queued.
        Idempotent; never raises."""
        if self._stopped:
            return
        self._stopped = True
        tasks = self._receiver.close()
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        tasks += self._probes.values()
        for peer in self._peers.values():
            peer.close()
            peer.queue.clear()
            if peer.task is not None:
                tasks.append(peer.task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def set_cluster_id(self, cluster_id: int) -> None:
        """From now on send with, and accept only, ``cluster_id``. Raises :class:`ValueError`
        if out of range."""
        if not 0 <= cluster_id <= MAX_ID:
            raise ValueError(f"cluster id {cluster_id} out of range")
        self._link.cluster_id = cluster_id

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start, plus gauges: ``connections_in``, ``connections_out``,
        ``queued`` and ``queued_bytes`` (frames, and their bodies' bytes, waiting in all peer
        queues)."""
        out = dict(self._stats)
        out["connections_in"] = self._receiver.connections
        out["connections_out"] = sum(1 for p in self._peers.values() if p.writer is not None)
        out["queued"] = sum(len(p.queue) for p in self._peers.values())
        out["queued_bytes"] = sum(p.queued_bytes for p in self._peers.values())
        return out

    def recheck(self) -> None:
        """Close every connection, either way, whose peer no longer passes ``still_allowed``
        (call it when the tailnet's tags change). Never raises."""
        self._receiver.recheck()
        for peer in self._peers.values():
            if peer.writer is not None and not self._link.allowed(peer.host):
                self._stats["revoked"] += 1
                log.warning(
                    "closing connection to %016x at %s: not allowed", peer.member, peer.host
                )
                peer.close()

    def disconnect(self, member: int) -> None:
        """Forget ``member`` as a destination: close our connection to it, drop its queue and
        stop its writer. A later :meth:`send` to it starts afresh."""
        peer = self._peers.pop(member, None)
        if peer is None:
            return
        peer.close()
        self._stats["dropped_unreachable"] += len(peer.queue)
        peer.queue.clear()
        if peer.task is not None:
            peer.task.cancel()

    # -- sending -----------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``. Never blocks, never raises; drops are counted
        (before :meth:`start` and after :meth:`stop` everything is dropped)."""
        try:
            body = encode_message(msg)
        except Exception:  # a message the codec cannot express is a bug upstream: report it
            self._stats["dropped_unroutable"] += 1
            log.exception("cannot encode a message for %r; dropped", getattr(msg, "to", "?"))
            return
        self._enqueue(msg.to, FrameKind.RAFT, body)

    def send_driver(self, to: int, payload: bytes) -> None:
        """Queue an opaque DRIVER frame for member ``to``. Never blocks, never raises."""
        self._enqueue(to, FrameKind.DRIVER, payload)

    def _enqueue(self, to: int, kind: int, body: bytes) -> None:
        if self._stopped or not self._started or to == self.member_id or not 0 < to <= MAX_ID:
            self._stats["dropped_unroutable"] += 1
            return
        size = len(body)
        if size > self._max_body:
            # the receiver would close the connection over it: refuse it here instead
            self._stats["dropped_too_large"] += 1
            suppressed = self._link.quiet.check(("too-large", to))
            if suppressed is not None:
                log.error(
                    "dropped a %d-byte frame for %016x: over max_frame_bytes%s",
                    *(size, to, more(suppressed)),
                )
            return
        peer = self._peers.get(to)
        if peer is None:
            peer = self._peers[to] = _Peer(to)
            assert self._loop is not None
            peer.task = self._loop.create_task(self._run_peer(peer))
        queue = peer.queue
        writer, mac = peer.writer, peer.mac
        if (
            not queue
            and writer is not None
            and mac is not None
            and peer.connected()
            and writer.transport.get_write_buffer_size() < _DIRECT_WRITE_LIMIT
        ):
            # Nothing waits before it and the socket keeps up: write it now rather than a loop
            # turn later through the writer task (a replication round trip is two such hops).
            link = self._link
            header = HEADER.pack(MAGIC, VERSION, kind, 0, size, link.cluster_id, link.member_id, to)
            writer.write(header + mac.seal(header, body) + body)
            self._stats["frames_sent"] += 1
            self._stats["bytes_sent"] += size + PREFIX_BYTES
            return
        while queue and (
            len(queue) >= self._queue_limit or peer.queued_bytes + size > self._queue_bytes_limit
        ):
            peer.queued_bytes -= len(queue.popleft()[1])
            self._stats["dropped_queue_full"] += 1
        queue.append((kind, body))
        peer.queued_bytes += size
        if len(queue) == 1:
            peer.wake.set()

    async def _run_peer(self, peer: _Peer) -> None:
        """The one writer of ``peer``: dial when there is something to send, then write
        whatever is queued in one go; back off (capped, jittered) after a failed dial."""
        backoff = _BACKOFF_MIN_S
        while not self._stopped:
            if not peer.queue:
                peer.wake.clear()
                await peer.wake.wait()
                continue
            try:
                if not peer.connected():
                    peer.close()
                    try:
                        await self._connect(peer)
                    except Exception as exc:
                        self._stats["dial_failures"] += 1
                        self._outbound_failed(peer, f"cannot connect: {describe(exc)}")
                        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                        backoff = min(backoff * 2, _BACKOFF_MAX_S)
                        continue
                    backoff = _BACKOFF_MIN_S
                await self._flush(peer)
            except Exception:  # never let one peer's writer die: log it and carry on
                self._stats["errors"] += 1
                log.exception("transport writer for %016x failed", peer.member)
                peer.close()
                await asyncio.sleep(_BACKOFF_MAX_S)

    async def _connect(self, peer: _Peer) -> None:
        where = self._resolve(peer.member)
        if where is None:
            raise LookupError("address unknown")
        host, port = where
        if not self._link.allowed(host):
            raise PermissionError(f"{host} is not allowed")

        async def handshake() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
            reader, writer = await self._dial(host, port)
            try:
                nonce = decode_hello(await reader.readexactly(HELLO_BYTES))
            except BaseException:
                writer.transport.abort()
                raise
            return reader, writer, nonce

        reader, writer, nonce = await asyncio.wait_for(handshake(), self._connect_timeout_s)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:  # asyncio sets it already on its own sockets; a custom dial may not
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer.reader, peer.writer, peer.host = reader, writer, host
        peer.mac = FrameMac(self._link.key, nonce)
        self._stats["connections_dialled"] += 1
        log.debug("connected to %016x at %s:%d", peer.member, host, port)

    async def _dial_bound(self, host: str, port: int) -> Streams:
        # Leave from our own address, so the peer can authorize us by source IP.
        return await asyncio.open_connection(
            host, port, local_addr=(self._host, 0), limit=READ_LIMIT
        )

    async def _flush(self, peer: _Peer) -> None:
        writer, mac, loop = peer.writer, peer.mac, self._loop
        assert writer is not None and mac is not None and loop is not None
        queue, pack, seal = peer.queue, HEADER.pack, mac.seal
        cluster, me, to = self._link.cluster_id, self._link.member_id, peer.member
        parts: list[bytes] = []
        size = count = 0
        while queue and size < _BATCH_BYTES:
            kind, body = queue.popleft()
            header = pack(MAGIC, VERSION, kind, 0, len(body), cluster, me, to)
            parts += (header, seal(header, body), body)
            size += len(body)
            count += 1
        peer.queued_bytes -= size
        try:
            writer.write(b"".join(parts))
            self._stats["frames_sent"] += count  # handed to the socket: no further guarantee
            self._stats["bytes_sent"] += size + count * PREFIX_BYTES
            # The watchdog reports the peer if this drain outlives write_timeout_s.
            peer.deadline = loop.time() + self._write_timeout_s
            await writer.drain()
            peer.deadline = NEVER
        except (OSError, RuntimeError) as exc:
            self._stats["write_failures"] += 1
            self._outbound_failed(peer, f"write failed: {describe(exc)}")

    def _outbound_failed(self, peer: _Peer, reason: str) -> None:
        peer.close()
        self._stats["dropped_unreachable"] += len(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0
        suppressed = self._link.quiet.check(("out", peer.member))
        if suppressed is not None:
            log.warning("member %016x unreachable: %s%s", peer.member, reason, more(suppressed))
        self._link.call(self._on_unreachable, peer.member)

    def _probe_soon(self, member: int) -> None:
        if member in self._probes or self._stopped or self._loop is None:
            return
        self._probes[member] = self._loop.create_task(self._probe(member))

    async def _probe(self, member: int) -> None:
        """``member`` closed its connection to us: dial it once. A refusal, or a connection
        that ends before the hello, means nothing serves there any more (its process died or
        is dying: the kernel may close the listener a little after the connections); that is
        reported through ``on_down``. A hello, a timeout or any other error says nothing."""

        async def answers(host: str, port: int) -> bool:
            reader, writer = await self._dial(host, port)
            try:
                await reader.readexactly(HELLO_BYTES)
            except (asyncio.IncompleteReadError, ConnectionError):
                return False
            finally:
                writer.transport.abort()
            return True

        down = False
        try:
            where = self._resolve(member)
            if where is not None and self._link.allowed(where[0]):
                down = not await asyncio.wait_for(answers(*where), self._connect_timeout_s)
        except ConnectionRefusedError:
            down = True
        except Exception:  # unreachable, slow, unknown: the election timeout decides
            pass
        finally:
            self._probes.pop(member, None)
        if down and not self._stopped:
            self._stats["peers_down"] += 1
            log.info("member %016x is down: it closed our connection, then failed a dial", member)
            self._link.call(self._on_down, member)

    async def _watch(self) -> None:
        """Abort connections past their deadline: a body or first frame that does not arrive
        in time (slowloris), a write that does not drain."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._watch_interval_s)
            now = loop.time()
            self._receiver.expire(now)
            for peer in list(self._peers.values()):
                if peer.deadline < now:
                    self._stats["timeouts"] += 1
                    self._outbound_failed(peer, "write did not drain in time")
