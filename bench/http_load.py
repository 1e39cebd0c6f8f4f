"""Load on the command port (``POST /v1/execute``) from a separate process (prints figures).

Starts a 3-node local cluster (``tsc node start`` processes; state directories with fsync by
default, ``--storage nosync`` or ``memory`` for less) and drives it from
this process with N keep-alive connections spread over the three nodes, each sending one
request at a time: an asyncio client on raw sockets, so the client costs little next to the
nodes. Figures are medians over rounds.

    .venv/bin/python bench/http_load.py [--seconds 3] [--rounds 3] [--connections 1 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from tsconsensus.testing import LocalCluster


async def _connection(host: str, port: int, source: str, stop_at: float, tag: int) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    latencies = []
    n = 0
    try:
        while time.perf_counter() < stop_at:
            body = json.dumps({"name": "set", "args": {f"c{tag}": n}}).encode()
            head = (
                f"POST /v1/execute HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_and_headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            if not status_and_headers.startswith(b"HTTP/1.1 200") or b'"error":null' not in payload:
                raise RuntimeError(f"request failed: {status_and_headers[:40]!r} {payload[:100]!r}")
            latencies.append(time.perf_counter() - started)
            n += 1
    finally:
        writer.close()
    return latencies


async def _round(
    cluster: LocalCluster, targets: list[int], connections: int, seconds: float
) -> tuple[float, float]:
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            _connection(
                cluster.addresses[targets[c % len(targets)]],
                cluster.ports.command,
                cluster.addresses[targets[c % len(targets)]],
                stop_at,
                c,
            )
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r)
    return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--storage",
        choices=("fsync", "nosync", "memory"),
        default="fsync",
        help="state directories with fsync (the default durability), without fsync, or none",
    )
    args = parser.parse_args()
    base = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}.1"
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(
            Path(tmp), nodes=3, base_address=base, persistent=args.storage != "memory"
        )
        for i in range(3):
            cluster.node_overrides[i] = {"storage": {"fsync": args.storage == "fsync"}}
        try:
            cluster.start(wait=True, timeout=30)
            leader = cluster.wait_for_leader()
            follower = next(i for i in range(3) if i != leader)
            print(f"storage: {args.storage}")
            for connections in args.connections:
                # one connection: to the leader, then to a follower (which forwards);
                # several: spread over the three nodes
                cases = [("leader", [leader]), ("a follower", [follower])]
                if connections > 1:
                    cases = [("3 nodes", [0, 1, 2])]
                for where, targets in cases:
                    rates, medians = [], []
                    for _ in range(args.rounds):
                        rate, median_ms = asyncio.run(
                            _round(cluster, targets, connections, args.seconds)
                        )
                        rates.append(rate)
                        medians.append(median_ms)
                    shown = ", ".join(f"{r:,.0f}" for r in rates)
                    print(
                        f"HTTP /v1/execute, {connections:3d} connections to {where:10s}: "
                        f"median {statistics.median(rates):8,.0f} cmd/s, median latency "
                        f"{statistics.median(medians):6.2f} ms (rounds: {shown})"
                    )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
