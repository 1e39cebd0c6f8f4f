"""Every figure of a run, by table column and row key, and the rows the table shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .stats import Figures

ETCD = "etcd"
ETCD_GATEWAY = "etcd gateway"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    """``rate``, ``ms``, ``us``, ``MiB`` or ``ratio``: how the figure is written."""
    reference: str = ""
    """The row key of the etcd figure its ratios are taken against (default: its own key)."""


@dataclass
class Results:
    """Figures of one run: ``values[column][row key]``, plus what the table needs around them."""

    settings: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Every round of every load figure (``column|key`` -> figures), for the JSON."""

    def add_column(self, column: str) -> None:
        if column not in self.columns:
            self.columns.append(column)
            self.values.setdefault(column, {})

    def put(self, column: str, key: str, value: float) -> None:
        self.add_column(column)
        self.values[column][key] = value

    def put_figures(self, column: str, key: str, figures: Figures) -> None:
        self.put(column, f"{key}/rate", figures.rate)
        self.put(column, f"{key}/p50", figures.p50_ms)
        self.put(column, f"{key}/p99", figures.p99_ms)
        if figures.members_cpu_s and figures.count:
            self.put(column, f"{key}/cpu", figures.members_cpu_s / figures.count * 1e6)
        if figures.errors:
            self.errors.setdefault(column, {})[key] = figures.errors

    def get(self, column: str, key: str) -> float | None:
        value = self.values.get(column, {}).get(key)
        return None if value is None or math.isnan(value) else value

    def etcd_reference(self, key: str) -> float | None:
        """etcd's figure for ``key``: its gRPC port's, else its gateway's."""
        found = self.get(ETCD, key)
        return found if found is not None else self.get(ETCD_GATEWAY, key)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "columns": self.columns,
            "values": self.values,
            "errors": self.errors,
            "notes": self.notes,
            "problems": self.problems,
            "samples": self.samples,
        }


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def rows(settings: dict[str, Any]) -> list[Row]:
    """The table's rows for a run with these settings."""
    out: list[Row] = []

    def figures(key: str, what: str, unit: str, reference: str = "", cpu: bool = False) -> None:
        ref = reference or key
        out.append(Row(f"{key}/rate", f"{what}: {unit}", "rate", f"{ref}/rate"))
        out.append(Row(f"{key}/p50", f"{what}: p50 ms", "ms", f"{ref}/p50"))
        out.append(Row(f"{key}/p99", f"{what}: p99 ms", "ms", f"{ref}/p99"))
        if cpu:
            out.append(Row(f"{key}/cpu", f"{what}: members' CPU µs per command", "us"))

    for c in settings["clients"]:
        figures(
            f"write_a/{c}", f"writes (a) client port, {plural(c, 'client')}", "commands/s", cpu=True
        )
    for c in settings["clients"]:
        figures(
            f"write_b/{c}",
            f"writes (b) in the leader's process, {plural(c, 'caller')}",
            "commands/s",
            reference=f"write_a/{c}",
        )
    for c in settings["read_clients"]:
        figures(f"read/{c}", f"reads (get), {plural(c, 'client')}", "reads/s")
    kills = plural(settings["kills"], "leader kill")
    out.append(Row("failover/median", f"failover ({kills}): median ms", "ms"))
    out.append(Row("failover/max", f"failover ({kills}): max ms", "ms"))
    freezes = plural(settings["kills"], "leader freeze")
    out.append(Row("frozen/median", f"failover, leader frozen ({freezes}): median ms", "ms"))
    out.append(Row("frozen/max", f"failover, leader frozen ({freezes}): max ms", "ms"))
    out.append(Row("rss/idle", "RSS idle, largest member: MiB", "MiB"))
    keys = settings["keys"]
    size = f"{keys:,} keys of {settings['value_bytes']} B"
    out.append(Row("rss/keys", f"RSS with {size}, fresh cluster: MiB", "MiB"))
    out.append(Row("rss/after", f"RSS after the whole run plus {size}: MiB", "MiB"))
    top = max(settings["clients"])
    out.append(Row("five/rate", f"5 members: writes (a) at {top} clients: commands/s", "rate"))
    out.append(Row("five/ratio", "5 members / 3 members (writes at the same clients)", "ratio"))
    return out
