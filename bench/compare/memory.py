"""Memory: resident set (VmRSS) of every member, idle and after loading many keys."""

from __future__ import annotations

import asyncio

from . import payloads
from .httpwire import Connection
from .procs import rss_mb
from .systems.base import System

KEYS_PER_REQUEST = 100
LOADERS = 8
ATTEMPTS = 5


def largest_rss_mb(system: System) -> float:
    """The largest VmRSS among the system's member processes, in MiB."""
    return max(rss_mb(pid) for pid in system.pids())


def _value(i: int, size: int) -> str:
    stem = f"value-{i:09d}-"
    return (stem * (size // len(stem) + 1))[:size]


async def _load(system: System, keys: int, value_bytes: int) -> int:
    path = system.bulk_path()
    targets = system.targets(path)
    batches = [
        {
            f"key-{i:07d}": _value(i, value_bytes)
            for i in range(start, min(start + KEYS_PER_REQUEST, keys))
        }
        for start in range(0, keys, KEYS_PER_REQUEST)
    ]

    retried = [0]

    async def loader(n: int) -> None:
        connection = Connection(targets[n % len(targets)])
        try:
            for batch in batches[n::LOADERS]:
                url, body = payloads.bulk_request(path.style, batch)
                for attempt in range(1, ATTEMPTS + 1):  # a user retries (setting is idempotent)
                    status, answer = await asyncio.wait_for(connection.post(url, body), 60)
                    if payloads.ok(path.style, status, answer):
                        break
                    if attempt == ATTEMPTS:
                        raise RuntimeError(
                            f"{system.name}: loading keys failed {ATTEMPTS} times: "
                            f"{status} {answer[:200]!r}"
                        )
                    retried[0] += 1
                    await asyncio.sleep(0.2 * attempt)
        finally:
            await connection.close()

    await asyncio.gather(*(loader(n) for n in range(LOADERS)))
    return retried[0]


def load_keys(system: System, keys: int, value_bytes: int) -> int:
    """Write ``keys`` keys of ``value_bytes``-byte values, ``KEYS_PER_REQUEST`` per request
    (one tsconsensus ``set`` of many keys, one etcd txn of many puts, one pysyncobj call);
    a refused request is retried. Returns how many retries there were."""
    return asyncio.run(_load(system, keys, value_bytes))
