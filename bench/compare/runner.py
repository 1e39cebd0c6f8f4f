"""The run: every system's clusters, with each measurement interleaved across the systems.

The 3-member clusters of all systems run at once, and each measurement is taken on every
system in turn (all systems at 1 client, then all at 16, ...; one leader kill on each, then
the next), so that a change in the shared machine's load during the run falls on every system
alike instead of on whichever was being measured then. ``rounds`` repeats the load series and
each figure is the median of its rounds. A system that fails is stopped and reported; the
others go on. The 5-member comparison runs last, one system at a time: a fresh 5-member and
a fresh 3-member cluster of it side by side, measured in alternation.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .failover import one_failover
from .loadgen import LoadSpec, run_load
from .memory import largest_rss_mb, load_keys
from .results import Results, plural
from .stats import Figures, combine
from .systems.base import ClientPath, InProcess, Progress, System


@dataclass(frozen=True)
class Settings:
    clients: list[int]
    read_clients: list[int]
    seconds: float
    warmup_seconds: float
    rounds: int
    kills: int
    keys: int
    value_bytes: int
    five_nodes: bool


def show(figures: Figures) -> str:
    errors = f", {figures.errors} failed" if figures.errors else ""
    cpu = figures.client_cpu_s / figures.seconds if figures.seconds else 0.0
    client = f", client CPU {cpu:.0%}" if cpu else ""
    return (
        f"{figures.rate:,.0f}/s, p50 {figures.p50_ms:.2f} ms, p99 {figures.p99_ms:.2f} ms "
        f"({figures.count:,} in {figures.seconds:.1f} s{errors}{client})"
    )


def measure(system: System, path: ClientPath, op: str, clients: int, seconds: float) -> Figures:
    """Load from a separate process through ``path``; fails if nothing succeeded."""
    spec = LoadSpec(
        path.driver, path.style, op, system.targets(path), clients, seconds, members=system.pids()
    )
    figures, first_error = run_load(spec)
    if figures.count == 0:
        raise RuntimeError(f"{system.name} {path.label}: no request succeeded ({first_error})")
    return figures


class Run:
    """All the measurements of one run, on the given systems."""

    def __init__(
        self, systems: list[System], settings: Settings, results: Results, progress: Progress
    ) -> None:
        self.systems = systems
        self.settings = settings
        self.results = results
        self.progress = progress
        self.active: list[System] = []
        self.samples: dict[tuple[str, str], list[Figures]] = {}

    @property
    def failed(self) -> bool:
        return bool(self.results.problems)

    def _fail(self, system: System, exc: BaseException) -> None:
        self.results.problems.append(f"{system.name}: {type(exc).__name__}: {exc}")
        self.progress(f"{system.name}: FAILED: {type(exc).__name__}: {exc}")
        if system in self.active:
            self.active.remove(system)
        with contextlib.suppress(Exception):
            system.stop()

    def _each(self, action: Callable[[System], Any]) -> None:
        """``action`` on every system still in the run; one that raises leaves the run."""
        for system in list(self.active):
            try:
                action(system)
            except Exception as exc:  # that system's figures stop here; the others go on
                self._fail(system, exc)

    def run(self) -> None:
        s = self.settings
        self.active = list(self.systems)
        try:
            self._each(self._start)
            self._each(self._idle_memory)
            self._each(self._warm_up)
            for r in range(s.rounds):
                if s.rounds > 1:
                    self.progress(f"round {r + 1} of {s.rounds}")
                self._client_loads()
            self._inprocess()
            self._keep_medians()
            self._failover()
            self._each(self._memory)
        finally:
            for system in self.systems:
                with contextlib.suppress(Exception):
                    system.stop()
        self._each(self._fresh_memory)
        if s.five_nodes:
            self._each(self._five_against_three)

    def _start(self, system: System) -> None:
        self.progress(f"{system.name}: starting 3 members")
        system.start(3)

    def _idle_memory(self, system: System) -> None:
        rss = largest_rss_mb(system)
        self.results.put(system.column, "rss/idle", rss)
        self.progress(f"{system.name}: idle RSS {rss:.1f} MiB")

    def _warm_up(self, system: System) -> None:
        for path in system.paths():  # not counted
            measure(system, path, "write", max(self.settings.clients), self.settings.warmup_seconds)

    def _sample(self, column: str, key: str, figures: Figures) -> None:
        self.samples.setdefault((column, key), []).append(figures)

    def _client_loads(self) -> None:
        s = self.settings
        for op, key, clients_list in (
            ("write", "write_a", s.clients),
            ("read", "read", s.read_clients),
        ):
            for clients in clients_list:

                def load(system: System, op: str = op, key: str = key, c: int = clients) -> None:
                    for path in system.paths():
                        figures = measure(system, path, op, c, s.seconds)
                        self._sample(path.column, f"{key}/{c}", figures)
                        who = plural(c, "client")
                        self.progress(
                            f"{system.name}: {op}s (a) {path.label}, {who}: {show(figures)}"
                        )

                self._each(load)

    def _inprocess(self) -> None:
        s = self.settings
        sessions: dict[System, tuple[contextlib.AbstractContextManager[Any], InProcess]] = {}

        def open_session(system: System) -> None:
            self.progress(f"{system.name}: (b) callers in the leader's process")
            manager = system.inprocess()
            session = manager.__enter__()
            if session is None:
                manager.__exit__(None, None, None)
                self.progress(f"{system.name}: (b): no in-process path")
                return
            sessions[system] = (manager, session)
            session(max(s.clients), s.warmup_seconds)  # warm-up, not counted

        try:
            self._each(open_session)
            for _ in range(s.rounds):
                for clients in s.clients:

                    def call(system: System, c: int = clients) -> None:
                        if system in sessions:
                            figures = sessions[system][1](c, s.seconds)
                            self._sample(system.column, f"write_b/{c}", figures)
                            who = plural(c, "caller")
                            self.progress(
                                f"{system.name}: writes (b) in-process, {who}: {show(figures)}"
                            )

                    self._each(call)
        finally:
            for system, (manager, _) in sessions.items():
                try:
                    manager.__exit__(None, None, None)
                except Exception as exc:
                    self._fail(system, exc)

    def _keep_medians(self) -> None:
        for (column, key), found in self.samples.items():
            self.results.put_figures(column, key, combine(found))
        self.results.samples = {
            f"{column}|{key}": [f.to_json() for f in found]
            for (column, key), found in self.samples.items()
        }

    def _failover(self) -> None:
        self._failover_series("failover", signal.SIGKILL, "failover")
        self._failover_series("frozen", signal.SIGSTOP, "frozen leader")

    def _failover_series(self, key: str, sig: int, what: str) -> None:
        """``kills`` rounds of :func:`one_failover` with ``sig`` on every system in turn; the
        median and max go under ``key``."""
        times: dict[System, list[float]] = {}
        kills = self.settings.kills
        for k in range(kills):

            def kill(system: System, k: int = k) -> None:
                ms = one_failover(system, sig)
                times.setdefault(system, []).append(ms)
                self.progress(f"{system.name}: {what} {k + 1}/{kills}: first write {ms:,.0f} ms")

            self._each(kill)
        self._each(lambda system: system.wait_healthy())
        for system, found in times.items():
            if system in self.active:
                self.results.put(system.column, f"{key}/median", statistics.median(found))
                self.results.put(system.column, f"{key}/max", max(found))

    def _memory(self, system: System) -> None:
        s = self.settings
        self.progress(f"{system.name}: loading {s.keys:,} keys of {s.value_bytes} B")
        retried = load_keys(system, s.keys, s.value_bytes)
        if retried:
            self.progress(f"{system.name}: {retried} refused load requests retried")
        system.wait_healthy()
        rss = largest_rss_mb(system)
        self.results.put(system.column, "rss/after", rss)
        self.progress(f"{system.name}: RSS after the run plus {s.keys:,} keys: {rss:.1f} MiB")

    def _fresh_memory(self, system: System) -> None:
        """The keys alone: a fresh 3-member cluster loaded with them (its dedup window then
        holds only the load's own request ids, one per hundred keys: under a MiB)."""
        s = self.settings
        cluster = system.another()
        try:
            self.progress(f"{system.name}: a fresh cluster, loading {s.keys:,} keys")
            cluster.start(3)
            load_keys(cluster, s.keys, s.value_bytes)
            cluster.wait_healthy()
            rss = largest_rss_mb(cluster)
        finally:
            cluster.stop()
        self.results.put(system.column, "rss/keys", rss)
        self.progress(f"{system.name}: RSS with {s.keys:,} keys, fresh cluster: {rss:.1f} MiB")

    def _five_against_three(self, system: System) -> None:
        """A fresh 3-member and a fresh 5-member cluster of one system, both running, measured
        in alternation (``rounds`` times each) at the top client count."""
        s = self.settings
        top = max(s.clients)
        clusters = {3: system.another(), 5: system.another()}
        found: dict[int, list[Figures]] = {3: [], 5: []}
        try:
            for members, cluster in clusters.items():
                self.progress(f"{system.name}: starting a fresh cluster of {members} members")
                cluster.start(members)
                measure(cluster, cluster.paths()[0], "write", top, s.warmup_seconds)
            for _ in range(s.rounds):
                for members, cluster in clusters.items():
                    path = cluster.paths()[0]
                    figures = measure(cluster, path, "write", top, s.seconds)
                    found[members].append(figures)
                    who = plural(top, "client")
                    self.progress(
                        f"{system.name}: {members} members, {path.label}, {who}: {show(figures)}"
                    )
        finally:
            for cluster in clusters.values():
                cluster.stop()
        three, five = combine(found[3]), combine(found[5])
        self.results.put(system.column, "five/three_rate", three.rate)
        self.results.put(system.column, "five/rate", five.rate)
        self.results.put(system.column, "five/ratio", five.rate / three.rate)
