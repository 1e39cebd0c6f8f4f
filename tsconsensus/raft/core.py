"""The Raft state machine, pure: no IO, no clock, no threads, randomness only from a passed-in
generator. A test can replay any run exactly from its inputs.

Inputs: :meth:`RaftCore.tick`, :meth:`RaftCore.step` (a message from another member),
:meth:`RaftCore.propose`, :meth:`RaftCore.propose_membership`,
:meth:`RaftCore.transfer_leadership`, :meth:`RaftCore.read_index`,
:meth:`RaftCore.snapshot_taken`. Output: :meth:`RaftCore.ready` returns a :class:`Ready`
batch; the driver persists and sends what it says, then calls :meth:`RaftCore.advance`.

Choices this core makes (tests pin each one down):
- PreVote and CheckQuorum are on; a follower that heard from a live leader within the minimum
  election timeout ignores vote requests (leader stickiness) unless they follow a TimeoutNow.
- A configuration takes effect as soon as its entry is *appended* to a log (not when it
  commits), as in the Raft dissertation's single-server changes; a truncated configuration
  entry rolls the configuration back. The leader proposes a change only after an entry of its
  own term has committed and while no configuration entry in its log is uncommitted.
- A copy counts toward commit once its node reports it durable: followers acknowledge only in
  ``messages_after_persist``, and the leader counts itself only after :meth:`advance`.
- Committed entries are handed out only once they are durable on this node.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ProposalRefusedError
from ._base import InitialState
from .codec import encode_membership
from .follower import FollowerSide
from .messages import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChange,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .progress import ProgressState
from .replication import Replication

MT = MessageType
_NOTHING = Ready()  # what ready() returns when there is nothing to do
CAMPAIGN_TRANSFER = 1
"""``context`` of a vote request sent after TimeoutNow: it overrides leader stickiness."""


def bootstrap_state(members: Mapping[int, str]) -> InitialState:
    """The identical first state of every founding member of a new cluster: entry 1 holds the
    founding voters. Persist it before building the core from it."""
    membership = Membership(frozenset(members), frozenset(), dict(members), frozenset())
    entry = Entry(1, 1, EntryKind.MEMBERSHIP, encode_membership(membership), 0)
    return InitialState(HardState(term=1, vote=NONE, commit=1), None, (entry,))


class RaftCore(Replication, FollowerSide):
    """One member's Raft state machine. Single-threaded: call it from one thread only.

    Raises :class:`~tsconsensus.errors.ProposalRefusedError` from the proposal methods when
    nothing was appended; never raises from :meth:`step` or :meth:`tick` on any message
    content (a message that makes no sense is dropped).
    """

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def applied_handed(self) -> int:
        """The last index handed out in ``Ready.committed`` (or restored from a snapshot)."""
        return self._handed

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The metadata of a snapshot taken after applying entry ``index``."""
        term = self.log.term(index)
        if term is None or index > self._handed:
            raise ValueError(f"no snapshot at {index}: not an applied entry in the log")
        time = self.log.entry(index).time if index > self.log.offset else self.log.offset_time
        return SnapshotMeta(index, term, self.membership_at(index), self.cluster_id, time)

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of time passed."""
        self._ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        if self._read_batches:
            self._expire_read_batches()
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` as a new entry; its (index, term). The entry is committed once an
        entry at that index with that term shows up in ``Ready.committed``."""
        self._check_can_propose(len(data))
        entry = self._leader_append(EntryKind.NORMAL, bytes(data))
        return entry.index, entry.term

    def propose_membership(self, change: MembershipChange) -> tuple[int, int]:
        """Append a single-server configuration change; its (index, term)."""
        self._check_can_propose(0)
        if self.log.term(self.commit) != self.term:
            raise ProposalRefusedError(
                "membership-pending", "no entry of this leader's term has committed yet", self.id
            )
        if self._configs[-1][0] > self.commit:
            raise ProposalRefusedError(
                "membership-pending", "a configuration change is still in progress", self.id
            )
        try:
            new = self.membership.apply(change)
        except ValueError as exc:
            raise ProposalRefusedError("invalid-membership", str(exc), self.id) from None
        entry = self._leader_append(EntryKind.MEMBERSHIP, encode_membership(new))
        return entry.index, entry.term

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target``: once it has every entry, tell it to campaign now.
        Proposals are refused meanwhile; the attempt ends after one election timeout."""
        if self.role is not Role.LEADER:
            raise ProposalRefusedError("not-leader", "not the leader", self.leader)
        if target == self.id:
            return
        if not self.membership.is_voter(target):
            raise ProposalRefusedError(
                "invalid-membership", f"member {target:016x} is not a voter", self.id
            )
        self.transferee, self._transfer_elapsed = target, 0
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self._send(Message(MT.TIMEOUT_NOW, to=target, frm=self.id, term=self.term))
        else:
            self._send_append(target, empty=True)

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read: a :class:`ReadState` with ``context`` comes out in a
        later Ready (answer once applied up to its index), or ``context`` in
        ``reads_dropped`` if this node cannot serve it (no leader, leadership lost)."""
        if self.role is Role.LEADER:
            self._reads.add(context, self.id)
        elif self.leader != NONE:
            self._reads_unsent.append(context)  # sent with the others of this turn
        else:
            self._reads_dropped.append(context)

    def report_unreachable(self, member: int) -> None:
        """The transport lost its connection to ``member``: stop pipelining to it."""
        pr = self.progress.get(member)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_down(self, member: int) -> None:
        """The transport saw ``member``'s process go away: its connection to us closed and a
        fresh dial was refused or dropped before the greeting. A follower whose leader that is
        does not wait out its election timeout: it forgets the leader (so it no longer defends
        that leader's lease against other members' pre-votes) and campaigns within a few
        ticks, the voters in the order of their ids one tick apart (the other followers learn
        it at the same moment, and their ticks may be in step: campaigning together would
        split the vote). Only timing depends on it: a false report costs at most an election."""
        if self.role is Role.FOLLOWER and member == self.leader != NONE:
            self.leader = NONE
            others = sorted(self.membership.voters - {member})
            rank = others.index(self.id) if self.id in others else len(others)
            wait = min(1 + rank, self.config.election_ticks_min)
            self._election_elapsed = max(self._election_elapsed, self._timeout - wait)

    def snapshot_taken(self, snapshot: Snapshot) -> None:
        """The layer above saved ``snapshot`` durably: keep it to send to followers that are
        too far behind, and compact the log behind it (keeping a tail)."""
        meta = snapshot.meta
        self._snapshot_asked = False
        if self.snapshot is not None and meta.index <= self.snapshot.meta.index:
            return
        if meta.index > self._handed or self.log.term(meta.index) != meta.term:
            raise ValueError(f"snapshot at {meta.index} is not of an applied entry")
        self.snapshot = snapshot
        after = self.log.entries(meta.index + 1, self._handed + 1)
        self._handed_bytes = sum(e.size for e in after)
        keep_from = self._keep_from(meta.index)
        if keep_from > self.log.offset:
            self.log.compact(keep_from)
            while len(self._configs) > 1 and self._configs[1][0] <= keep_from:
                self._configs.pop(0)

    def _keep_from(self, index: int) -> int:
        """Compact through the returned index: keep at most ``compaction_keep`` entries up to
        ``index``, and at most ``compaction_keep_bytes`` of them."""
        keep_from = max(index - self.config.compaction_keep, self.log.offset)
        kept, i = 0, index
        while i > keep_from:
            kept += self.log.entry(i).size
            if kept > self.config.compaction_keep_bytes:
                break
            i -= 1
        return i

    # -- messages ----------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message from another member."""
        if m.to != self.id or m.frm == self.id or m.frm == NONE:
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                forced = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.config.check_quorum
                    and self.leader != NONE
                    and self._election_elapsed < self.config.election_ticks_min
                )
                if in_lease and not forced:
                    return  # stickiness: a live leader is known, ignore the disruption
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never move anyone's term
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MT.APPEND, MT.HEARTBEAT):
                # a deposed leader: tell it our term so it steps down
                self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type is MT.PRE_VOTE:
                self._send(
                    Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True)
                )
            return
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MT.PRE_VOTE
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        grant = can_vote and self.log.is_up_to_date(m.index, m.log_term)
        resp_type = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        if grant:
            if not pre:
                self._election_elapsed = 0
                self.vote = m.frm
            self._send(Message(resp_type, to=m.frm, frm=self.id, term=m.term))
        else:
            self._send(Message(resp_type, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self._election_elapsed = 0
            self.leader = m.frm
            if m.type is MT.APPEND:
                self._handle_append(m)
            elif m.type is MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot_chunk(m)
        elif m.type is MT.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(transfer=True)
        elif m.type is MT.READ_INDEX_RESP:
            _, batch = self._read_batches.pop(m.context, (0, None))
            if batch is None:
                pass  # an answer to a batch already given up
            elif m.reject:
                self._reads_dropped.extend(batch)
            else:
                self._read_states.extend(ReadState(ctx, m.index) for ctx in batch)
        elif m.type is MT.READ_INDEX:
            self._refuse_read(m.frm, m.context)

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
            return
        if m.type is MT.READ_INDEX:
            self._refuse_read(m.frm, m.context)
            return
        pre = self.role is Role.PRE_CANDIDATE
        expected = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        if m.type is not expected:
            return
        if m.reject or m.term == (self.term + 1 if pre else self.term):
            self._votes.setdefault(m.frm, not m.reject)
        self._poll()

    def _poll(self) -> None:
        voters = self.membership.voters
        granted = sum(1 for v in voters if self._votes.get(v) is True)
        rejected = sum(1 for v in voters if self._votes.get(v) is False)
        quorum = self.membership.quorum()
        if granted >= quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(transfer=False)
            else:
                self._become_leader()
        elif rejected > len(voters) - quorum:
            self._become_follower(self.term, NONE)

    # -- roles -------------------------------------------------------------------------------

    def _hup(self, *, transfer: bool) -> None:
        if self.config.pre_vote and not transfer:
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            self._request_votes(MT.PRE_VOTE, self.term + 1, transfer=False)
        else:
            self._campaign(transfer=transfer)

    def _campaign(self, *, transfer: bool) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id
        self._request_votes(MT.VOTE, self.term, transfer=transfer)

    def _request_votes(self, kind: MessageType, term: int, *, transfer: bool) -> None:
        self._votes[self.id] = True
        for v in sorted(self.membership.voters - {self.id}):
            self._send(
                Message(
                    kind,
                    to=v,
                    frm=self.id,
                    term=term,
                    index=self.log.last_index,
                    log_term=self.log.last_term,
                    context=CAMPAIGN_TRANSFER if transfer else 0,
                )
            )
        self._poll()

    # -- output ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._reads_unsent:
            self._send_reads()
        if self.role is Role.LEADER:
            self._prepare_leader()

    def _expire_read_batches(self) -> None:
        """Give up reads the leader left unanswered for an election timeout (the message or
        its answer was lost): their callers retry rather than wait for their deadline."""
        limit = self.config.election_ticks_min
        for batch_id, (sent, batch) in list(self._read_batches.items()):
            if self._ticks - sent >= limit:
                del self._read_batches[batch_id]
                self._reads_dropped.extend(batch)

    def _send_reads(self) -> None:
        """A follower asks the leader once for every read asked since the last output (only
        reads asked while a leader was known are here: every change of leader or role goes
        through ``_reset``, which gives them up)."""
        batch, self._reads_unsent = self._reads_unsent, []
        self._read_batch_id += 1
        self._read_batches[self._read_batch_id] = (self._ticks, batch)
        self._send(
            Message(
                MT.READ_INDEX,
                to=self.leader,
                frm=self.id,
                term=self.term,
                context=self._read_batch_id,
            )
        )

    def take_messages(self) -> list[Message]:
        """Messages that may be sent at once, between :meth:`ready` and :meth:`advance` too
        (the leader's appends go out while its own write is still running)."""
        self._prepare()
        out, self._msgs = self._msgs, []
        return out

    def ready(self) -> Ready:
        """Everything to persist, send and apply now. A non-empty Ready must be handed back
        through :meth:`advance` before the next call."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        self._prepare()
        last = self.log.last_index
        if (
            self._dirty_from > last
            and not self._msgs
            and not self._msgs_after
            and not self._read_states
            and not self._reads_dropped
            and self._install is None
            and min(self.commit, self.stable_index) <= self._handed
            and self._states_unchanged()
            and not self._snapshot_due(0, self._handed_bytes)
        ):
            # the common answer (most calls follow a step that changed nothing to output):
            # the same as below, without building the records to compare
            self._dirty_from = last + 1
            return _NOTHING
        entries: tuple[Entry, ...] = ()
        if self._dirty_from <= last:
            entries = tuple(self.log.entries(self._dirty_from, last + 1))
        self._dirty_from = last + 1
        # Compared field by field and built only when changed: most Readies carry neither.
        term, vote, commit = self.term, self.vote, self.commit
        hs, hard_state = self._last_hs, None
        if hs.term != term or hs.vote != vote or hs.commit != commit:
            hs = hard_state = HardState(term, vote, commit)
        soft, soft_state = self._last_soft, None
        if soft.leader != self.leader or soft.role is not self.role or soft.term != term:
            soft = soft_state = SoftState(self.leader, self.role, term)
        upto = min(commit, self.stable_index)
        committed: tuple[Entry, ...] = ()
        handed_bytes = self._handed_bytes
        if upto > self._handed:
            committed = tuple(self.log.entries(self._handed + 1, upto + 1))
            handed_bytes += sum(e.size for e in committed)
        due = self._snapshot_due(len(committed), handed_bytes)
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=self._install,
            committed=committed,
            messages=tuple(self._msgs),
            messages_after_persist=tuple(self._msgs_after),
            read_states=tuple(self._read_states),
            reads_dropped=tuple(self._reads_dropped),
            soft_state=soft_state,
            snapshot_due=due,
            last_index=last if (entries or self._install) else 0,
            last_term=self.log.last_term,
        )
        if not rd:
            return rd
        self._handed += len(committed)
        self._handed_bytes = handed_bytes
        self._snapshot_asked = self._snapshot_asked or due
        self._last_hs, self._last_soft = hs, soft
        self._install = None
        self._msgs, self._msgs_after, self._read_states, self._reads_dropped = [], [], [], []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted ``rd`` (and sent its messages, handed out its entries)."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        if rd.hard_state is not None:
            self._durable_term = rd.hard_state.term
        if rd.last_index:
            # entries below the first index changed since this Ready are durable as written
            self.stable_index = max(self.stable_index, min(rd.last_index, self._dirty_from - 1))
        if self.role is Role.LEADER:
            self._leader_advanced()
