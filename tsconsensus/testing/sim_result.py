"""The outcome of one simulated run, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass

from .sim_checks import Violation
from .sim_schedule import Fault, SimOptions


@dataclass
class SimResult:
    seed: int
    options: SimOptions
    schedule: list[Fault]
    violation: Violation | None
    trace: list[str]
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self) -> str:
        lines = [f"seed {self.seed}: " + ("ok" if self.ok else f"VIOLATION {self.violation}")]
        lines.append(f"options: {self.options}")
        lines.append("schedule:" + ("" if self.schedule else " (no faults)"))
        lines.extend(f"  {f}" for f in self.schedule)
        lines.append("stats: " + ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())))
        lines.append("trace:")
        lines.extend(f"  {t}" for t in self.trace)
        return "\n".join(lines)
