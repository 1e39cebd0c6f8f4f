"""Figures of one measurement: rate, latency percentiles, how many completed and failed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Figures:
    """What one load measurement produced (latencies in milliseconds)."""

    rate: float
    """Completed operations per second over the measured interval."""
    p50_ms: float
    p99_ms: float
    count: int
    errors: int = 0
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    """CPU time the load generator process used meanwhile (0 when not measured)."""
    members_cpu_s: float = 0.0
    """CPU time the system's member processes used over the measured interval (0 when not
    measured)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return cls(
            rate=float(data["rate"]),
            p50_ms=float(data["p50_ms"]),
            p99_ms=float(data["p99_ms"]),
            count=int(data["count"]),
            errors=int(data.get("errors", 0)),
            seconds=float(data.get("seconds", 0.0)),
            client_cpu_s=float(data.get("client_cpu_s", 0.0)),
            members_cpu_s=float(data.get("members_cpu_s", 0.0)),
        )


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an ascending list, nearest rank; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(latencies_s: list[float], elapsed_s: float, errors: int = 0) -> Figures:
    """Figures from per-operation latencies (seconds) gathered over ``elapsed_s`` seconds."""
    ordered = sorted(latencies_s)
    return Figures(
        rate=len(ordered) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        count=len(ordered),
        errors=errors,
        seconds=elapsed_s,
    )


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def combine(rounds: list[Figures]) -> Figures:
    """One figure from several rounds of the same measurement: the median of each of rate,
    p50 and p99; counts, errors, time and CPU added up."""
    if len(rounds) == 1:
        return rounds[0]
    return Figures(
        rate=median([f.rate for f in rounds]),
        p50_ms=median([f.p50_ms for f in rounds]),
        p99_ms=median([f.p99_ms for f in rounds]),
        count=sum(f.count for f in rounds),
        errors=sum(f.errors for f in rounds),
        seconds=sum(f.seconds for f in rounds),
        client_cpu_s=sum(f.client_cpu_s for f in rounds),
        members_cpu_s=sum(f.members_cpu_s for f in rounds),
    )
