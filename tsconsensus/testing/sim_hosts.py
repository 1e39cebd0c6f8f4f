"""One simulated machine: its durable storage, and the node running on it."""

from __future__ import annotations

from ..raft import Entry, HardState, InitialState, RaftCore, ReadState, Ready, Snapshot
from .sim_apps import Application


class SimStorage:
    """What one host has durably written."""

    def __init__(self, initial: InitialState | None = None) -> None:
        state = initial or InitialState()
        self.hard_state: HardState = state.hard_state
        self.snapshot: Snapshot | None = state.snapshot
        self.entries: list[Entry] = list(state.entries)

    def write(self, rd: Ready, torn_at: int | None = None) -> None:
        if torn_at is not None:
            if rd.snapshot is None and rd.entries:
                self._append(rd.entries[:torn_at])
            return
        if rd.snapshot is not None:
            self.snapshot, self.entries = rd.snapshot, []
        self._append(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def _append(self, entries: tuple[Entry, ...]) -> None:
        if entries:
            first = entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(entries)

    def term(self, index: int) -> int | None:
        for e in reversed(self.entries):
            if e.index == index:
                return e.term
            if e.index < index:
                break
        return None

    def snapshot_taken(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]

    def initial_state(self) -> InitialState:
        after = self.snapshot.meta.index if self.snapshot is not None else 0
        return InitialState(
            self.hard_state, self.snapshot, tuple(e for e in self.entries if e.index > after)
        )


class SimHost:
    def __init__(self, slot: int, member: int, storage: SimStorage) -> None:
        self.slot = slot
        self.member = member
        self.storage = storage
        self.core: RaftCore | None = None
        self.app: Application | None = None
        self.generation = 0
        self.pending: Ready | None = None
        self.paused_until = 0
        self.reads: list[tuple[ReadState, int]] = []  # (read state, committed when asked)
        self.asked: dict[int, int] = {}  # read context -> committed when asked
