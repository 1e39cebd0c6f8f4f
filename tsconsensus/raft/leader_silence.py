"""How long a follower goes without a word from its leader, and how long its own loop stood.

A follower that hears nothing from its leader for half an election timeout is close to an
election. Such a silence has two causes that look alike from the follower: the leader or the
network went quiet, or the follower's own loop did not run (a starved CPU, a stalled process;
its election timer did not run either, so it was in less danger than the gap says). The
warning names both figures, so that an operator, or a failed test, can tell which it was.

How long the loop stood is read from the ticks: a tick that runs late shows that the loop
ran no timers from when it was due. After a stall asyncio handles the bytes that arrived
before the timers that fell due, so the message that ends a silence usually comes before the
late tick: the caller passes when the pending tick was due, and that counts too.

Loop thread only; every time is ``time.monotonic()`` (which ``loop.time()`` is).
"""

from __future__ import annotations

import logging

log = logging.getLogger("tsconsensus.raft")

NEVER = float("inf")


class LeaderSilence:
    """Times of the last message from each member (:attr:`heard`), and the longest silence of
    a followed leader (:attr:`longest`, in seconds, of any length). Warns when a new longest
    silence exceeds ``warn_after_s``."""

    def __init__(self, warn_after_s: float) -> None:
        self.warn_after_s = warn_after_s
        self.heard: dict[int, float] = {}
        """member -> when a message from it last arrived."""
        self.longest = 0.0
        self._leader: int | None = None  # the leader whose silences are measured now
        self._since = 0.0  # when its last message arrived
        self._stood = 0.0  # longest the loop ran no timers since then (from ticks that ran)

    def ticked(self, due: float, now: float) -> None:
        """A tick due at ``due`` ran at ``now``. Only the part after the last word from the
        leader counts: the loop ran when it handled that word."""
        stood = now - max(due, self._since)
        if stood > self._stood:
            self._stood = stood

    def follow(self, leader: int | None) -> None:
        """This node now follows ``leader``, or leads itself (None). A change ends the
        measured silence: the time this node led or followed another leader is no silence of
        the leader it follows afterwards (counted from its first word). Not called for a
        campaign: a silence that made this node campaign, and ends with the same leader
        speaking again, is the very silence to report."""
        if leader != self._leader:
            self._leader = None

    def heard_from(self, member: int, now: float, *, leader: bool, tick_due: float = NEVER) -> None:
        """A message from ``member`` arrived at ``now``. ``leader``: this node follows it.
        ``tick_due``: when the tick that has not run yet was due."""
        self.heard[member] = now
        if not leader:
            return
        if member != self._leader:
            # a new leader: its silences count from its first word to this node as leader
            self._leader, self._since, self._stood = member, now, 0.0
            return
        stood = max(self._stood, now - max(tick_due, self._since))
        gap = now - self._since
        self._since, self._stood = now, 0.0
        if gap <= self.longest:
            return
        self.longest = gap
        if gap > self.warn_after_s:
            log.warning(
                "heard nothing from the leader %016x for %.3fs (half an election timeout is "
                "%.3fs); meanwhile this node's own loop stood still for up to %.3fs",
                *(member, gap, self.warn_after_s, max(0.0, stood)),
            )
