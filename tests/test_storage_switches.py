"""The test-only storage switches a node reads from its environment (``tsconsensus.
_storage_switches``): malformed values are refused, the injected fdatasync failure hits exactly
the N-th call, and the planted ``ack-before-sync`` storage really holds saves back from the
disk (so the durability tests that use it can fail) while keeping membership durable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tsconsensus._storage_switches import (
    AcknowledgeBeforeSync,
    FailingFdatasync,
    open_switched_storage,
)
from tsconsensus.errors import ConfigError, StorageFailedError
from tsconsensus.raft import EntryKind
from tsconsensus.raft.messages import Entry, HardState
from tsconsensus.raft.storage import FileStorage
from tsconsensus.raft.wal import DEFAULT_SEGMENT_BYTES

from .helpers import eventually


def _entries(first: int, n: int, kind: EntryKind = EntryKind.NORMAL) -> list[Entry]:
    return [Entry(i, 1, kind, b"x" * 10) for i in range(first, first + n)]


def _reopened_last_index(path: Path) -> int:
    """What a restart finds: the directory reopened after the storage was abandoned (as a
    SIGKILL leaves it: pending writes never reach the disk)."""
    with FileStorage(path) as again:
        initial = again.initial_state()
        return initial.entries[-1].index if initial.entries else 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TSC_POWER_LOSS", "yes"),
        ("TSC_INJECT_FSYNC_ERROR", "0"),
        ("TSC_INJECT_FSYNC_ERROR", "x"),
        ("TSC_WAL_SEGMENT_BYTES", "100"),
    ],
)
def test_malformed_switches_are_refused(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_switched_storage(str(tmp_path / "s"), sync=True, env={name: value})
    assert name in str(err.value)


def test_no_switch_is_the_plain_storage(tmp_path: Path) -> None:
    storage = open_switched_storage(str(tmp_path / "s"), sync=True, env={})
    try:
        assert isinstance(storage, FileStorage)
        assert type(storage.fs).__name__ == "FileSystem"
    finally:
        storage.close()
    # another layer's planted bug is not the storage's business
    storage = open_switched_storage(
        str(tmp_path / "s"), sync=True, env={"TSC_PLANTED_BUG": "local-reads"}
    )
    storage.close()
    assert isinstance(storage, FileStorage)


def test_small_segments_switch(tmp_path: Path) -> None:
    storage = open_switched_storage(
        str(tmp_path / "s"), sync=True, env={"TSC_WAL_SEGMENT_BYTES": "8192"}
    )
    try:
        for i in range(1, 200, 20):
            storage.save(HardState(1, 0, 0), _entries(i, 20))
        assert storage.disk_usage().wal_segments > 1
        assert storage.disk_usage().wal_bytes < DEFAULT_SEGMENT_BYTES
    finally:
        storage.close()


def test_the_nth_fdatasync_fails_with_eio_and_the_storage_stays_failed(tmp_path: Path) -> None:
    fs = FailingFdatasync(3)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fs.fdatasync(fd)
        fs.fdatasync(fd)
        with pytest.raises(OSError) as raw:
            fs.fdatasync(fd)
        assert raw.value.errno == errno.EIO
        fs.fdatasync(fd)  # only the third
    finally:
        os.close(fd)
    storage = open_switched_storage(
        str(tmp_path / "s"), sync=True, env={"TSC_INJECT_FSYNC_ERROR": "2"}
    )
    try:
        storage.save(HardState(1, 0, 0), _entries(1, 1))
        with pytest.raises(StorageFailedError, match=r"fsync of .*/wal/.* failed: .*errno 5"):
            storage.save(None, _entries(2, 1))
        with pytest.raises(StorageFailedError):  # never retried: failed for good
            storage.save(None, _entries(2, 1))
    finally:
        storage.close()


def test_ack_before_sync_loses_what_it_acknowledged_until_writes_pause(tmp_path: Path) -> None:
    path = tmp_path / "s"
    env = {"TSC_PLANTED_BUG": "ack-before-sync", "TSC_POWER_LOSS": "1"}
    storage = open_switched_storage(str(path), sync=True, env=env)
    assert isinstance(storage, AcknowledgeBeforeSync)
    inner = storage._storage
    storage.save(HardState(1, 1, 0), _entries(1, 1, EntryKind.MEMBERSHIP))  # durable
    storage.save(HardState(1, 1, 1), _entries(2, 5))  # returned, not durable
    storage._stop.set()  # a crash now: the syncer never runs again
    storage._thread.join(5)
    inner.abandon()
    assert _reopened_last_index(path) == 1

    storage = open_switched_storage(str(path), sync=True, env=env)
    assert isinstance(storage, AcknowledgeBeforeSync)
    storage.save(HardState(1, 1, 1), _entries(2, 5))
    # once writes pause, what was saved becomes durable
    eventually(lambda: storage._storage.last_index == 6, 5, what="the lazy sync")
    storage._stop.set()
    storage._thread.join(5)
    storage._storage.abandon()
    assert _reopened_last_index(path) == 6
