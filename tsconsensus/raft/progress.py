"""What the leader knows of each follower's log, and how it paces sending to it. Pure."""

from __future__ import annotations

import enum
from collections import deque

from .messages import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"
    """Unknown where the follower's log matches: one append at a time, stepping back on
    rejection."""
    REPLICATE = "replicate"
    """Matching: appends are pipelined, up to a number in flight."""
    SNAPSHOT = "snapshot"
    """The entries it needs are compacted away: a snapshot is being sent in chunks."""


class Progress:
    """The leader's view of one follower. ``match`` never moves backwards within a term."""

    def __init__(self, next_index: int, max_inflight: int, *, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()  # last index of each append in flight, ascending
        self.probe_sent = False
        self.recent_active = False
        self.is_learner = is_learner
        # snapshot transfer
        self.snapshot: Snapshot | None = None
        self.snap_sent = 0
        self.snap_acked = 0
        self.snap_idle_ticks = 0
        self.snap_chunks_sent = 0
        self.sent_commit = 0
        self.stalled_rounds = 0  # heartbeat rounds answered while nothing was acknowledged

    def __repr__(self) -> str:
        return f"Progress({self.state.value} match={self.match} next={self.next})"

    @property
    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT and self.snapshot is not None:
            # after a snapshot the follower holds at least the snapshot's index
            self.next = max(self.match, self.snapshot.meta.index) + 1
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.stalled_rounds = 0
        self.inflight.clear()
        self.snapshot = None
        self.snap_sent = self.snap_acked = self.snap_idle_ticks = self.snap_chunks_sent = 0

    def sent_entries(self, last: int) -> None:
        """Entries up to ``last`` were sent in one append."""
        if self.state is ProgressState.REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A successful acknowledgement up to ``index``; False if it tells nothing new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
            self.stalled_rounds = 0
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, probe_at: int) -> bool:
        """A rejection of the append whose previous index was ``rejected``; ``probe_at`` is
        where the logs may match. False for a stale rejection (one already superseded)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, probe_at + 1), self.match + 1)
        self.probe_sent = False
        return True
