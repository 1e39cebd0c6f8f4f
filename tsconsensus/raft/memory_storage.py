"""Storage that keeps nothing beyond the object: for ``state_dir = ":memory:"``.

Such a node is a new member at every start (a new random member id each time), so nothing it
held may be trusted after a restart, and nothing is. It checks appends exactly as the file
storage does, so a driver bug shows up in memory too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import StorageError
from ._base import InitialState
from .log_tracker import LogTracker
from .messages import MAX_ID, Entry, HardState, Snapshot, SnapshotMeta
from .state_dir import new_member_id
from .storage_types import DiskUsage


class MemoryStorage:
    """The :class:`~tsconsensus.raft.storage_types.Storage` interface in memory. Thread-safe;
    every method returns at once and "durable" means "recorded in this object"."""

    def __init__(self) -> None:
        self._member_id = new_member_id()
        self._cluster_id = 0
        self._lock = threading.Lock()
        self._tracker = LogTracker(0, 0, (), HardState())
        self._snapshot: Snapshot | None = None

    @property
    def syncs(self) -> bool:
        return False

    @property
    def member_id(self) -> int:
        return self._member_id

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    def set_cluster_id(self, cluster_id: int) -> None:
        """As :meth:`FileStorage.set_cluster_id`."""
        if not 0 < cluster_id <= MAX_ID:
            raise ValueError(f"cluster id {cluster_id}: must be a non-zero 64-bit integer")
        with self._lock:
            if self._cluster_id not in (0, cluster_id):
                raise StorageError(
                    f"this in-memory node belongs to cluster {self._cluster_id:016x}; it cannot "
                    f"be used for cluster {cluster_id:016x}"
                )
            self._cluster_id = cluster_id

    def initial_state(self) -> InitialState:
        """Always empty: a memory node starts from nothing."""
        return InitialState()

    def append(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> None:
        with self._lock:
            self._tracker.apply(hard_state, entries, None)

    def sync(self) -> None:
        pass

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        with self._lock:
            if snapshot is not None:
                self._check_cluster(snapshot.meta)
            key = (snapshot.meta.index, snapshot.meta.term) if snapshot else None
            self._tracker.apply(hard_state, entries, key)
            if snapshot is not None:
                self._snapshot = snapshot

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot | None:
        meta = snapshot.meta
        with self._lock:
            self._check_cluster(meta)
            if meta.index <= self._tracker.base_index:
                return None
            if self._tracker.term(meta.index) != meta.term:
                raise ValueError(f"the log holds no entry ({meta.index}, term {meta.term})")
            self._tracker.apply(None, (), (meta.index, meta.term))
            self._snapshot = snapshot
        return snapshot

    def _check_cluster(self, meta: SnapshotMeta) -> None:
        if self._cluster_id and meta.cluster_id != self._cluster_id:
            raise ValueError(
                f"snapshot of cluster {meta.cluster_id:016x}, not {self._cluster_id:016x}"
            )

    @property
    def first_index(self) -> int:
        return self._tracker.base_index + 1

    @property
    def last_index(self) -> int:
        return self._tracker.last_index

    @property
    def hard_state(self) -> HardState:
        return self._tracker.hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot.meta if self._snapshot is not None else None

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot saved (the memory node's only copy of it)."""
        return self._snapshot

    def disk_usage(self) -> DiskUsage:
        return DiskUsage()

    def close(self) -> None:
        pass
