"""Real transports on loopback addresses (127.a.b.x), and raw clients that misbehave.

Every wait has a deadline: :func:`until` polls a condition, :func:`run` bounds a whole test.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from tsconsensus.authorization import cluster_password
from tsconsensus.raft import Entry, Message, MessageType
from tsconsensus.raft.frames import HELLO_BYTES, FrameMac, decode_hello, derive_key, encode_frame
from tsconsensus.raft.transport import Transport

TAG = "tag:tsc-test"
KEY = cluster_password(TAG, "a real secret").encode()
TAG_ONLY_KEY = cluster_password(TAG).encode()  # what anyone who knows the tag can derive
CLUSTER = 0xC1

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine on a fresh loop, bounded; fail on any loop-level error."""
    errors: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        return await asyncio.wait_for(coro, timeout)

    result = asyncio.run(main())
    assert not errors, f"the event loop reported errors: {errors}"
    return result


async def until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> float:
    """Poll ``predicate`` until true; seconds it took. Raises AssertionError at the deadline."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)
    return loop.time() - start


def append(frm: int, to: int, index: int = 1, data: bytes = b"x" * 100) -> Message:
    """A small APPEND carrying one entry, as a leader pipelines them."""
    return Message(
        MessageType.APPEND,
        to=to,
        frm=frm,
        term=3,
        index=index,
        log_term=3,
        entries=(Entry(index + 1, 3, data=data),),
        commit=index,
    )


class Node:
    """One transport and what reached its callbacks."""

    def __init__(self, net: Net, member: int, host: str) -> None:
        self.net, self.member, self.host = net, member, host
        self.received: list[Message] = []
        self.driver: list[tuple[int, bytes]] = []
        self.unreachable: list[int] = []
        self.down: list[int] = []
        self.authorized: list[tuple[str, int]] = []
        self.echo = False  # answer every HEARTBEAT with a HEARTBEAT_RESP
        self.transport: Transport

    async def authorize(self, ip: str, port: int) -> bool:
        self.authorized.append((ip, port))
        if self.net.authorize_error:
            raise RuntimeError("tailscaled is not answering")
        gate = self.net.gate
        if gate is not None:
            await gate
        return ip not in self.net.denied

    def on_message(self, msg: Message) -> None:
        self.received.append(msg)
        if self.echo and msg.type is MessageType.HEARTBEAT:
            reply = Message(MessageType.HEARTBEAT_RESP, to=msg.frm, frm=self.member, term=msg.term)
            self.transport.send(reply)

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.address


class Net:
    """Transports on one loopback /24 that resolve each other; stopped on exit."""

    def __init__(self) -> None:
        self.prefix = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}."
        self.addresses: dict[int, tuple[str, int]] = {}
        self.denied: set[str] = set()
        self.gate: asyncio.Future[None] | None = None  # authorize waits on it when set
        self.authorize_error = False  # authorize raises when set
        self.nodes: list[Node] = []

    def host(self, n: int) -> str:
        return f"{self.prefix}{n}"

    async def node(
        self, member: int, *, host: int | None = None, port: int = 0, **kwargs: Any
    ) -> Node:
        node = Node(self, member, self.host(member if host is None else host))
        kwargs.setdefault("cluster_id", CLUSTER)
        kwargs.setdefault("key", KEY)
        node.transport = Transport(
            host=node.host,
            port=port,
            member_id=member,
            authorize=node.authorize,
            still_allowed=lambda ip: ip not in self.denied,
            resolve=self.addresses.get,
            on_message=node.on_message,
            on_driver_frame=lambda sender, payload: node.driver.append((sender, payload)),
            on_unreachable=node.unreachable.append,
            on_down=node.down.append,
            **kwargs,
        )
        await node.transport.start()
        self.addresses[member] = node.transport.address
        self.nodes.append(node)
        return node

    async def round_trip(self, a: Node, b: Node, term: int = 1) -> float:
        """Seconds for a HEARTBEAT from ``a`` to ``b`` (which must echo) and back."""
        loop = asyncio.get_running_loop()
        start, before = loop.time(), len(a.received)
        a.transport.send(Message(MessageType.HEARTBEAT, to=b.member, frm=a.member, term=term))
        await until(lambda: len(a.received) > before, "a round trip")
        return loop.time() - start

    async def __aenter__(self) -> Net:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            await node.transport.stop()


class Raw:
    """A hand-driven client: connects from ``source``, reads the hello, writes what it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.nonce = b""
        self.got = b""

    @classmethod
    async def connect(cls, target: tuple[str, int], source: str, hello: bool = True) -> Raw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*target, local_addr=(source, 0)), 2.0
        )
        raw = cls(reader, writer)
        if hello:
            raw.nonce = decode_hello(await asyncio.wait_for(reader.readexactly(HELLO_BYTES), 2.0))
        return raw

    def mac(self, key: bytes = KEY) -> FrameMac:
        return FrameMac(derive_key(key), self.nonce)

    def frame(self, mac: FrameMac, body: bytes, *, kind: int = 1, **header: int) -> bytes:
        fields = {"cluster_id": CLUSTER, "sender": 9, "receiver": 1} | header
        return encode_frame(
            mac, kind, fields["cluster_id"], fields["sender"], fields["receiver"], body
        )

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), 2.0)

    async def closed(self, timeout: float = 2.0) -> float:
        """Seconds until the server closed the connection; what it sent is kept in ``got``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            while data := await asyncio.wait_for(self.reader.read(65536), timeout):
                self.got += data
        except ConnectionError:
            pass
        return loop.time() - start

    def close(self) -> None:
        self.writer.transport.abort()
