"""What the driver writes for a Ready, and on which thread.

Raft must make durable, before a node answers for them, the entries it appends, a snapshot it
installs, and a new term or vote. A Ready that holds none of these (at most a higher commit
index, which a restarted node learns again) writes nothing. Everything else is one
``Storage.save``: one write and one sync for the whole Ready (group commit), on the disk
thread when the storage syncs, or on the loop when nothing waits for a disk.
"""

from __future__ import annotations

from collections.abc import Callable

from .core import RaftCore
from .disk_worker import DiskWorker
from .messages import HardState, Ready
from .storage_types import Storage


class ReadyWriter:
    """Writes Readies to ``storage``; :meth:`submit` through ``disk``. Loop thread, except
    :meth:`write`, which runs wherever the write is made."""

    def __init__(self, storage: Storage, disk: DiskWorker, durable: HardState) -> None:
        self.storage = storage
        self._disk = disk
        # (term, vote) on disk; written by the thread that made the write, read on the loop
        self._durable_vote = (durable.term, durable.vote)

    def must_write(self, rd: Ready) -> bool:
        """Whether ``rd`` holds something Raft must make durable before answering for it."""
        hs = rd.hard_state
        vote_changed = hs is not None and (hs.term, hs.vote) != self._durable_vote
        return rd.snapshot is not None or bool(rd.entries) or vote_changed

    def hard_state(self, rd: Ready, core: RaftCore) -> HardState | None:
        """The hard state written with ``rd``. Read on the loop, not on the disk thread, and
        capped at the last entry written with it: while a write waits (a full disk) the commit
        index may move past entries that are not in this write."""
        if rd.hard_state is None and rd.entries:
            commit = min(core.commit, rd.entries[-1].index)
            return HardState(core.term, core.vote, commit)
        return rd.hard_state

    def write(self, rd: Ready, hs: HardState | None) -> None:
        """One write and one sync for the whole Ready. Raises what ``Storage.save`` raises."""
        self.storage.save(hs, rd.entries, rd.snapshot)
        if hs is not None:
            self._durable_vote = (hs.term, hs.vote)

    def submit(
        self, rd: Ready, hs: HardState | None, done: Callable[[BaseException | None], object]
    ) -> None:
        """:meth:`write` on the disk thread; ``done(None)`` or ``done(error)`` on the loop."""
        self._disk.submit(lambda: self.write(rd, hs), lambda _result, exc: done(exc))
