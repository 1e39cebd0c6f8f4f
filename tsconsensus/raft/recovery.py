"""Choosing the snapshot a node restarts from, and the entries that follow it."""

from __future__ import annotations

import logging
import os

from ..errors import CorruptStorageError
from .messages import Entry, Snapshot
from .snapshot_store import SnapshotFile, SnapshotFileError, SnapshotStore, file_name
from .wal import Recovered, Wal

log = logging.getLogger("tsconsensus.raft.storage")


def recover_snapshot(
    snaps: SnapshotStore, wal: Wal, rec: Recovered, files: list[SnapshotFile]
) -> tuple[Snapshot | None, list[Entry]]:
    """The snapshot and the entries after it that the node starts from, given what the WAL
    replay found. Uses the snapshot the WAL's latest marker names; if its file is missing or
    damaged, the newest older one the WAL still covers (damaged files are then renamed aside).
    Removes snapshot files no marker refers to (written just before a crash). Raises
    :class:`CorruptStorageError` when no usable snapshot and WAL fit together."""
    index, term = rec.base_index, rec.base_term
    # files the WAL never referred to: written just before a crash
    orphans = [f for f in files if f.index > index or (f.index == index and f.term != term)]
    if orphans:
        log.info("removing snapshot files no WAL marker refers to: %s", orphans)
        snaps.remove(orphans)
    snapshot: Snapshot | None = None
    if index > 0:
        path = os.path.join(snaps.dir, file_name(index, term))
        found = [f for f in files if (f.index, f.term) == (index, term)]
        problem = f"snapshot file {path} is missing"
        damaged: list[SnapshotFile] = []
        if found:
            try:
                snapshot = snaps.load(found[0])
            except SnapshotFileError as exc:
                problem = f"snapshot file is damaged: {exc}"
                damaged.append(found[0])
        if snapshot is None:
            older = [f for f in files if f.index < index]
            snapshot = _fall_back(snaps, rec, older, path, problem, damaged)
            # only once recovery succeeded: a failed open leaves the evidence in place
            for f in damaged:
                snaps.set_aside(f)
    used = snapshot.meta.index if snapshot else 0
    if used + 1 < rec.lo:
        first = wal.segments[0].path if wal.segments else wal.dir
        raise CorruptStorageError(
            first, 0, f"the WAL starts at entry {rec.lo} but the snapshot ends at {used}"
        )
    return snapshot, rec.entries[used + 1 - rec.lo :]


def _fall_back(
    snaps: SnapshotStore,
    rec: Recovered,
    older: list[SnapshotFile],
    path: str,
    problem: str,
    damaged: list[SnapshotFile],
) -> Snapshot | None:
    """The newest older snapshot the WAL still covers (``None``: the WAL holds the whole
    log); files found damaged on the way are added to ``damaged``."""
    for f in reversed(older):
        covered = (f.index >= rec.lo and rec.term(f.index) == f.term) or (
            (f.index, f.term) == rec.first_base and f.index + 1 == rec.lo
        )
        if not covered:
            continue
        try:
            snapshot = snaps.load(f)
        except SnapshotFileError:
            damaged.append(f)
            continue
        log.warning("%s; starting from the older snapshot %s and the WAL", problem, f.path)
        return snapshot
    if rec.lo == 1:
        log.warning("%s; starting from the whole log in the WAL", problem)
        return None
    raise CorruptStorageError(
        path, 0, f"{problem}, and the WAL no longer holds the entries after an older one"
    )
