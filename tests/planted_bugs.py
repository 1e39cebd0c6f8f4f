"""Raft cores with one deliberate bug each: the simulator must catch every one of them.

A checker that never fails proves nothing; these show what the simulator's checks can see.
Test-only subclasses: the shipped core has no switches for any of this.
"""

from __future__ import annotations

from tsconsensus.raft import Message, MessageType, RaftCore, ReadState
from tsconsensus.raft.messages import Entry

MT = MessageType


class CommitsOldTerms(RaftCore):
    """Commits by counting copies of entries of any term (Raft's figure 8 bug)."""

    def _maybe_commit(self) -> None:
        n = self._quorum_match()
        if n > self.commit:
            self._commit_through(n)


class TruncatesOnEveryAppend(RaftCore):
    """Drops everything after the append's previous index, conflict or not (pysyncobj)."""

    def _handle_append(self, m: Message) -> None:
        if (
            m.index >= self.commit
            and self.log.term(m.index) == m.log_term
            and self.log.last_index > m.index
        ):
            self._truncate(m.index + 1)
        super()._handle_append(m)


class VotesBeforePersisting(RaftCore):
    """Sends its vote before the vote is on disk."""

    def _send(self, m: Message) -> None:
        if m.type is MT.VOTE_RESP:
            self._msgs.append(m)
        else:
            super()._send(m)


class AcknowledgesBeforePersisting(RaftCore):
    """A follower acknowledges entries before they are on disk."""

    def _send(self, m: Message) -> None:
        if m.type is MT.APPEND_RESP:
            self._msgs.append(m)
        else:
            super()._send(m)


class ReadsLocally(RaftCore):
    """Answers reads from its own state, without asking the leader or a quorum."""

    def read_index(self, context: int) -> None:
        self._read_states.append(ReadState(context, self.commit))


class CountsLearners(RaftCore):
    """Counts learners toward the commit majority."""

    def _quorum_match(self) -> int:
        members = sorted(self.membership.members)
        matches = sorted(
            self.stable_index if v == self.id else self.progress[v].match
            for v in members
            if v == self.id or v in self.progress
        )
        quorum = len(members) // 2 + 1
        return matches[len(matches) - quorum] if len(matches) >= quorum else 0


class ForgetsEntriesOnRestart(RaftCore):
    """Comes back from a restart without its last persisted entry (a WAL that lies)."""

    def __init__(self, config, state, rng):  # type: ignore[no-untyped-def]
        from tsconsensus.raft import InitialState

        entries: tuple[Entry, ...] = (
            state.entries[:-1] if state.hard_state.term > 1 else (state.entries)
        )
        super().__init__(config, InitialState(state.hard_state, state.snapshot, entries), rng)


PLANTED = {
    "commits-old-terms": CommitsOldTerms,
    "truncates-on-every-append": TruncatesOnEveryAppend,
    "votes-before-persisting": VotesBeforePersisting,
    "acknowledges-before-persisting": AcknowledgesBeforePersisting,
    "reads-locally": ReadsLocally,
    "counts-learners": CountsLearners,
    "forgets-entries-on-restart": ForgetsEntriesOnRestart,
}
