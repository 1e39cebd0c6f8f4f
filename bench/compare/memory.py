"""Memory: resident set (VmRSS) of every member, idle and after loading many keys."""

from __future__ import annotations

import asyncio

from . import payloads
from .httpwire import Connection
from .procs import rss_mb
from .systems.base import System

KEYS_PER_REQUEST = 100
LOADERS = 8


def largest_rss_mb(system: System) -> float:
    """The largest VmRSS among the system's member processes, in MiB."""
    return max(rss_mb(pid) for pid in system.pids())


def _value(i: int, size: int) -> str:
    stem = f"value-{i:09d}-"
    return (stem * (size // len(stem) + 1))[:size]


async def _load(system: System, keys: int, value_bytes: int) -> None:
    path = system.bulk_path()
    targets = system.targets(path)
    batches = [
        {
            f"key-{i:07d}": _value(i, value_bytes)
            for i in range(start, min(start + KEYS_PER_REQUEST, keys))
        }
        for start in range(0, keys, KEYS_PER_REQUEST)
    ]

    async def loader(n: int) -> None:
        connection = Connection(targets[n % len(targets)])
        try:
            for batch in batches[n::LOADERS]:
                url, body = payloads.bulk_request(path.style, batch)
                status, answer = await asyncio.wait_for(connection.post(url, body), 60)
                if not payloads.ok(path.style, status, answer):
                    raise RuntimeError(
                        f"{system.name}: loading keys failed: {status} {answer[:200]!r}"
                    )
        finally:
            await connection.close()

    await asyncio.gather(*(loader(n) for n in range(LOADERS)))


def load_keys(system: System, keys: int, value_bytes: int) -> None:
    """Write ``keys`` keys of ``value_bytes``-byte values, ``KEYS_PER_REQUEST`` per request
    (one tsconsensus ``set`` of many keys, one etcd txn of many puts, one pysyncobj call)."""
    asyncio.run(_load(system, keys, value_bytes))
