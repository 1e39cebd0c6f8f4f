"""The follower's side of the core: appends, heartbeats and snapshot chunks from the leader.
Pure; methods of the core."""

from __future__ import annotations

from ._base import MT, CoreState
from .messages import COMMIT_NOTICE, Message, Snapshot


class FollowerSide(CoreState):
    """Follower behaviour over :class:`CoreState`."""

    # -- follower side -----------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        entries = m.entries
        prev, prev_term = m.index, m.log_term
        if prev < self.commit:
            # everything up to our commit index matches the leader's log: skip that part
            skip = [e for e in entries if e.index > self.commit]
            if entries and not skip:
                self._ack(m.frm, prev + len(entries))
                return
            if not entries or skip[0].index != self.commit + 1:
                if m.context != COMMIT_NOTICE:
                    self._ack(m.frm, self.commit)
                return
            entries, prev = tuple(skip), self.commit
            prev_term = self.log.term(prev) or 0
        if self.log.term(prev) != prev_term:
            hint = min(prev, self.log.last_index)
            hint = self.log.find_conflict_by_term(hint, prev_term)
            self._send(
                Message(
                    MT.APPEND_RESP,
                    to=m.frm,
                    frm=self.id,
                    term=self.term,
                    index=m.index,
                    reject=True,
                    hint_index=hint,
                    hint_term=self.log.term(hint) or 0,
                )
            )
            return
        for pos, e in enumerate(entries):
            have = self.log.term(e.index)
            if have == e.term:
                continue  # already there: a stale or duplicate append removes nothing
            if have is not None:
                if e.index <= self.commit:
                    return  # would remove a committed entry: a message from a broken leader
                self._truncate(e.index)
            self._append_local(entries[pos:])
            break
        last_new = prev + len(entries)
        self._commit_to(min(m.commit, last_new))
        if m.context != COMMIT_NOTICE or entries:
            self._ack(m.frm, last_new)

    def _ack(self, to: int, index: int) -> None:
        self._send(Message(MT.APPEND_RESP, to=to, frm=self.id, term=self.term, index=index))

    def _handle_heartbeat(self, m: Message) -> None:
        self._commit_to(min(m.commit, self.log.last_index))
        self._send(
            Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context)
        )

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        if meta is None or meta.cluster_id != self.cluster_id:
            return
        if meta.index <= self.commit:
            self._receiver.reset()
            self._ack(m.frm, self.commit)
            return
        accepted, done = self._receiver.accept(m)
        self._send(
            Message(
                MT.SNAPSHOT_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=meta.index,
                offset=self._receiver.received if done is None else m.size,
                reject=not accepted,
            )
        )
        if done is not None:
            self._restore(done)
            self._ack(m.frm, meta.index)

    def _restore(self, snap: Snapshot) -> None:
        meta = snap.meta
        if self.log.term(meta.index) == meta.term:
            # our log already holds the snapshot's last entry: keep the log, just commit
            self._commit_to(meta.index)
            return
        self.log.reset(meta.index, meta.term, meta.time)
        self._configs = [(meta.index, meta.membership)]
        self.snapshot = snap
        self._install = snap
        self.commit = meta.index
        self._handed = meta.index
        self._handed_bytes = 0
        self.stable_index = min(self.stable_index, meta.index)
        self._dirty_from = meta.index + 1
