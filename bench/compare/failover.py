"""Leader failover: SIGKILL (or SIGSTOP) the leader, time until the first write succeeds,
restart it.

SIGKILL is a crash on a machine that stays up: the kernel closes the leader's connections and
its ports refuse new ones, which a system may take as a sign. SIGSTOP freezes it instead: its
connections stay open and silent, as when its machine goes dark or the network is cut, so only
the election timeout can tell.

The probe starts a new write every 20 ms (each on a fresh connection to one of the surviving
members in turn, each with its own timeout) from the moment of the kill, so the figure is when
the cluster first accepts a write again, not how long one unlucky request waited for its own
timeout. The killed member is restarted on its old state, and the cluster is back to healthy (every
member caught up) before the next kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from . import payloads
from .httpwire import Target, post_once
from .systems.base import System

PROBE_EVERY_S = 0.02
ATTEMPT_TIMEOUT_S = 5.0
GIVE_UP_S = 60.0


async def first_write(targets: list[Target], style: str, since: float) -> float:
    """Seconds from ``since`` (a perf_counter time) until a write through one of ``targets``
    succeeds; raises TimeoutError after GIVE_UP_S."""

    async def attempt(n: int) -> float | None:
        path, body = payloads.write_request(style, 10_000 + n % 64, n)
        target = targets[n % len(targets)]
        try:
            status, answer = await post_once(target, path, body, ATTEMPT_TIMEOUT_S)
        except Exception:  # refused, reset, timed out: not yet
            return None
        return time.perf_counter() if payloads.ok(style, status, answer) else None

    pending: set[asyncio.Task[float | None]] = set()
    n = 0
    try:
        while time.perf_counter() - since < GIVE_UP_S:
            pending.add(asyncio.create_task(attempt(n)))
            n += 1
            done, pending = await asyncio.wait(
                pending, timeout=PROBE_EVERY_S, return_when=asyncio.FIRST_COMPLETED
            )
            succeeded = [t for t in (d.result() for d in done) if t is not None]
            if succeeded:
                return min(succeeded) - since
        raise TimeoutError(f"no write succeeded within {GIVE_UP_S:g}s of the kill")
    finally:
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*pending, return_exceptions=True)


def one_failover(system: System, sig: int = signal.SIGKILL) -> float:
    """Kill (``sig``) the leader of a healthy cluster, time the first write after it (ms),
    restart it."""
    path = system.failover_path()
    system.wait_healthy()
    time.sleep(0.5)  # let a restarted member settle (a tool, not a test: no deadline here)
    leader = system.leader_index()
    if leader is None:
        system.wait_healthy()
        leader = system.leader_index()
    if leader is None:
        raise RuntimeError(f"{system.name}: no leader to kill")
    survivors = [i for i in range(len(system.addresses)) if i != leader]
    targets = system.targets(path, among=survivors)
    since = time.perf_counter()
    system.kill(leader, sig)
    try:
        seconds = asyncio.run(first_write(targets, path.style, since))
    finally:
        system.restart(leader)
    return seconds * 1000
