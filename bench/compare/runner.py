"""One system's measurements, in order, on clusters it starts and always stops."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .failover import failover_times
from .loadgen import LoadSpec, run_load
from .memory import largest_rss_mb, load_keys
from .results import Results, plural
from .stats import Figures
from .systems.base import ClientPath, Progress, System


@dataclass(frozen=True)
class Settings:
    clients: list[int]
    read_clients: list[int]
    seconds: float
    warmup_seconds: float
    kills: int
    keys: int
    value_bytes: int
    five_nodes: bool


def _show(figures: Figures) -> str:
    errors = f", {figures.errors} failed" if figures.errors else ""
    cpu = figures.client_cpu_s / figures.seconds if figures.seconds else 0.0
    client = f", client CPU {cpu:.0%}" if cpu else ""
    return (
        f"{figures.rate:,.0f}/s, p50 {figures.p50_ms:.2f} ms, p99 {figures.p99_ms:.2f} ms "
        f"({figures.count:,} in {figures.seconds:.1f} s{errors}{client})"
    )


def measure(system: System, path: ClientPath, op: str, clients: int, seconds: float) -> Figures:
    """Load from a separate process through ``path``; fails if nothing succeeded."""
    spec = LoadSpec(path.driver, path.style, op, system.targets(path), clients, seconds)
    figures, first_error = run_load(spec)
    if figures.count == 0:
        raise RuntimeError(f"{system.name} {path.label}: no request succeeded ({first_error})")
    return figures


class SystemRun:
    """Everything measured on one system."""

    def __init__(
        self, system: System, settings: Settings, results: Results, progress: Progress
    ) -> None:
        self.system = system
        self.settings = settings
        self.results = results
        self.progress = progress

    def step(self, what: str) -> None:
        self.progress(f"{self.system.name}: {what}")

    def run(self) -> None:
        s = self.settings
        self.step("starting 3 members")
        try:
            self.system.start(3)
            self.results.put(self.system.column, "rss/idle", largest_rss_mb(self.system))
            self.step(f"idle RSS {self.results.values[self.system.column]['rss/idle']:.1f} MiB")
            self._client_loads()
            self._inprocess()
            self._failover()
            self._memory()
        finally:
            self.system.stop()
        if s.five_nodes:
            self._five_nodes()

    def _client_loads(self) -> None:
        s = self.settings
        paths = self.system.paths()
        for path in paths:  # warm-up, not counted
            measure(self.system, path, "write", max(s.clients), s.warmup_seconds)
        for op, key, clients_list in (
            ("write", "write_a", s.clients),
            ("read", "read", s.read_clients),
        ):
            for clients in clients_list:
                for path in paths:
                    figures = measure(self.system, path, op, clients, s.seconds)
                    self.results.put_figures(path.column, f"{key}/{clients}", figures)
                    who = plural(clients, "client")
                    self.step(f"{op}s (a) {path.label}, {who}: {_show(figures)}")

    def _inprocess(self) -> None:
        s = self.settings
        self.step("(b) in the leader's process")
        warmup = (max(s.clients), s.warmup_seconds)  # first, not counted
        found = self.system.inprocess([warmup, *((c, s.seconds) for c in s.clients)])
        if found is None:
            self.step("(b): no in-process path")
            return
        found = found[1:]
        for clients, figures in zip(s.clients, found, strict=True):
            self.results.put_figures(self.system.column, f"write_b/{clients}", figures)
            self.step(f"writes (b) in-process, {plural(clients, 'caller')}: {_show(figures)}")

    def _failover(self) -> None:
        times = failover_times(self.system, self.settings.kills, self.progress)
        self.results.put(self.system.column, "failover/median", statistics.median(times))
        self.results.put(self.system.column, "failover/max", max(times))

    def _memory(self) -> None:
        s = self.settings
        self.step(f"loading {s.keys:,} keys of {s.value_bytes} B")
        retried = load_keys(self.system, s.keys, s.value_bytes)
        if retried:
            self.step(f"{retried} refused load requests retried")
        self.system.wait_healthy()
        rss = largest_rss_mb(self.system)
        self.results.put(self.system.column, "rss/keys", rss)
        self.step(f"RSS with {s.keys:,} keys: {rss:.1f} MiB")

    def _five_nodes(self) -> None:
        s = self.settings
        top = max(s.clients)
        self.step("starting 5 members")
        try:
            self.system.start(5)
            path = self.system.paths()[0]
            measure(self.system, path, "write", top, s.warmup_seconds)
            figures = measure(self.system, path, "write", top, s.seconds)
        finally:
            self.system.stop()
        self.results.put(self.system.column, "five/rate", figures.rate)
        three = self.results.get(path.column, f"write_a/{top}/rate")
        if three:
            self.results.put(self.system.column, "five/ratio", figures.rate / three)
        self.step(f"5 members, {path.label}, {plural(top, 'client')}: {_show(figures)}")
