"""The in-memory Raft log: entries after a compaction point. Pure; owned by the core."""

from __future__ import annotations

from collections.abc import Sequence

from .messages import Entry


class RaftLog:
    """Entries ``first_index .. last_index`` plus the (index, term, time) just before them.

    The position before the first entry, ``offset``, is where the log was compacted or where
    an installed snapshot ends: its term is known, its entry is not. Indexes below it are
    gone. Not thread-safe: the core's thread only. ``last_index`` is a plain attribute kept
    in step by every change (the core reads it dozens of times per command); read it only.
    """

    def __init__(
        self,
        offset: int = 0,
        offset_term: int = 0,
        entries: Sequence[Entry] = (),
        offset_time: int = 0,
    ) -> None:
        self.offset = offset
        self.offset_term = offset_term
        self.offset_time = offset_time
        self._entries: list[Entry] = list(entries)
        self.last_index = offset + len(self._entries)
        for i, e in enumerate(self._entries):
            if e.index != offset + 1 + i:
                raise ValueError(f"entry {e.index} at position {offset + 1 + i}: log has a gap")

    # -- reading ------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    @property
    def last_time(self) -> int:
        return self._entries[-1].time if self._entries else self.offset_time

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``, or ``None`` if compacted away or not there."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.last_index:
            return self._entries[index - self.offset - 1].term
        return None

    def entry(self, index: int) -> Entry:
        if not self.offset < index <= self.last_index:
            raise IndexError(f"entry {index} is not in the log ({self.first_index}..)")
        return self._entries[index - self.offset - 1]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo`` to ``hi - 1``; with ``max_bytes``, as many as fit (at least one)."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index + 1)
        if lo >= hi:
            return []
        chunk = self._entries[lo - self.offset - 1 : hi - self.offset - 1]
        if max_bytes is None:
            return chunk
        total = 0
        for n, e in enumerate(chunk):
            total += e.size
            if total > max_bytes and n > 0:
                return chunk[:n]
        return chunk

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as this
        one (Raft section 5.4.1)."""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (or the offset if every
        known entry up to ``index`` has a larger term): where a log ending in ``term`` at
        ``index`` may match this one."""
        index = min(index, self.last_index)
        while index > self.offset:
            t = self.term(index)
            if t is not None and t <= term:
                return index
            index -= 1
        return self.offset

    # -- writing ------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that continue the log exactly (``entries[0].index == last + 1``)."""
        if entries and entries[0].index != self.last_index + 1:
            raise ValueError(f"append at {entries[0].index} after {self.last_index}")
        self._entries.extend(entries)
        self.last_index = self.offset + len(self._entries)

    def truncate_from(self, index: int) -> None:
        """Remove entries ``index`` and after (callers never remove committed ones)."""
        if index <= self.offset:
            raise ValueError(f"truncate at {index}, before the log's start {self.first_index}")
        del self._entries[index - self.offset - 1 :]
        self.last_index = self.offset + len(self._entries)

    def compact(self, index: int) -> None:
        """Forget entries up to and including ``index`` (which must be in the log)."""
        if index <= self.offset:
            return
        e = self.entry(index)
        del self._entries[: index - self.offset]
        self.offset, self.offset_term, self.offset_time = e.index, e.term, e.time

    def reset(self, offset: int, offset_term: int, offset_time: int) -> None:
        """Drop everything: the log now starts after an installed snapshot."""
        self._entries = []
        self.offset, self.offset_term, self.offset_time = offset, offset_term, offset_time
        self.last_index = offset
