"""Durable storage of one Raft member in a state directory.

Layout of ``<state_dir>``: ``LOCK`` (held while open), ``IDENTITY`` (member and cluster id),
``wal/`` (segments: entries, hard state, snapshot markers; :mod:`.wal`), ``snapshots/``
(:mod:`.snapshot_store`). How the driver uses it, once per loop turn of the core::

    storage = open_storage(state_dir)            # raises StateDirLockedError, CorruptStorageError
    core = RaftCore(config, storage.initial_state(), rng)
    ...
    rd = core.ready()
    storage.save(rd.hard_state, rd.entries, rd.snapshot)   # one write + one fdatasync
    ...                                                   # then send rd.messages_after_persist
    storage.save_snapshot(snapshot)                       # a snapshot the layer above took

Durability: when :meth:`FileStorage.save`, :meth:`~FileStorage.sync` or
:meth:`~FileStorage.save_snapshot` returns, everything appended before is on disk (with
``sync=True``). Appends are held in this process's memory until then, so a process killed
with SIGKILL loses exactly what a power cut would: what was appended and not yet synced.

Power-loss mode, for tests: with ``sync=True`` the storage is always in it (see above), so
durability tests need no switch: SIGKILL every node. ``sync=False`` (benchmarks against
non-durable systems) hands each sync's write to the OS without fsync: it survives SIGKILL but
not a power cut. ``sync=False, power_loss=True`` makes that faithful too: nothing reaches the
OS before :meth:`~FileStorage.close`, so SIGKILL loses everything since the open, as a power cut
would lose writes that were never fsynced. The storage reads no environment variable; the
layer above may map one (say ``TSC_POWER_LOSS=1``) to these arguments.

Failures: :class:`DiskFullError` leaves the storage exactly as before the call (retry it once
space returns); :class:`StorageFailedError` (a failed fsync, an I/O error) is final: every later
call raises it again, and the process must end. :class:`ValueError` means the caller asked for
something no correct core asks for (nothing was written).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import DiskFullError, StorageError, StorageFailedError
from ._base import InitialState
from .files import FileSystem, fsync_dir, writing
from .log_tracker import Change, LogTracker
from .messages import MAX_ID, Entry, HardState, Snapshot, SnapshotMeta
from .recovery import recover_snapshot
from .snapshot_store import SnapshotFile, SnapshotStore
from .state_dir import Identity, lock_state_dir, new_member_id, read_identity, write_identity
from .storage_types import MEMORY, DiskUsage, Storage
from .wal import DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES, Wal
from .wal_records import encode_items

log = logging.getLogger("tsconsensus.raft.storage")

T = TypeVar("T")
_WIPE = (
    "wipe the state directory and start the node again: it rejoins as a new member (remove "
    "its old id with `tsc members remove`)"
)


def open_storage(
    state_dir: str | os.PathLike[str],
    *,
    fs: FileSystem | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    sync: bool = True,
    power_loss: bool = False,
) -> Storage:
    """A :class:`FileStorage` of ``state_dir``, or a new :class:`MemoryStorage` for
    ``":memory:"``. See :class:`FileStorage` for the arguments and what is raised."""
    if os.fspath(state_dir) == MEMORY:
        from .memory_storage import MemoryStorage

        return MemoryStorage()
    return FileStorage(
        state_dir, fs=fs, segment_bytes=segment_bytes, sync=sync, power_loss=power_loss
    )


class FileStorage:
    """The state directory of one member: opened (and locked) by the constructor, which
    replays the WAL; :meth:`initial_state` is what the core starts from.

    Arguments: ``fs`` the OS layer (tests inject faults through it); ``segment_bytes`` the
    preallocated size of a WAL segment; ``sync=False`` never fsyncs (for benchmarks against
    non-durable systems: nothing survives a power cut); ``power_loss=True`` together with
    ``sync=False`` keeps even "synced" appends in memory until :meth:`close`, so a SIGKILL
    loses everything a power cut would lose when nothing is ever fsynced (with ``sync=True``
    appends are always held in memory until synced, so that mode needs no switch);
    ``use_mmap`` hands snapshot data out as a view of the mapped file (no second copy);
    ``keep_snapshots`` snapshot files are kept (the newest and older fallbacks).

    The constructor raises :class:`StateDirLockedError`, :class:`CorruptStorageError` (the
    WAL or identity is damaged, or the newest snapshot is and no older one is usable),
    :class:`StorageError` (a directory that lost its log or its identity), or the errors of
    a write (:class:`DiskFullError`, :class:`StorageFailedError`).

    Threads: every method may be called from any thread. Calls are serialised by a lock,
    except that the snapshot file of :meth:`save_snapshot` is written outside it, so saves go
    on meanwhile. The read-only properties never block on I/O.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        fs: FileSystem | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sync: bool = True,
        power_loss: bool = False,
        use_mmap: bool = True,
        keep_snapshots: int = 2,
    ) -> None:
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots {keep_snapshots}: must be at least 1")
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes {segment_bytes}: must be at least {MIN_SEGMENT_BYTES}")
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.fs = fs if fs is not None else FileSystem()
        self._sync = sync
        self._hold = power_loss and not sync
        self._keep = keep_snapshots
        self._lock = threading.Lock()  # the WAL, the tracker, the pending appends
        self._snap_lock = threading.Lock()  # one snapshot writer at a time
        self._failed: StorageFailedError | None = None
        self._closed = False
        self._pending: list[tuple[Change, bytes, SnapshotMeta | None]] = []
        _make_dirs(self.fs, self.state_dir, sync=sync)
        self._lock_fd = lock_state_dir(self.fs, self.state_dir)
        self._wal = Wal(self.fs, self._sub("wal"), segment_bytes=segment_bytes, sync=sync)
        self._snaps = SnapshotStore(self.fs, self._sub("snapshots"), sync=sync, use_mmap=use_mmap)
        try:
            self._open()
        except BaseException:
            self._wal.close()
            self.fs.close(self._lock_fd)
            raise

    def _sub(self, name: str) -> str:
        path = os.path.join(self.state_dir, name)
        _make_dirs(self.fs, path, sync=self._sync)
        return path

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        identity = read_identity(self.fs, self.state_dir)
        self._snaps.remove_temporary()
        rec = self._wal.open()
        files = self._snaps.files()
        snapshot: Snapshot | None = None
        if rec is None:
            if identity is not None or files:
                raise StorageError(
                    f"{self.state_dir} has {'an identity' if identity else 'snapshots'} but no "
                    f"WAL segment in {self._wal.dir}: its log is lost; {_WIPE}"
                )
            hard_state, entries = HardState(), list[Entry]()
            self._tracker = LogTracker(0, 0, (), hard_state)
            self._wal.create(self._tracker.header())
        else:
            if identity is None and (rec.has_data or files):
                raise StorageError(
                    f"{self.state_dir} holds a log but its IDENTITY file is gone, so it cannot "
                    f"know which member it was; {_WIPE}"
                )
            snapshot, entries = recover_snapshot(self._snaps, self._wal, rec, files)
            base = (snapshot.meta.index, snapshot.meta.term) if snapshot else (0, 0)
            hard_state = rec.hard_state
            self._tracker = LogTracker(*base, [e.term for e in entries], hard_state)
            # after a fall-back to an older snapshot, what the newer one covered is still
            # committed: it must not be rewritten
            self._tracker.floor = max(base[0], rec.base_index)
        if identity is None:
            identity = Identity(new_member_id())
            write_identity(self.fs, self.state_dir, identity, sync=self._sync)
        self._identity = identity
        self._written = self._tracker.header()
        self._snapshot_meta = snapshot.meta if snapshot else None
        self._initial = InitialState(hard_state, snapshot, tuple(entries))

    # -- identity --------------------------------------------------------------------------

    @property
    def syncs(self) -> bool:
        return self._sync

    @property
    def member_id(self) -> int:
        """This node's member id: random, non-zero, fixed for the directory's life."""
        return self._identity.member_id

    @property
    def cluster_id(self) -> int:
        """The cluster this directory belongs to; 0 until :meth:`set_cluster_id`."""
        return self._identity.cluster_id

    def set_cluster_id(self, cluster_id: int) -> None:
        """Record the cluster the node bootstrapped or joined; durable on return. Setting the
        same id again does nothing; a different one raises :class:`StorageError` (a directory
        never moves to another cluster); an id outside 1..2**64-1 raises ValueError."""
        if not 0 < cluster_id <= MAX_ID:
            raise ValueError(f"cluster id {cluster_id}: must be a non-zero 64-bit integer")
        with self._lock:
            self._guard()
            current = self._identity.cluster_id
            if current == cluster_id:
                return
            if current != 0:
                raise StorageError(
                    f"state directory {self.state_dir} belongs to cluster {current:016x}; it "
                    f"cannot be used for cluster {cluster_id:016x}"
                )
            identity = Identity(self._identity.member_id, cluster_id)
            self._run(lambda: write_identity(self.fs, self.state_dir, identity, sync=self._sync))
            self._identity = identity

    # -- the log ---------------------------------------------------------------------------

    def initial_state(self) -> InitialState:
        """What the directory held at open: hard state, snapshot (if any), and the entries
        after it, consecutive. Build the core from it."""
        return self._initial

    def append(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> None:
        """Queue entries (the first one's index replaces the log from there on) and a hard
        state for the next :meth:`sync`. Not durable, not even handed to the OS: a crash
        before the sync loses it. Raises ValueError (nothing queued)."""
        with self._lock:
            self._guard()
            self._stage(hard_state, entries, None)

    def sync(self) -> None:
        """Make everything appended durable: one write and one fdatasync (none if nothing is
        pending). Raises :class:`DiskFullError` (all of it stays pending: retry) or
        :class:`StorageFailedError`."""
        with self._lock:
            self._guard()
            self._run(self._flush)

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one ``Ready``: install ``snapshot`` (a snapshot received from the leader:
        the log now starts after it; its file is written and synced first), then ``entries``
        and ``hard_state``, with one write and one fdatasync for everything appended so far.
        Durable on return. On :class:`DiskFullError` nothing of this call was kept (call it
        again later); ValueError means nothing was written."""
        if snapshot is None:
            with self._lock:
                self._guard()
                self._commit(self._stage(hard_state, entries, None))
            return
        meta = snapshot.meta
        with self._snap_lock:
            with self._lock:
                self._guard()
                self._check_cluster(meta)
                # validate before writing a large file
                self._tracker.undo(
                    self._tracker.apply(hard_state, entries, (meta.index, meta.term))
                )
            written = self._run(lambda: self._snaps.write(snapshot))
            with self._lock:
                self._guard()
                try:
                    change = self._stage(hard_state, entries, meta)
                except ValueError:
                    self._snaps.remove([written])
                    raise
                self._commit(change, written)

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot | None:
        """Persist a snapshot the layer above took at an entry of this log, then release the
        WAL segments and the snapshot files it makes unnecessary. Durable on return; returns
        the snapshot as stored (with ``use_mmap`` its data is a view of the saved file, so the
        caller may drop the bytes it passed in: nothing of it is resident until read), or None
        (nothing done) if it does not follow the current snapshot. Raises ValueError if the
        log does not hold entry (index, term); :class:`DiskFullError` (nothing changed)."""
        meta = snapshot.meta
        with self._snap_lock:
            with self._lock:
                self._guard()
                self._check_cluster(meta)
                if meta.index <= self._tracker.base_index:
                    return None
                if self._tracker.term(meta.index) != meta.term:
                    raise ValueError(f"the log holds no entry ({meta.index}, term {meta.term})")
            written = self._run(lambda: self._snaps.write(snapshot))
            with self._lock:
                self._guard()
                if meta.index <= self._tracker.base_index:
                    self._snaps.remove([written])  # an installed snapshot overtook it
                    return None
                if self._tracker.term(meta.index) != meta.term:
                    self._snaps.remove([written])
                    raise ValueError(f"the log no longer holds ({meta.index}, term {meta.term})")
                self._commit(self._stage(None, (), meta), written)
        return self._snaps.view(written, snapshot) if self._snaps.use_mmap else snapshot

    def _check_cluster(self, meta: SnapshotMeta) -> None:
        cluster = self._identity.cluster_id
        if cluster and meta.cluster_id != cluster:
            raise ValueError(f"snapshot of cluster {meta.cluster_id:016x}, not {cluster:016x}")

    def _stage(
        self, hard_state: HardState | None, entries: Sequence[Entry], meta: SnapshotMeta | None
    ) -> Change | None:
        key = (meta.index, meta.term) if meta is not None else None
        change = self._tracker.apply(hard_state, entries, key)
        payload = encode_items(change.marker, entries, hard_state)
        if not payload:
            return None
        self._pending.append((change, payload, meta))
        return change

    def _commit(self, change: Change | None, written: SnapshotFile | None = None) -> None:
        """Flush, or on a full disk take ``change`` back (and its snapshot file)."""
        try:
            self._run(self._flush)
        except DiskFullError:
            if change is not None:
                self._pending.pop()
                self._tracker.undo(change)
            if written is not None:
                self._snaps.remove([written])
            raise

    def _flush(self, closing: bool = False) -> None:
        if not self._pending or (self._hold and not closing):
            return
        payload = b"".join(p for _, p, _ in self._pending)
        changes = [c for c, _, _ in self._pending]
        metas = [m for _, _, m in self._pending if m is not None]
        reset = any(c.marker is not None and c.marker.reset for c in changes)
        self._wal.append(payload, self._written, max(c.max_entry for c in changes), reset)
        self._pending.clear()
        self._written = self._tracker.header()
        if metas:
            self._snapshot_meta = metas[-1]
            self._release()

    def _release(self) -> None:
        base = self._tracker.base_index
        released = self._wal.release(base)
        older = [f for f in self._snaps.files() if f.index < base]
        doomed = older[: max(0, len(older) - (self._keep - 1))]
        self._snaps.remove(doomed)
        if released or doomed:
            log.info(
                "snapshot at %d: released %d segments, %d snapshot files",
                base,
                released,
                len(doomed),
            )

    def _guard(self) -> None:
        if self._failed is not None:
            raise StorageFailedError(
                f"storage in {self.state_dir} failed earlier and cannot be used: {self._failed}",
                self._failed.path,
            )
        if self._closed:
            raise StorageError(f"storage in {self.state_dir} is closed")

    def _run(self, op: Callable[[], T]) -> T:
        """Run ``op``; a :class:`StorageFailedError` from it is remembered for good."""
        try:
            return op()
        except StorageFailedError as exc:
            self._failed = exc
            raise

    # -- reading ---------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index of the durable log (the one after its snapshot)."""
        return self._written.base_index + 1

    @property
    def last_index(self) -> int:
        """The last index of the durable log (the snapshot's if no entry follows it)."""
        return self._written.next_index - 1

    @property
    def hard_state(self) -> HardState:
        """The durable hard state."""
        return self._written.hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        """The durable snapshot the log starts after (``None``: the log starts at 1)."""
        return self._snapshot_meta

    def disk_usage(self) -> DiskUsage:
        """Bytes on disk, read from the directories now (any thread)."""
        files = self._snaps.files()
        snapshot_bytes = 0
        for f in files:
            try:
                snapshot_bytes += self.fs.disk_bytes(f.path)
            except OSError:
                pass  # released meanwhile
        segments = self._wal.list_segments()
        wal_bytes = 0
        for _, path in segments:
            try:
                wal_bytes += self.fs.disk_bytes(path)
            except OSError:
                pass
        return DiskUsage(wal_bytes, len(segments), snapshot_bytes, len(files))

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Sync what is pending (with ``sync=False``, just write it), close the files and
        release the directory's lock. Idempotent; raises what :meth:`sync` raises, after
        releasing everything."""
        with self._snap_lock, self._lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self._run(lambda: self._flush(closing=True))
            finally:
                self._release_handles()

    def abandon(self) -> None:
        """Close without writing what is pending, as a crash would (for tests)."""
        with self._lock:
            if not self._closed:
                self._release_handles()

    def _release_handles(self) -> None:
        self._closed = True
        self._wal.close()
        self.fs.close(self._lock_fd)

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_dirs(fs: FileSystem, path: str, *, sync: bool) -> None:
    """Create ``path`` and missing parents, each made durable in its parent."""
    missing = []
    while not fs.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        with writing("creating directory", d):
            fs.mkdir(d)
        if sync:
            fsync_dir(fs, os.path.dirname(d))
