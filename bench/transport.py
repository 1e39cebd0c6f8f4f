"""Throughput and round trips of the engine's transport on loopback (prints a table; not a test).

Member 1 runs in this process; member 2 runs in a child process (as two nodes would), or in
this one with ``--same-process``. Measured:

- one-way: APPEND messages carrying one 100-byte entry, 1 -> 2; member 2 acknowledges every
  1024 with a DRIVER frame, and member 1 keeps at most ``--window`` unacknowledged (so its
  queue never overflows: nothing is dropped, and the figure is what arrives);
- round trips: HEARTBEAT 1 -> 2, answered at once with HEARTBEAT_RESP, with 1 and with 64 in
  flight;
- for scale, the per-frame costs without IO: seal + verify of the MAC, encode + decode of the
  message.

    .venv/bin/python bench/transport.py [--seconds 3] [--rounds 3] [--same-process]

Figures are medians over rounds; the machine is shared and noisy, so compare within one run.
Messages are built before timing: what is measured is the transport and the codec.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from tsconsensus.raft import Entry, Message, MessageType
from tsconsensus.raft.codec import decode_message, encode_message
from tsconsensus.raft.frames import HEADER_BYTES, PREFIX_BYTES, FrameMac, derive_key, encode_frame
from tsconsensus.raft.transport import Transport

KEY = b"bench-secret"
CLUSTER = 0xBE
ACK_EVERY = 1024
_U64 = struct.Struct(">Q")


def appends(n: int) -> list[Message]:
    return [
        Message(
            MessageType.APPEND,
            to=2,
            frm=1,
            term=1,
            index=i,
            log_term=1,
            entries=(Entry(i + 1, 1, data=random.randbytes(100)),),
            commit=i,
        )
        for i in range(n)
    ]


def make(
    member: int,
    host: str,
    addresses: dict[int, tuple[str, int]],
    on_message: Callable[[Message], None],
    on_driver: Callable[[int, bytes], None],
) -> Transport:
    async def authorize(ip: str, port: int) -> bool:
        return True

    return Transport(
        host=host,
        port=0,
        member_id=member,
        cluster_id=CLUSTER,
        key=KEY,
        authorize=authorize,
        still_allowed=lambda ip: True,
        resolve=addresses.get,
        on_message=on_message,
        on_driver_frame=on_driver,
        on_unreachable=lambda m: print(f"member {m} unreachable", file=sys.stderr),
    )


class Echo:
    """Member 2: answers heartbeats, acknowledges appends in bulk."""

    def __init__(self, host: str, addresses: dict[int, tuple[str, int]]) -> None:
        self.count = 0
        self.stopped = asyncio.Event()
        self.transport = make(2, host, addresses, self.on_message, self.on_driver)

    def on_message(self, msg: Message) -> None:
        if msg.type is MessageType.HEARTBEAT:
            reply = Message(MessageType.HEARTBEAT_RESP, to=1, frm=2, term=msg.term)
            self.transport.send(reply)
        else:
            self.count += 1
            if self.count % ACK_EVERY == 0:
                self.transport.send_driver(1, _U64.pack(self.count))

    def on_driver(self, sender: int, payload: bytes) -> None:
        if payload == b"stop":
            self.stopped.set()
        elif payload == b"reset":
            self.count = 0


def child(host: str, parent_host: str, pipe: Connection) -> None:
    async def main() -> None:
        addresses: dict[int, tuple[str, int]] = {}
        echo = Echo(host, addresses)
        await echo.transport.start()
        pipe.send(echo.transport.address)
        addresses[1] = pipe.recv()
        await echo.stopped.wait()
        await echo.transport.stop()

    asyncio.run(main())


class Sender:
    def __init__(self, host: str, addresses: dict[int, tuple[str, int]]) -> None:
        self.acked = 0
        self.replies = 0
        self.progress = asyncio.Event()
        self.transport = make(1, host, addresses, self.on_message, self.on_driver)

    def on_message(self, msg: Message) -> None:
        self.replies += 1
        self.progress.set()

    def on_driver(self, sender: int, payload: bytes) -> None:
        self.acked = _U64.unpack(payload)[0]
        self.progress.set()

    async def wait(self) -> None:
        self.progress.clear()
        await asyncio.wait_for(self.progress.wait(), 10.0)

    async def one_way(self, messages: list[Message], seconds: float, window: int) -> float:
        send, n = self.transport.send, len(messages)
        self.acked = 0
        self.transport.send_driver(2, b"reset")
        sent = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            room = min(window - (sent - self.acked), 512)
            if room <= 0:
                await self.wait()
                continue
            for i in range(sent, sent + room):
                send(messages[i % n])
            sent += room
            await asyncio.sleep(0)
        goal = sent - sent % ACK_EVERY
        while self.acked < goal:
            await self.wait()
        return self.acked / (time.perf_counter() - start)

    async def round_trips(self, seconds: float, in_flight: int) -> float:
        send, term = self.transport.send, 1
        self.replies = 0
        start = time.perf_counter()
        for _ in range(in_flight):
            send(Message(MessageType.HEARTBEAT, to=2, frm=1, term=term))
        done = 0
        while time.perf_counter() - start < seconds:
            await self.wait()
            fresh, self.replies = self.replies, 0
            done += fresh
            for _ in range(fresh):
                send(Message(MessageType.HEARTBEAT, to=2, frm=1, term=term))
        return done / (time.perf_counter() - start)


def frame_costs(messages: list[Message]) -> tuple[float, float]:
    """Frames per second of MAC seal + verify, and of encode + decode, without IO."""
    key, nonce, n = derive_key(KEY), b"n" * 16, 20_000
    bodies = [encode_message(m) for m in messages[:n]]
    seal, verify = FrameMac(key, nonce), FrameMac(key, nonce)
    start = time.perf_counter()
    for body in bodies:
        frame = encode_frame(seal, 1, CLUSTER, 1, 2, body)
        verify.verify(frame[:HEADER_BYTES], frame[HEADER_BYTES:PREFIX_BYTES], body)
    mac_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for m in messages[:n]:
        decode_message(encode_message(m))
    return mac_rate, n / (time.perf_counter() - start)


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    base = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}."
    addresses: dict[int, tuple[str, int]] = {}
    sender = Sender(base + "1", addresses)
    await sender.transport.start()
    proc, echo = None, None
    if args.same_process:
        echo = Echo(base + "2", addresses)
        await echo.transport.start()
        addresses[2] = echo.transport.address
        addresses[1] = sender.transport.address
    else:
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=child, args=(base + "2", base + "1", theirs), daemon=True)
        proc.start()
        addresses[2] = await asyncio.to_thread(mine.recv)
        mine.send(sender.transport.address)
    messages = appends(20_000)
    results: dict[str, list[float]] = {"one-way": [], "rt1": [], "rt64": []}
    try:
        await sender.round_trips(0.3, 1)  # connect both ways, warm up
        for _ in range(args.rounds):
            results["one-way"].append(await sender.one_way(messages, args.seconds, args.window))
            results["rt1"].append(await sender.round_trips(args.seconds, 1))
            results["rt64"].append(await sender.round_trips(args.seconds, 64))
        stats = sender.transport.stats
        assert stats["dropped_queue_full"] == 0, stats
    finally:
        sender.transport.send_driver(2, b"stop")
        await asyncio.sleep(0.2)  # let the stop frame leave before closing
        await sender.transport.stop()
        if echo is not None:
            await echo.transport.stop()
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
    mac, codec = zip(*(frame_costs(messages) for _ in range(args.rounds)), strict=True)
    results["mac"], results["codec"] = list(mac), list(codec)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure")
    parser.add_argument("--window", type=int, default=4000, help="unacknowledged appends")
    parser.add_argument("--same-process", action="store_true", help="both members in one loop")
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    size = PREFIX_BYTES + len(encode_message(appends(1)[0]))
    where = "one process, one loop" if args.same_process else "two processes"
    print(f"transport on loopback, {where}, Python {sys.version.split()[0]}")
    print(f"{'what':<44}{'per second':>14}{'MB/s':>8}")
    rows = [
        (f"one-way APPEND, 1 entry of 100 B ({size} B frame)", "one-way", size),
        ("round trips, 1 in flight", "rt1", 0),
        ("round trips, 64 in flight", "rt64", 0),
        ("frame MAC seal + verify, no IO", "mac", 0),
        ("message encode + decode, no IO", "codec", 0),
    ]
    for label, key, frame_bytes in rows:
        rate = statistics.median(results[key])
        mbps = f"{rate * frame_bytes / 1e6:8.1f}" if frame_bytes else f"{'':8}"
        print(f"{label:<44}{rate:>14,.0f}{mbps}")


if __name__ == "__main__":
    main()
