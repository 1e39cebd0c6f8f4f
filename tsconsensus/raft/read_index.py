"""ReadIndex on the leader: reads wait for a heartbeat round acknowledged by a majority.

A read is recorded with the commit index at the moment its round starts (never earlier than
the moment it arrived). Reads that arrive together share one round. A round is confirmed once
a majority of voters has acknowledged a heartbeat carrying that round's id or a later one (a
later round started later, so it confirms leadership after the earlier one started too). No
clocks, no leases. Pure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Round:
    id: int
    index: int
    reads: list[tuple[int, int]] = field(default_factory=list)  # (context, requester)


class ReadRounds:
    """Pending reads and heartbeat rounds of one leader term."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, int]] = []
        self._rounds: deque[_Round] = deque()
        self._acked: dict[int, int] = {}  # member -> highest round id acknowledged
        self.last_round = 0

    def add(self, context: int, requester: int) -> None:
        """Queue a read; it joins the next round to start."""
        self._waiting.append((context, requester))

    @property
    def has_waiting(self) -> bool:
        return bool(self._waiting)

    def start_round(self, index: int) -> int:
        """Start a round for every waiting read, at read index ``index``; its id."""
        self.last_round += 1
        self._rounds.append(_Round(self.last_round, index, self._waiting))
        self._waiting = []
        return self.last_round

    def ack(self, member: int, round_id: int) -> None:
        if round_id > self._acked.get(member, 0):
            self._acked[member] = round_id

    def confirmed(self, voters: frozenset[int], quorum: int) -> list[tuple[int, int, int]]:
        """Reads whose round a majority of ``voters`` acknowledged: (context, requester,
        read index), in arrival order; they leave the table."""
        out: list[tuple[int, int, int]] = []
        while self._rounds:
            r = self._rounds[0]
            acks = sum(1 for v in voters if self._acked.get(v, 0) >= r.id)
            if acks < quorum:
                break
            self._rounds.popleft()
            out.extend((ctx, who, r.index) for ctx, who in r.reads)
        return out

    def drain(self, on_read: Callable[[int, int], None]) -> None:
        """Give up every read (leadership lost): ``on_read(context, requester)`` for each."""
        for r in self._rounds:
            for ctx, who in r.reads:
                on_read(ctx, who)
        for ctx, who in self._waiting:
            on_read(ctx, who)
        self._rounds.clear()
        self._waiting = []
