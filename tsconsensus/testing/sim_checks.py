"""Raft's safety properties, checked by the simulator after every event.

- election safety: at most one leader per term;
- log matching: two entries with the same index and term carry the same content, and two logs
  that agree at an index agree on everything before it;
- leader completeness: a new leader's log holds every entry known to be committed;
- state-machine safety: no two nodes apply different entries (or reach different outcomes) at
  one index, and no committed entry is ever overwritten;
- read safety: a linearizable read reflects every entry applied anywhere before it was asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..raft.core import RaftCore
from ..raft.messages import Entry


class Violation(Exception):
    """A safety or liveness property failed; the message says which and where."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


def _name(member: int) -> str:
    return f"{member:016x}"[:6]


class SafetyChecker:
    """Global knowledge the simulator accumulates, and the checks against it."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> member
        self.entries: dict[tuple[int, int], tuple[int, bytes]] = {}  # (index, term) -> content
        self.committed: dict[int, int] = {}  # index -> term, of entries applied anywhere
        # index -> the lowest term any node was in when it applied it: the term the entry was
        # committed in is at most that, so every leader of a later term must hold it
        self.committed_by: dict[int, int] = {}
        self.outcomes: dict[int, bytes] = {}  # index -> outcome digest
        self.snapshots: dict[int, bytes] = {}  # index -> sha256 of snapshot bytes
        self.max_committed = 0

    def leader_seen(self, core: RaftCore) -> bool:
        """Record ``core`` as leader of its term; True the first time it is seen leading it."""
        holder = self.leaders.get(core.term)
        if holder is None:
            self.leaders[core.term] = core.id
            self._check_complete(core)
            return True
        if holder != core.id:
            raise Violation(
                "election safety",
                f"two leaders in term {core.term}: {_name(holder)} and {_name(core.id)}",
            )
        return False

    def _check_complete(self, core: RaftCore) -> None:
        log = core.log
        for index, term in self.committed.items():
            if index <= log.offset or self.committed_by[index] >= core.term:
                continue
            if log.term(index) != term:
                raise Violation(
                    "leader completeness",
                    f"{_name(core.id)} leads term {core.term} without committed entry "
                    f"{index} (term {term}); its log has term {log.term(index)} there",
                )

    def written(
        self, member: int, entries: tuple[Entry, ...], had: Callable[[int], int | None]
    ) -> None:
        """``member`` is persisting ``entries``; ``had(index)`` is the term of the entry its
        storage held at ``index`` before (None if none). A node may overwrite a stale entry of
        its own, but never a committed entry it holds."""
        for e in entries:
            content = (int(e.kind), e.data)
            known = self.entries.setdefault((e.index, e.term), content)
            if known != content:
                raise Violation(
                    "log matching",
                    f"two different entries at index {e.index} term {e.term} ({_name(member)})",
                )
            term = self.committed.get(e.index)
            if term is not None and term != e.term and had(e.index) == term:
                raise Violation(
                    "state-machine safety",
                    f"{_name(member)} overwrites committed entry {e.index} (term {term}) with "
                    f"term {e.term}",
                )

    def applied(self, member: int, entry: Entry, outcome: bytes, observer_term: int) -> None:
        """``member``, in term ``observer_term``, applied ``entry`` with ``outcome``."""
        by = self.committed_by.get(entry.index)
        if by is None or observer_term < by:
            self.committed_by[entry.index] = observer_term
        term = self.committed.setdefault(entry.index, entry.term)
        if term != entry.term:
            raise Violation(
                "state-machine safety",
                f"{_name(member)} applies index {entry.index} term {entry.term}; another node "
                f"applied term {term} there",
            )
        known = self.outcomes.setdefault(entry.index, outcome)
        if known != outcome:
            raise Violation(
                "state-machine safety",
                f"{_name(member)} reached a different outcome at index {entry.index}: "
                f"{outcome[:60]!r} vs {known[:60]!r}",
            )
        self.max_committed = max(self.max_committed, entry.index)

    def snapshot_seen(self, member: int, index: int, data: bytes, how: str) -> None:
        digest = hashlib.sha256(data).digest()
        known = self.snapshots.setdefault(index, digest)
        if known != digest:
            raise Violation(
                "state-machine safety",
                f"{_name(member)} {how} a snapshot at index {index} whose bytes differ from "
                "another node's snapshot at that index",
            )

    def read_served(self, member: int, asked_at_committed: int, applied: int) -> None:
        if applied < asked_at_committed:
            raise Violation(
                "stale read",
                f"{_name(member)} answered a read at applied index {applied}, but index "
                f"{asked_at_committed} was applied elsewhere before the read was asked",
            )

    def logs_match(self, cores: list[RaftCore]) -> None:
        """The log matching property between every pair of live logs."""
        for i, a in enumerate(cores):
            for b in cores[i + 1 :]:
                lo = max(a.log.offset, b.log.offset) + 1
                hi = min(a.log.last_index, b.log.last_index)
                agreed_at = 0
                for index in range(hi, lo - 1, -1):
                    if a.log.term(index) == b.log.term(index):
                        agreed_at = index
                        break
                for index in range(lo, agreed_at + 1):
                    ea, eb = a.log.entry(index), b.log.entry(index)
                    if (ea.term, ea.kind, ea.data) != (eb.term, eb.kind, eb.data):
                        raise Violation(
                            "log matching",
                            f"{_name(a.id)} and {_name(b.id)} agree at {agreed_at} but differ "
                            f"at {index}",
                        )
