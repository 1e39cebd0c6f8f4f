"""What a simulated run looks like: its options and its schedule of faults."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..raft import CoreConfig

FAULT_KINDS = (
    "crash-all",
    "crash",
    "crash-torn",
    "pause",
    "partition",
    "isolate-leader",
    "bridge",
    "wipe",
    "transfer",
    "rumor",
)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. ``slots`` are host positions (0..nodes-1); what they mean depends
    on ``kind``: the host to crash/restart/pause/wipe, one side of a partition, the bridge."""

    at_ms: int
    kind: str
    slots: tuple[int, ...] = ()
    duration_ms: int = 0

    def __str__(self) -> str:
        where = ",".join(f"n{s}" for s in self.slots)
        lasting = f" for {self.duration_ms}ms" if self.duration_ms else ""
        return f"t={self.at_ms:05d} {self.kind} {where}{lasting}".rstrip()


@dataclass(frozen=True)
class SimOptions:
    """How a simulated run looks. Times are simulated milliseconds."""

    nodes: int = 3
    fault_ms: int = 1200
    liveness_ms: int = 2500
    tick_ms: int = 10
    latency_ms: tuple[int, int] = (1, 6)
    drop: float = 0.03
    duplicate: float = 0.02
    persist_ms: tuple[int, int] = (0, 3)
    propose_every_ms: int = 6
    read_every_ms: int = 25
    faults: int = 6
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    core: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`CoreConfig` fields (election ticks, batch sizes...)."""

    def core_config(self, member: int, cluster_id: int) -> CoreConfig:
        base: dict[str, Any] = dict(
            election_ticks_min=5,
            election_ticks_max=10,
            heartbeat_ticks=1,
            tick_ms=self.tick_ms,
            max_entry_bytes=1024,
            max_batch_bytes=200,
            max_inflight=4,
            max_uncommitted_bytes=4096,
            snapshot_chunk_bytes=16,
            snapshot_chunks_inflight=2,
            snapshot_entries=40,
            compaction_keep=5,
        )
        base.update(self.core)
        return CoreConfig(id=member, cluster_id=cluster_id, **base)


def random_schedule(rng: random.Random, options: SimOptions) -> list[Fault]:
    """A fault schedule drawn from ``rng``: ``options.faults`` faults of the allowed kinds."""
    faults = []
    n = options.nodes
    for _ in range(options.faults if options.fault_kinds else 0):
        at = rng.randrange(0, options.fault_ms)
        kind = rng.choice(options.fault_kinds)
        duration = rng.randrange(20, 400)
        if kind == "crash-all":
            faults.append(Fault(at, kind, (), duration))
        elif kind in ("crash", "crash-torn", "pause", "wipe"):
            faults.append(Fault(at, kind, (rng.randrange(n),), duration))
        elif kind == "partition":
            side = tuple(sorted(rng.sample(range(n), rng.randrange(1, n))))
            faults.append(Fault(at, kind, side, duration))
        elif kind == "bridge" and n >= 3:
            order = rng.sample(range(n), n)
            faults.append(Fault(at, kind, tuple(order), duration))
        elif kind in ("isolate-leader", "transfer", "rumor"):
            faults.append(Fault(at, kind, (), duration))
    faults.sort(key=lambda f: f.at_ms)
    return faults
