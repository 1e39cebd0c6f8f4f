"""The leader's side of the core: proposals, pipelined replication, commit, heartbeats,
CheckQuorum, ReadIndex rounds, snapshots to lagging followers. Pure; methods of the core."""

from __future__ import annotations

from ..errors import ProposalRefusedError
from ._base import MT, CoreState
from .codec import encode_membership
from .messages import (
    COMMIT_NOTICE,
    ENTRY_OVERHEAD,
    NONE,
    Entry,
    EntryKind,
    MembershipChange,
    MembershipOp,
    Message,
    ReadState,
    Role,
)
from .progress import Progress, ProgressState
from .snapshot_transfer import chunk_message


class Replication(CoreState):
    """Leader behaviour over :class:`CoreState`."""

    # -- becoming leader ------------------------------------------------------------------------

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._leader_ticks = 0
        self._time_base = self.log.last_time
        self._membership_changed()
        for pr in self.progress.values():
            pr.recent_active = True
        # an entry of its own term, so it can commit (and learn the commit index) at once
        self._leader_append(EntryKind.NOOP, b"")

    def _now(self) -> int:
        return self._time_base + self._leader_ticks * self.config.tick_ms

    def _leader_append(self, kind: EntryKind, data: bytes) -> Entry:
        e = Entry(
            self.log.last_index + 1, self.term, kind, data, max(self.log.last_time, self._now())
        )
        self._append_local([e])
        self._uncommitted_bytes += e.size
        return e

    def _check_can_propose(self, size: int) -> None:
        if self.role is not Role.LEADER:
            raise ProposalRefusedError("not-leader", "this node is not the leader", self.leader)
        if self.transferee != NONE:
            raise ProposalRefusedError(
                "transferring", "leadership is being handed over", self.leader
            )
        if size + ENTRY_OVERHEAD > self.config.max_entry_bytes:
            raise ProposalRefusedError(
                "too-large",
                f"entry of {size} bytes exceeds the limit of "
                f"{self.config.max_entry_bytes - ENTRY_OVERHEAD}",
                self.id,
            )
        if (
            self._uncommitted_bytes > 0
            and self._uncommitted_bytes + size + ENTRY_OVERHEAD > self.config.max_uncommitted_bytes
        ):
            raise ProposalRefusedError(
                "overloaded",
                f"{self._uncommitted_bytes} bytes are waiting to commit; try again shortly",
                self.id,
            )

    # -- time ----------------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self._leader_ticks += 1
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self.transferee != NONE:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks_min:
                self.transferee = NONE  # the target did not take over in time: carry on
        if self._election_elapsed >= self.config.election_ticks_min:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            for pr in self.progress.values():
                pr.recent_active = False
        for to, pr in self.progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snap_idle_ticks += 1
                if pr.snap_idle_ticks >= self.config.election_ticks_min:
                    pr.become_probe()  # transfer stalled: find out where the follower is
                    self._send_append(to, empty=True)
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads.last_round)

    def _quorum_active(self) -> bool:
        active = 0
        for v in self.membership.voters:
            pr = self.progress.get(v)
            if v == self.id or (pr is not None and pr.recent_active):
                active += 1
        return active >= self.membership.quorum()

    def _broadcast_heartbeat(self, round_id: int) -> None:
        for to in sorted(self.progress):
            if to == self.id:
                continue
            pr = self.progress[to]
            self._send(
                Message(
                    MT.HEARTBEAT,
                    to=to,
                    frm=self.id,
                    term=self.term,
                    commit=min(pr.match, self.commit),
                    context=round_id,
                )
            )

    # -- messages ------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if m.type is MT.READ_INDEX:
            if pr is None:
                self._refuse_read(m.frm, m.context)
            else:
                self._reads.add(m.context, m.frm)
            return
        if pr is None or m.frm == self.id:
            return
        pr.recent_active = True
        if m.type is MT.APPEND_RESP:
            self._handle_append_resp(m, pr)
        elif m.type is MT.HEARTBEAT_RESP:
            if pr.state is ProgressState.PROBE:
                pr.probe_sent = False
            elif pr.state is ProgressState.REPLICATE and pr.inflight:
                # alive but acknowledging nothing for two rounds: appends were lost (or it
                # restarted); go back to probing from what it acknowledged
                pr.stalled_rounds += 1
                if pr.stalled_rounds >= 2:
                    pr.become_probe()
            if pr.is_learner is False:
                self._reads.ack(m.frm, m.context)
                self._release_reads()
        elif m.type is MT.SNAPSHOT_RESP:
            self._handle_snapshot_resp(m, pr)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            probe_at = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease(m.index, probe_at):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm, empty=True)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is not ProgressState.REPLICATE:
            pr.become_replicate()
        self._maybe_commit()
        if m.frm == self.transferee and pr.match == self.log.last_index:
            self._send(Message(MT.TIMEOUT_NOW, to=m.frm, frm=self.id, term=self.term))

    def _handle_snapshot_resp(self, m: Message, pr: Progress) -> None:
        snap = pr.snapshot
        if pr.state is not ProgressState.SNAPSHOT or snap is None or m.index != snap.meta.index:
            return
        pr.snap_idle_ticks = 0
        if m.reject:
            pr.snap_acked = pr.snap_sent = m.offset
            pr.snap_chunks_sent = 0
        else:
            pr.snap_acked = max(pr.snap_acked, m.offset)
            pr.snap_sent = max(pr.snap_sent, pr.snap_acked)
        self._send_snapshot_chunks(m.frm, pr)

    # -- sending -------------------------------------------------------------------------------

    def _send_append(self, to: int, *, empty: bool, notice: bool = False) -> bool:
        """Send ``to`` its next entries (or an empty append if ``empty``; marked as a commit
        notice if ``notice``, which a follower that matches does not answer); whether entries
        went out."""
        pr = self.progress[to]
        if pr.is_paused:
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            if prev < self.log.offset:
                self._start_snapshot(to, pr)
            else:
                pr.next = self.log.last_index + 1
            return False
        entries = self.log.entries(pr.next, self.log.last_index + 1, self.config.max_batch_bytes)
        if not entries and not empty:
            return False
        self._send(
            Message(
                MT.APPEND,
                to=to,
                frm=self.id,
                term=self.term,
                index=prev,
                log_term=prev_term,
                entries=tuple(entries),
                commit=self.commit,
                context=COMMIT_NOTICE if notice and not entries else 0,
            )
        )
        pr.sent_commit = self.commit
        if entries:
            pr.sent_entries(entries[-1].index)
            return True
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return False

    def _start_snapshot(self, to: int, pr: Progress) -> None:
        if self.snapshot is None:
            return  # cannot happen: the log is compacted only behind a snapshot
        pr.become_snapshot(self.snapshot)
        self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: int, pr: Progress) -> None:
        snap = pr.snapshot
        if snap is None:
            return
        size, chunk = len(snap.data), self.config.snapshot_chunk_bytes
        while pr.snap_sent - pr.snap_acked < chunk * self.config.snapshot_chunks_inflight:
            if pr.snap_sent >= size and (size > 0 or pr.snap_chunks_sent > 0):
                break
            msg = chunk_message(snap, pr.snap_sent, chunk, to=to, frm=self.id, term=self.term)
            pr.snap_sent += len(msg.data)
            pr.snap_chunks_sent += 1
            self._send(msg)

    def _prepare_leader(self) -> None:
        """Before output: start a read round for waiting reads, send every follower what it
        lacks (batched, pipelined), carry a new commit index, promote a caught-up learner."""
        own_term_committed = self.log.term(self.commit) == self.term
        if self._reads.has_waiting and own_term_committed:
            round_id = self._reads.start_round(self.commit)
            self._reads.ack(self.id, round_id)
            if len(self.membership.voters) > 1:
                self._broadcast_heartbeat(round_id)
            self._release_reads()
        last = self.log.last_index
        commit = self.commit
        progress = self.progress
        for to in self._followers_in_order():
            pr = progress[to]
            if pr.next == last + 1 and pr.state is ProgressState.REPLICATE:
                # it has been sent everything (what _send_append would find out the long way)
                if pr.sent_commit < commit:
                    self._send_append(to, empty=True, notice=True)
                continue
            sent = False
            while self._send_append(to, empty=False):
                sent = True
                if pr.next > last:
                    break  # all sent: another call would find nothing
            if sent:
                continue
            if pr.state is ProgressState.PROBE and pr.match < self.log.last_index:
                self._send_append(to, empty=True)  # find where its log matches ours
            elif pr.state is ProgressState.REPLICATE and pr.sent_commit < self.commit:
                # carry the new commit index; its answer would say nothing new (half the
                # messages of a lone client's command)
                self._send_append(to, empty=True, notice=True)
        if (
            self.membership.learners
            and self.config.auto_promote
            and own_term_committed
            and self.transferee == NONE
        ):
            self._maybe_promote()

    def _maybe_promote(self) -> None:
        if self._configs[-1][0] > self.commit:
            return
        for learner in sorted(self.membership.learners):
            pr = self.progress.get(learner)
            if pr is not None and pr.recent_active and pr.match >= self.commit:
                self._leader_append_membership(MembershipChange(MembershipOp.PROMOTE, learner))
                return

    def _leader_append_membership(self, change: MembershipChange) -> Entry:
        new = self.membership.apply(change)
        return self._leader_append(EntryKind.MEMBERSHIP, encode_membership(new))

    def most_caught_up_voter(self) -> int:
        """Leader: the voter other than itself with the highest match among those being
        replicated to (the one to hand leadership to); :data:`NONE` if there is none."""
        best = [
            (pr.match, m)
            for m, pr in self.progress.items()
            if m != self.id and self.membership.is_voter(m) and pr.state is ProgressState.REPLICATE
        ]
        return max(best)[1] if best else NONE

    # -- commit --------------------------------------------------------------------------------

    def _quorum_match(self) -> int:
        """The highest index durable on a majority of the voters (the leader counting itself
        only for what it has persisted)."""
        voters = self.membership.voters
        if not voters:
            return 0
        me, progress = self.id, self.progress
        matches = []
        for v in voters:
            if v == me:
                matches.append(self.stable_index)
            else:
                pr = progress.get(v)
                matches.append(0 if pr is None else pr.match)
        matches.sort()
        return matches[len(matches) - self.membership.quorum()]

    def _maybe_commit(self) -> None:
        n = self._quorum_match()
        # only an entry of its own term commits by counting copies (Raft section 5.4.2)
        if n > self.commit and self.log.term(n) == self.term:
            self._commit_through(n)

    def _commit_through(self, n: int) -> None:
        for e in self.log.entries(self.commit + 1, n + 1):
            self._uncommitted_bytes -= e.size
        self._uncommitted_bytes = max(self._uncommitted_bytes, 0)
        self.commit = n
        if not self.membership.is_voter(self.id) and self._configs[-1][0] <= n:
            self._hand_over_after_removal()

    def _hand_over_after_removal(self) -> None:
        """This leader's own removal committed: tell the most up-to-date voter to campaign at
        once, then stop leading."""
        best = [
            v
            for v in sorted(self.membership.voters)
            if v in self.progress and self.progress[v].match == self.log.last_index
        ]
        if best:
            self._send(Message(MT.TIMEOUT_NOW, to=best[0], frm=self.id, term=self.term))
        self._become_follower(self.term, NONE)

    def _leader_advanced(self) -> None:
        self._maybe_commit()
        self._release_reads()

    def _release_reads(self) -> None:
        for ctx, who, index in self._reads.confirmed(
            self.membership.voters, self.membership.quorum()
        ):
            if who == self.id:
                self._read_states.append(ReadState(ctx, index))
            else:
                self._send(
                    Message(
                        MT.READ_INDEX_RESP,
                        to=who,
                        frm=self.id,
                        term=self.term,
                        context=ctx,
                        index=index,
                    )
                )
