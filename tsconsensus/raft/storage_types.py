"""The storage interface the driver programs against, shared by the file and memory storages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._base import InitialState
from .messages import Entry, HardState, Snapshot, SnapshotMeta

MEMORY = ":memory:"
"""The ``state_dir`` that asks for an in-memory storage (a new member at every start)."""


@dataclass(frozen=True)
class DiskUsage:
    """Bytes the storage occupies on disk (allocated blocks: preallocated segments count in
    full)."""

    wal_bytes: int = 0
    wal_segments: int = 0
    snapshot_bytes: int = 0
    snapshot_files: int = 0

    @property
    def total_bytes(self) -> int:
        return self.wal_bytes + self.snapshot_bytes


class Storage(Protocol):
    """What a Raft member persists. See :class:`~tsconsensus.raft.storage.FileStorage` for the
    full contract; :class:`~tsconsensus.raft.memory_storage.MemoryStorage` keeps the same one
    except that nothing outlives the object."""

    @property
    def syncs(self) -> bool:
        """Whether a save waits for the disk (fsync). A storage that does not may be written
        on the caller's thread: a save then costs microseconds."""
        ...

    @property
    def member_id(self) -> int: ...

    @property
    def cluster_id(self) -> int: ...

    def set_cluster_id(self, cluster_id: int) -> None: ...

    def initial_state(self) -> InitialState: ...

    def append(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> None: ...

    def sync(self) -> None: ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot | None:
        """Persist ``snapshot``; the snapshot as stored (its data may be a view of the saved
        file rather than the bytes passed in), or None if it was not newer than the current
        one."""
        ...

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    @property
    def hard_state(self) -> HardState: ...

    @property
    def snapshot_meta(self) -> SnapshotMeta | None: ...

    def disk_usage(self) -> DiskUsage: ...

    def close(self) -> None: ...
