"""A node's metrics, rendered in the Prometheus text exposition format (``GET /metrics``).

Counters and the latency histogram are updated from any thread (one lock); gauges are read from
the node's status when the page is rendered. No third-party client library is needed.

Command names come from callers, so the ``name`` label is bounded and made safe before it is
counted: at most :data:`MAX_LABEL_CHARS` characters (longer names are cut and end in ``...``),
lone surrogates and other text that is not valid UTF-8 written as ``\\uXXXX`` escapes, and at most
:data:`MAX_NAMES` distinct values; commands under any further name are counted as ``other``.
The page therefore stays small and parseable whatever the names (ten 1 MB names add ten short
lines).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

from .types import NodeStatus, RaftState

MAX_NAMES = 100
"""Distinct command names counted; further ones are counted as "other" (bounded cardinality)."""
MAX_LABEL_CHARS = 64
"""Longest ``name`` label value, in characters, before escaping."""
OTHER = "other"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def label_value(name: str) -> str:
    """``name`` as a bounded label value that is valid UTF-8 (not yet escaped for the page)."""
    if len(name) > MAX_LABEL_CHARS:
        name = name[: MAX_LABEL_CHARS - 3] + "..."
    if name.isascii():
        return name
    # A lone surrogate (JSON "\\ud800" decodes to one) cannot be encoded as UTF-8.
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _escape(value: str) -> str:
    """The text format's escapes for a label value: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """What one node counts. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executed: defaultdict[str, int] = defaultdict(int)
        self.failed: defaultdict[str, int] = defaultdict(int)
        self.rejected = 0
        self.forwarded = 0
        self.elections = 0
        self.leader_changes = 0
        self._buckets = [0] * len(LATENCY_BUCKETS_S)
        self._latency_sum = 0.0
        self._latency_count = 0

    def command_done(self, name: str, seconds: float, *, failed: bool, forwarded: bool) -> None:
        """One execute finished on this node (``failed``: the state machine returned an error)."""
        name = label_value(name)
        with self._lock:
            if name not in self.executed and len(self.executed) >= MAX_NAMES:
                name = OTHER
            self.executed[name] += 1
            if failed:
                self.failed[name] += 1
            if forwarded:
                self.forwarded += 1
            i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
            if i < len(self._buckets):
                self._buckets[i] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def command_rejected(self) -> None:
        """One execute ended without an outcome (no leader, timeout, invalid)."""
        with self._lock:
            self.rejected += 1

    def state_changed(self, old: RaftState, new: RaftState) -> None:
        with self._lock:
            if new is RaftState.CANDIDATE:
                self.elections += 1
            if RaftState.LEADER in (old, new):
                self.leader_changes += 1

    def render(self, status: NodeStatus) -> str:
        """The whole page, gauges taken from ``status``."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        gauges = [
            ("tsc_raft_term", "Current Raft term.", status.term),
            (
                "tsc_raft_commit_index",
                "Highest log index known to be committed.",
                status.commit_index,
            ),
            (
                "tsc_raft_applied_index",
                "Highest log index applied on this node.",
                status.applied_index,
            ),
            (
                "tsc_raft_leader",
                "1 if this node is the leader.",
                int(status.state is RaftState.LEADER),
            ),
            (
                "tsc_raft_has_quorum",
                "1 if this node sees a majority of members.",
                int(status.has_quorum),
            ),
            ("tsc_raft_members", "Members of the Raft configuration.", len(status.members)),
            (
                "tsc_raft_snapshot_index",
                "Log index covered by this node's latest durable snapshot (0: none).",
                status.snapshot_index,
            ),
            (
                "tsc_raft_members_connected",
                "Members this node is connected to.",
                sum(m.connected for m in status.members),
            ),
        ]
        for name, help_text, value in gauges:
            family(name, "gauge", help_text)
            lines.append(f"{name} {value}")
        with self._lock:
            family("tsc_commands_total", "counter", "Commands executed through this node.")
            for name, count in sorted(self.executed.items()):
                lines.append(f'tsc_commands_total{{name="{_escape(name)}"}} {count}')
            family(
                "tsc_commands_failed_total", "counter", "Commands whose apply returned an error."
            )
            for name, count in sorted(self.failed.items()):
                lines.append(f'tsc_commands_failed_total{{name="{_escape(name)}"}} {count}')
            counters = [
                (
                    "tsc_commands_rejected_total",
                    "Executes that ended without an outcome (no leader, timeout, invalid).",
                    self.rejected,
                ),
                (
                    "tsc_commands_forwarded_total",
                    "Commands this node forwarded to the leader (it was not the leader).",
                    self.forwarded,
                ),
                ("tsc_elections_total", "Elections this node started.", self.elections),
                (
                    "tsc_leadership_changes_total",
                    "Times this node gained or lost leadership.",
                    self.leader_changes,
                ),
            ]
            for name, help_text, count in counters:
                family(name, "counter", help_text)
                lines.append(f"{name} {count}")
            family(
                "tsc_execute_latency_seconds", "histogram", "Time to commit and apply an execute."
            )
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS_S, self._buckets, strict=True):
                cumulative += count
                lines.append(f'tsc_execute_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
            lines.append(f'tsc_execute_latency_seconds_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"tsc_execute_latency_seconds_sum {self._latency_sum}")
            lines.append(f"tsc_execute_latency_seconds_count {self._latency_count}")
        return "\n".join(lines) + "\n"
