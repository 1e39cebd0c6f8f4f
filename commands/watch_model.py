"""What ``tsc status --watch`` remembers between refreshes: command and commit rates and the p99
latency over the last seconds (from deltas of every member's ``/metrics``), the history of the
cluster's commit rate, when the leader last changed, and recent events found by comparing one
poll with the next (elections, a leader lost, joins, removals, snapshots, members that stop or
start answering). Pure: it is fed views (:func:`.gather.gather`) and times, and does no IO."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

COMMANDS = "tsc_commands_total"
LATENCY_BUCKET = "tsc_execute_latency_seconds_bucket"


@dataclass(frozen=True)
class Event:
    at: float
    """Wall-clock time (seconds since the epoch) of the poll that found it."""
    kind: str
    """watching, election, no-leader, joined, removed, unreachable, answers, snapshot, no-answer"""
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class Rates:
    """Over the last ``window_s`` seconds (``None`` until two polls have been compared)."""

    window_s: float
    commands_per_s: float | None
    p99_s: float | None
    """``None`` also when no command finished in the window; ``math.inf`` past the last bucket."""
    commits_per_s: float | None

    def to_json(self) -> dict[str, Any]:
        p99 = self.p99_s
        return {
            "window_s": self.window_s,
            "commands_per_s": _round(self.commands_per_s),
            "p99_latency_s": None if p99 is None or math.isinf(p99) else round(p99, 6),
            "commits_per_s": _round(self.commits_per_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class _Step:
    """What changed between two polls."""

    at: float
    seconds: float
    commands: float
    buckets: dict[float, float]
    commits: int


def short(node_id: str | None) -> str:
    """A member id cut to 8 hex digits, for narrow screens."""
    return "-" if node_id is None else node_id[:8]


def counters(metrics: dict[str, float]) -> tuple[float, dict[float, float]]:
    """(commands executed through the node, cumulative latency buckets by upper bound)."""
    commands = sum(v for k, v in metrics.items() if k == COMMANDS or k.startswith(COMMANDS + "{"))
    buckets: dict[float, float] = {}
    for series, value in metrics.items():
        if series.startswith(LATENCY_BUCKET + "{"):
            bound = series.split('le="', 1)[1].split('"', 1)[0] if 'le="' in series else ""
            try:
                buckets[math.inf if bound == "+Inf" else float(bound)] = value
            except ValueError:
                continue
    return commands, buckets


def _increase(now: float, before: float | None) -> float:
    """A counter's increase; a counter that went down was reset (the node restarted)."""
    if before is None:
        return 0.0
    return now - before if now >= before else now


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated inside its bucket (as
    Prometheus's ``histogram_quantile``); ``None`` for an empty one."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower if lower > 0 else math.inf
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return math.inf


class Watch:
    """Feed it one view per refresh with :meth:`feed` (or :meth:`failed` when no member
    answered); read :attr:`view`, :meth:`rates`, :attr:`commit_history`, :attr:`events` and
    :meth:`leader_for`."""

    def __init__(self, *, window_s: float = 5.0, history: int = 120, events: int = 50) -> None:
        self.window_s = window_s
        self.view: dict[str, Any] | None = None
        self.error: str | None = None
        self.commit_history: deque[float] = deque(maxlen=history)
        self.events: deque[Event] = deque(maxlen=events)
        self.started: float | None = None
        self.leader_changed: float | None = None
        """Monotonic time of the last leader change seen (``None``: none since watching)."""
        self._steps: deque[_Step] = deque()
        self._last_poll: float | None = None
        self._counters: dict[str, tuple[float, dict[float, float]]] = {}
        self._commit: int | None = None
        self._last_leader: str | None = None
        """The last leader seen, across polls that saw none (an election's "was")."""

    # -- input -------------------------------------------------------------------------------

    def feed(self, view: dict[str, Any], now: float, wall: float) -> list[Event]:
        """Take one poll's view (``now``: monotonic seconds; ``wall``: epoch seconds); return
        the events it revealed."""
        if self.started is None:
            self.started = now
        events = list(self._compare(self.view, view, wall))
        if self.error is not None:
            self.error = None
        if self.view is not None and self.view.get("leader") != view.get("leader"):
            self.leader_changed = now
        self._count(view, now)
        self.view = _without_metrics(view)
        self.events.extend(events)
        return events

    def failed(self, error: str, now: float, wall: float) -> list[Event]:
        """No member answered this refresh; the last view stays, marked stale."""
        if self.started is None:
            self.started = now
        events = []
        if self.error is None:
            events.append(Event(wall, "no-answer", f"no member answers: {error}"))
        self.error = error
        self._last_poll = None  # the next answer starts a new interval
        self.events.extend(events)
        return events

    def _count(self, view: dict[str, Any], now: float) -> None:
        commands = 0.0
        buckets: dict[float, float] = {}
        for node in view["nodes"]:
            metrics = node.get("metrics")
            if metrics is None:
                continue
            total, cumulative = counters(metrics)
            before = self._counters.get(node["id"])
            commands += _increase(total, before[0] if before else None)
            for bound, count in cumulative.items():
                old = before[1].get(bound) if before else None
                buckets[bound] = buckets.get(bound, 0.0) + _increase(count, old)
            self._counters[node["id"]] = (total, cumulative)
        commit = max((n["commit_index"] for n in view["nodes"] if n.get("reachable")), default=None)
        commits = 0
        if commit is not None:
            if self._commit is not None:
                commits = max(0, commit - self._commit)
            self._commit = commit if self._commit is None else max(self._commit, commit)
        if self._last_poll is not None and now > self._last_poll:
            seconds = now - self._last_poll
            self._steps.append(_Step(now, seconds, commands, buckets, commits))
            self.commit_history.append(commits / seconds)
        self._last_poll = now
        while self._steps and self._steps[0].at <= now - self.window_s:
            self._steps.popleft()

    # -- events ------------------------------------------------------------------------------

    def _compare(
        self, before: dict[str, Any] | None, after: dict[str, Any], wall: float
    ) -> Iterable[Event]:
        leader, term = after.get("leader"), after.get("term")
        if before is None:
            self._last_leader = leader
            members = len(after["nodes"])
            yield Event(
                wall,
                "watching",
                f"watching {members} members; leader {short(leader)}, term {term}",
            )
            return
        if leader != before.get("leader"):
            if leader is None:
                yield Event(wall, "no-leader", f"no leader (term {term})")
            else:
                old = self._last_leader
                was = f" (was {short(old)})" if old and old != leader else ""
                yield Event(wall, "election", f"election: {short(leader)} leads, term {term}{was}")
        self._last_leader = leader or self._last_leader
        old_nodes = {n["id"]: n for n in before["nodes"]}
        new_nodes = {n["id"]: n for n in after["nodes"]}
        for node_id, node in new_nodes.items():
            old = old_nodes.get(node_id)
            if old is None:
                yield Event(wall, "joined", f"joined: {short(node_id)} ({node['address']})")
                continue
            if old.get("reachable") and not node.get("reachable"):
                yield Event(wall, "unreachable", f"{short(node_id)} does not answer")
            elif node.get("reachable") and not old.get("reachable"):
                yield Event(wall, "answers", f"{short(node_id)} answers again")
            snap, old_snap = node.get("snapshot_index") or 0, old.get("snapshot_index") or 0
            if node.get("reachable") and old.get("reachable") and snap > old_snap:
                yield Event(wall, "snapshot", f"snapshot: {short(node_id)} at index {snap}")
        for node_id in old_nodes.keys() - new_nodes.keys():
            yield Event(wall, "removed", f"removed: {short(node_id)}")

    # -- output ------------------------------------------------------------------------------

    def rates(self) -> Rates:
        if not self._steps:
            return Rates(self.window_s, None, None, None)
        seconds = sum(s.seconds for s in self._steps)
        buckets: dict[float, float] = {}
        for step in self._steps:
            for bound, count in step.buckets.items():
                buckets[bound] = buckets.get(bound, 0.0) + count
        return Rates(
            self.window_s,
            sum(s.commands for s in self._steps) / seconds,
            quantile(0.99, buckets),
            sum(s.commits for s in self._steps) / seconds,
        )

    def leader_for(self, now: float) -> tuple[float, bool] | None:
        """(seconds the current leader has led, exact?): not exact when it led before the
        watch began (then: at least that long). ``None`` without a leader."""
        if self.view is None or self.view.get("leader") is None or self.started is None:
            return None
        if self.leader_changed is None:
            return now - self.started, False
        return now - self.leader_changed, True

    def to_json(self, new_events: list[Event], now: float, wall: float) -> dict[str, Any]:
        """One refresh for ``--watch --json``: the view, the rates and the new events."""
        led = self.leader_for(now)
        return {
            "time": round(wall, 3),
            **(self.view or {}),
            "stale": self.error is not None,
            "error": self.error,
            "rates": self.rates().to_json(),
            "leader_for_s": None if led is None else round(led[0], 1),
            "events": [e.to_json() for e in new_events],
        }


def _without_metrics(view: dict[str, Any]) -> dict[str, Any]:
    nodes = [{k: v for k, v in n.items() if k != "metrics"} for n in view["nodes"]]
    return {**view, "nodes": nodes}
