"""Test-only switches of a node's storage, read from the environment when a node opens it.

None of these is for production; each exists so that a test can drive a real node process
into a state a unit test cannot reach (the README's "Durability" section lists them):

- ``TSC_POWER_LOSS=1``: what is written but not yet synced lives only in this process, so
  SIGKILL loses exactly what a power cut would (with ``storage.fsync = true`` the storage
  already works that way; with ``fsync = false`` nothing reaches the OS before a clean stop).
- ``TSC_PLANTED_BUG=ack-before-sync``: a planted bug. The node acknowledges what it has not
  made durable: its storage queues each write in memory and syncs only once writes have paused
  for :data:`ACK_BEFORE_SYNC_QUIET_S` (membership changes excepted, so the cluster can come
  back). A cluster killed during a burst of writes loses the acknowledged writes of that
  burst; a durability test must catch it.
- ``TSC_INJECT_FSYNC_ERROR=N``: the N-th ``fdatasync`` of this process's storage fails with
  ``EIO`` (N counts from 1), as a failing disk would make it; the node must stop.
- ``TSC_WAL_SEGMENT_BYTES=N``: WAL segments of N bytes instead of 64 MiB, so that a node on
  a small file system (a test's tmpfs) needs new segments, and meets a full disk, quickly.

A malformed value of ``TSC_POWER_LOSS``, ``TSC_INJECT_FSYNC_ERROR`` or
``TSC_WAL_SEGMENT_BYTES`` is an error of the node's start (one line), never
ignored. ``TSC_PLANTED_BUG`` names the fault runner's other planted bugs too: this module knows
only its own and leaves the others to their layers.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence

from .errors import ConfigError, StorageError, StorageFailedError
from .raft import EntryKind, InitialState, Storage, open_storage
from .raft.files import FileSystem
from .raft.messages import Entry, HardState, Snapshot, SnapshotMeta
from .raft.storage import FileStorage
from .raft.storage_types import DiskUsage
from .raft.wal import MIN_SEGMENT_BYTES

log = logging.getLogger("tsconsensus.raft.storage")

POWER_LOSS_ENV = "TSC_POWER_LOSS"
PLANTED_BUG_ENV = "TSC_PLANTED_BUG"
FSYNC_ERROR_ENV = "TSC_INJECT_FSYNC_ERROR"
SEGMENT_BYTES_ENV = "TSC_WAL_SEGMENT_BYTES"
ACK_BEFORE_SYNC = "ack-before-sync"
STORAGE_BUGS = (ACK_BEFORE_SYNC,)
"""The planted bugs of the storage; other names of ``TSC_PLANTED_BUG`` belong to other layers."""
ACK_BEFORE_SYNC_QUIET_S = 0.5


def open_switched_storage(
    state_dir: str, *, sync: bool, env: Mapping[str, str] | None = None
) -> Storage:
    """:func:`~tsconsensus.raft.open_storage` of ``state_dir`` with the switches found in
    ``env`` (default: ``os.environ``). Raises :class:`ConfigError` for a malformed switch, and
    whatever ``open_storage`` raises. A ``":memory:"`` directory ignores them."""
    env = os.environ if env is None else env
    power_loss = _flag(env, POWER_LOSS_ENV)
    fail_at = _positive(env, FSYNC_ERROR_ENV)
    segment = _positive(env, SEGMENT_BYTES_ENV)
    if segment is not None and segment < MIN_SEGMENT_BYTES:
        raise ConfigError(SEGMENT_BYTES_ENV, segment, f"must be at least {MIN_SEGMENT_BYTES}")
    extra = {} if segment is None else {"segment_bytes": segment}
    fs = None if fail_at is None else FailingFdatasync(fail_at)
    storage = open_storage(state_dir, fs=fs, sync=sync, power_loss=power_loss, **extra)
    if fail_at is not None:
        log.warning("test switch %s=%d: an fdatasync will fail", FSYNC_ERROR_ENV, fail_at)
    if env.get(PLANTED_BUG_ENV) == ACK_BEFORE_SYNC and isinstance(storage, FileStorage):
        log.warning(
            "planted bug %s=%s: this node acknowledges writes before they are durable",
            PLANTED_BUG_ENV,
            ACK_BEFORE_SYNC,
        )
        return AcknowledgeBeforeSync(storage)
    return storage


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "")
    if value not in ("", "0", "1"):
        raise ConfigError(name, value, "must be 1 (on) or 0 (off)")
    return value == "1"


def _positive(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(name, value, "must be a positive integer")
    return int(value)


class FailingFdatasync(FileSystem):
    """A file system whose ``fail_at``-th ``fdatasync`` (counting from 1) raises ``EIO``; the
    calls before and after it behave as usual. Thread-safe."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self._lock = threading.Lock()

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
            failing = self.calls == self.fail_at
        if failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


class AcknowledgeBeforeSync:
    """Planted bug, for tests only: a storage whose :meth:`save` returns before anything is
    durable. Each save only queues its write (:meth:`FileStorage.append`: held in this
    process's memory); a background thread syncs once no save came for ``quiet_s``. So a node
    that acknowledges what a save returned acknowledges data a SIGKILL (a power cut, in
    power-loss mode) loses: under a steady stream of writes, everything since the stream
    began. Saves of a membership entry or a snapshot stay durable, so the cluster can restart
    and be read (and show what it lost). Everything else is the wrapped storage's."""

    def __init__(self, storage: FileStorage, quiet_s: float = ACK_BEFORE_SYNC_QUIET_S) -> None:
        self._storage = storage
        self._quiet_s = quiet_s
        self._lock = threading.Lock()
        self._last_save: float | None = None  # monotonic time of the oldest unsynced save
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._syncer, name="tsc-lazy-sync", daemon=True)
        self._thread.start()

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        if snapshot is not None or any(e.kind is EntryKind.MEMBERSHIP for e in entries):
            # membership stays durable (and what came before it), so a cluster that lost
            # acknowledged writes to the bug still comes back and can be read
            self._storage.save(hard_state, entries, snapshot)
            return
        self._storage.append(hard_state, entries)
        with self._lock:
            self._last_save = time.monotonic()

    def _syncer(self) -> None:
        while not self._stop.wait(self._quiet_s / 5):
            with self._lock:
                last = self._last_save
                if last is None or time.monotonic() - last < self._quiet_s:
                    continue
                self._last_save = None
            try:
                self._storage.sync()
            except StorageFailedError:
                return  # every later save raises it
            except StorageError:
                with self._lock:  # a full disk: try again after the next quiet spell
                    self._last_save = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._storage.close()

    @property
    def syncs(self) -> bool:
        return True  # some saves (membership, snapshots) still sync: keep them off the loop

    # -- the rest is the wrapped storage's ------------------------------------------------------

    @property
    def member_id(self) -> int:
        return self._storage.member_id

    @property
    def cluster_id(self) -> int:
        return self._storage.cluster_id

    def set_cluster_id(self, cluster_id: int) -> None:
        self._storage.set_cluster_id(cluster_id)

    def initial_state(self) -> InitialState:
        return self._storage.initial_state()

    def append(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> None:
        self._storage.append(hard_state, entries)

    def sync(self) -> None:
        self._storage.sync()

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot | None:
        return self._storage.save_snapshot(snapshot)

    @property
    def first_index(self) -> int:
        return self._storage.first_index

    @property
    def last_index(self) -> int:
        return self._storage.last_index

    @property
    def hard_state(self) -> HardState:
        return self._storage.hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._storage.snapshot_meta

    def disk_usage(self) -> DiskUsage:
        return self._storage.disk_usage()
