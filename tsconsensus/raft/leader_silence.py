"""How long a follower goes without a word from its leader, and how late its own loop ran.

A follower that hears nothing from its leader for half an election timeout is close to an
election. Such a silence has two causes that look alike from the follower: the leader or the
network went quiet, or the follower's own loop did not run (a starved CPU, a stalled process;
its election timer did not run either, so it was in less danger than the gap says). The
warning names both figures, so that an operator, or a failed test, can tell which it was.

Loop thread only; ``now`` values come from ``time.monotonic()``.
"""

from __future__ import annotations

import logging

log = logging.getLogger("tsconsensus.raft")


class LeaderSilence:
    """Times of the last message from each member, and the longest silence of a followed
    leader (:attr:`longest`, in seconds). Warns when a silence exceeds ``warn_after_s``."""

    def __init__(self, warn_after_s: float) -> None:
        self.warn_after_s = warn_after_s
        self.heard: dict[int, float] = {}
        """member -> when a message from it last arrived."""
        self.longest = 0.0
        self._late = 0.0  # how late this node's ticks ran since the last word from its leader

    def ticked(self, late_s: float) -> None:
        """A tick ran ``late_s`` seconds after it was due (its loop was busy or not running)."""
        if late_s > self._late:
            self._late = late_s

    def heard_from(self, member: int, now: float, *, leader: bool) -> None:
        """A message from ``member`` arrived at ``now``; ``leader``: this node follows it."""
        last = self.heard.get(member)
        self.heard[member] = now
        if not leader:
            return
        late, self._late = self._late, 0.0
        if last is None or now - last <= self.longest:
            return
        self.longest = now - last
        if self.longest > self.warn_after_s:
            log.warning(
                "heard nothing from the leader %016x for %.3fs (half an election timeout is "
                "%.3fs); meanwhile this node's own loop ran up to %.3fs late",
                *(member, self.longest, self.warn_after_s, late),
            )
