"""What the storage must know of its own log to check each append: pure, shared by the file
and the in-memory storage.

The storage refuses (with :class:`ValueError`, before anything is written) appends that no
correct core produces, because writing them would make the disk lie: entries that leave a gap
or rewrite what a snapshot covers, terms that go backwards along the log, a hard state whose
term decreases or whose vote changes within a term, a snapshot that does not move forward.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import NONE, Entry, HardState
from .wal_records import Marker, SegmentHeader

_NOTHING: array[int] = array("Q")


@dataclass(frozen=True)
class _Undo:
    base: tuple[int, int]
    floor: int
    hard_state: HardState
    terms: array[int] | None  # the whole list, when a marker changed it
    cut: int  # else: where the new entries started, and what they replaced
    replaced: array[int]


@dataclass(frozen=True)
class Change:
    """One validated append, already applied to the tracker; :meth:`LogTracker.undo` takes it
    back (the storage does so when writing it failed)."""

    marker: Marker | None
    entries: Sequence[Entry]
    hard_state: HardState | None
    undo: _Undo

    @property
    def max_entry(self) -> int:
        return self.entries[-1].index if self.entries else 0


class LogTracker:
    """The snapshot base, the term of each entry after it, and the hard state. Not
    thread-safe: the storage calls it under its lock."""

    def __init__(
        self, base_index: int, base_term: int, terms: Sequence[int], hard_state: HardState
    ) -> None:
        self.base_index = base_index
        self.base_term = base_term
        self.terms = array("Q", terms)
        self.hard_state = hard_state
        self.floor = base_index
        """Entries at or below this index are never written again (committed)."""

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.terms)

    def term(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_term
        if self.base_index < index <= self.last_index:
            return self.terms[index - self.base_index - 1]
        return None

    def header(self) -> SegmentHeader:
        """The state a new segment records (its ``seq`` is filled in by the WAL)."""
        return SegmentHeader(
            0, self.last_index + 1, self.base_index, self.base_term, self.hard_state
        )

    def apply(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: tuple[int, int] | None,
    ) -> Change:
        """Validate and apply one append: first the snapshot (index, term) the log now starts
        after, if any, then ``entries`` (the first one's index replaces the log from there on),
        then ``hard_state``. Raises :class:`ValueError` naming the problem, changing nothing."""
        marker = None
        if snapshot is not None:
            index, term = snapshot
            if index <= self.base_index:
                raise ValueError(
                    f"snapshot at {index} does not follow the current one at {self.base_index}"
                )
            marker = Marker(index, term, reset=self.term(index) != term)
        self._check_entries(entries, marker)
        if hard_state is not None:
            self._check_hard_state(hard_state)
        base, floor, old_hard_state = (self.base_index, self.base_term), self.floor, self.hard_state
        saved: array[int] | None = None
        cut, replaced = 0, _NOTHING
        if marker is not None:
            saved = array("Q", self.terms)
            if marker.reset:
                del self.terms[:]
            else:
                del self.terms[: marker.index - self.base_index]
            self.base_index, self.base_term = marker.index, marker.term
            self.floor = max(self.floor, marker.index)
        if entries:
            cut = entries[0].index - self.base_index - 1
            if saved is None:
                replaced = self.terms[cut:]
            del self.terms[cut:]
            self.terms.extend(e.term for e in entries)
        if hard_state is not None:
            self.hard_state = hard_state
        undo = _Undo(base, floor, old_hard_state, saved, cut, replaced)
        return Change(marker, entries, hard_state, undo)

    def undo(self, change: Change) -> None:
        """Take back ``change``, which must be the latest one applied."""
        u = change.undo
        self.base_index, self.base_term = u.base
        self.floor = u.floor
        self.hard_state = u.hard_state
        if u.terms is not None:
            self.terms = u.terms
        elif change.entries:
            del self.terms[u.cut :]
            self.terms.extend(u.replaced)

    def _check_entries(self, entries: Sequence[Entry], marker: Marker | None) -> None:
        if not entries:
            return
        base, last = max(self.base_index, self.floor), self.last_index
        if marker is not None:
            base = max(base, marker.index)
            last = marker.index if marker.reset else last
        first = entries[0].index
        for k, e in enumerate(entries):
            if e.index != first + k:
                raise ValueError(f"entries are not consecutive: {e.index} after {first + k - 1}")
            if k and e.term < entries[k - 1].term:
                raise ValueError(f"entry {e.index} has term {e.term}, lower than the one before")
        if first <= base:
            raise ValueError(f"entry {first} is covered by a snapshot (up to {base})")
        if first > last + 1:
            raise ValueError(f"entry {first} leaves a gap after the log's last entry {last}")
        if marker is not None and first - 1 == marker.index:
            before: int | None = marker.term
        else:
            before = self.term(first - 1)
        if before is not None and entries[0].term < before:
            raise ValueError(f"entry {first} has term {entries[0].term}, lower than before it")

    def _check_hard_state(self, hs: HardState) -> None:
        old = self.hard_state
        if hs.term < old.term:
            raise ValueError(f"hard state term {hs.term} is lower than the stored {old.term}")
        if hs.term == old.term and old.vote != NONE and hs.vote != old.vote:
            raise ValueError(
                f"hard state changes the vote of term {hs.term} from {old.vote:016x} "
                f"to {hs.vote:016x}"
            )
