"""The state every part of the Raft core shares, and the small operations on it.

:class:`CoreState` holds one member's whole Raft state; the leader's side
(:mod:`.replication`) and the rest (:mod:`.core`) are written as methods over it. Pure.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from .codec import membership_from_bytes
from .config import CoreConfig
from .log import RaftLog
from .messages import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)
from .progress import Progress
from .read_index import ReadRounds
from .snapshot_transfer import SnapshotReceiver

MT = MessageType


@dataclass(frozen=True)
class InitialState:
    """What a node's storage held when it (re)started."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


class CoreState:
    """One member's Raft state. Single-threaded."""

    def __init__(self, config: CoreConfig, state: InitialState, rng: random.Random) -> None:
        self.config = config.validate()
        self.id = config.id
        self.cluster_id = config.cluster_id
        self._rng = rng
        hs = state.hard_state
        self.term, self.vote = hs.term, hs.vote
        snap = state.snapshot
        if snap is not None:
            self.log = RaftLog(snap.meta.index, snap.meta.term, (), snap.meta.time)
            self._configs: list[tuple[int, Membership]] = [(snap.meta.index, snap.meta.membership)]
        else:
            self.log = RaftLog()
            self._configs = [(0, Membership())]
        self.snapshot = snap
        self.progress: dict[int, Progress] = {}
        self._follower_order: tuple[int, ...] | None = None  # sorted progress keys but self
        self.role = Role.FOLLOWER
        self._dirty_from = self.log.last_index + 1
        self.stable_index = self.log.last_index
        self._append_local(state.entries)
        self.commit = min(max(hs.commit, self.log.offset), self.log.last_index)
        self.stable_index = self.log.last_index
        self._durable_term = self.term
        self._dirty_from = self.log.last_index + 1
        self._handed = self.log.offset  # last index handed out for applying
        self._handed_bytes = 0  # bytes of the entries handed out since the last snapshot
        self.leader = NONE
        self._votes: dict[int, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self.transferee = NONE
        self._transfer_elapsed = 0
        self._uncommitted_bytes = 0
        self._reads = ReadRounds()
        self._receiver = SnapshotReceiver()
        self._leader_ticks = 0
        self._time_base = 0
        self._commit_sent = 0
        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads_dropped: list[int] = []
        # a follower's reads: asked since the last output, then in flight at the leader as
        # one READ_INDEX per batch (one message for all the reads of a loop turn)
        self._reads_unsent: list[int] = []
        self._read_batches: dict[int, tuple[int, list[int]]] = {}  # id -> (sent at, reads)
        self._read_batch_id = 0
        self._ticks = 0
        self._install: Snapshot | None = None
        self._last_hs = hs
        self._last_soft = SoftState(NONE, Role.FOLLOWER, self.term)
        self._snapshot_asked = False
        self._outstanding: Ready | None = None

    # -- views -------------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest one in the log (committed or not)."""
        return self._configs[-1][1]

    def membership_at(self, index: int) -> Membership:
        found = self._configs[0][1]
        for at, m in self._configs:
            if at > index:
                break
            found = m
        return found

    def _followers_in_order(self) -> tuple[int, ...]:
        """The leader's progress table's members other than itself, in id order (a
        deterministic order for a replayable run; cached until the table changes)."""
        order = self._follower_order
        if order is None:
            order = self._follower_order = tuple(m for m in sorted(self.progress) if m != self.id)
        return order

    def _promotable(self) -> bool:
        return self.membership.is_voter(self.id)

    def _random_timeout(self) -> int:
        return self._rng.randrange(self.config.election_ticks_min, self.config.election_ticks_max)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term, self.vote = term, NONE
        self.leader = NONE
        self._election_elapsed = self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._votes = {}
        self.transferee = NONE
        if self.role is Role.LEADER:
            self._reads.drain(self._drop_read)
        self._reads = ReadRounds()
        # the leader they were meant for is gone: their callers retry
        for _, batch in self._read_batches.values():
            self._reads_dropped.extend(batch)
        self._reads_dropped.extend(self._reads_unsent)
        self._read_batches, self._reads_unsent = {}, []
        self.progress = {}
        self._follower_order = None
        self._uncommitted_bytes = 0

    def _drop_read(self, context: int, requester: int) -> None:
        if requester == self.id:
            self._reads_dropped.append(context)
        else:
            self._refuse_read(requester, context)

    def _refuse_read(self, to: int, context: int) -> None:
        """Tell ``to`` that its read batch ``context`` will not be answered: it retries."""
        self._send(
            Message(
                MT.READ_INDEX_RESP, to=to, frm=self.id, term=self.term, context=context, reject=True
            )
        )

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    # -- log changes -------------------------------------------------------------------------

    def _append_local(self, entries: Iterable[Entry]) -> None:
        batch = list(entries)
        if not batch:
            return
        self.log.append(batch)
        self._dirty_from = min(self._dirty_from, batch[0].index)
        changed = False
        for e in batch:
            if e.kind is EntryKind.MEMBERSHIP:
                try:
                    self._configs.append((e.index, membership_from_bytes(e.data)))
                    changed = True
                except ValueError:
                    pass  # an undecodable configuration never came from a real leader
        if changed:
            self._membership_changed()

    def _truncate(self, index: int) -> None:
        self.log.truncate_from(index)
        self._dirty_from = min(self._dirty_from, index)
        self.stable_index = min(self.stable_index, index - 1)
        changed = False
        while len(self._configs) > 1 and self._configs[-1][0] >= index:
            self._configs.pop()
            changed = True
        if changed:
            self._membership_changed()

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    def _membership_changed(self) -> None:
        """Keep the leader's progress table in step with the configuration in force."""
        if self.role is not Role.LEADER:
            return
        members = self.membership.members
        self._follower_order = None
        for gone in set(self.progress) - members:
            del self.progress[gone]
        for m in sorted(members):
            pr = self.progress.get(m)
            if pr is None:
                pr = Progress(self.log.last_index + 1, self.config.max_inflight)
                self.progress[m] = pr
            pr.is_learner = m in self.membership.learners
        if self.transferee not in members:
            self.transferee = NONE

    # -- output ---------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.type in (MT.APPEND_RESP, MT.VOTE_RESP) or (
            m.type not in (MT.PRE_VOTE, MT.PRE_VOTE_RESP) and m.term != self._durable_term
        ):
            self._msgs_after.append(m)
        else:
            self._msgs.append(m)

    def _states_unchanged(self) -> bool:
        """Whether the hard and soft state are what the last Ready reported."""
        hs, soft = self._last_hs, self._last_soft
        return (
            hs.term == self.term
            and hs.vote == self.vote
            and hs.commit == self.commit
            and soft.leader == self.leader
            and soft.role is self.role
            and soft.term == self.term
        )

    def _snapshot_due(self, handing: int, handed_bytes: int) -> bool:
        """Whether the log, with ``handing`` more entries handed out (``handed_bytes`` in
        all), has grown past the compaction thresholds and no snapshot is asked for yet."""
        if self._snapshot_asked or self._install is not None:
            return False
        base = self.snapshot.meta.index if self.snapshot is not None else 0
        last_size = len(self.snapshot.data) if self.snapshot is not None else 0
        return (
            self._handed + handing - base >= self.config.snapshot_entries
            or handed_bytes >= max(self.config.snapshot_bytes, last_size)
        )
