"""The storage when things go wrong: failed fsyncs and full disks (injected, and a real full
tmpfs), processes killed with SIGKILL in power-loss mode, and fsyncs counted from outside by
strace."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsconsensus.errors import DiskFullError, StorageFailedError
from tsconsensus.raft.files import Buffer, FileSystem
from tsconsensus.raft.messages import HardState
from tsconsensus.raft.storage import FileStorage
from tsconsensus.raft.wal_records import scan_segment

from .helpers import tmpfs
from .test_storage import SMALL, entry, fill, segment_names, snap

# -- disk errors ----------------------------------------------------------------------------


class FaultyFS(FileSystem):
    """Fails the chosen call with the chosen errno; a write can fail half-way."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.partial = False

    def _maybe(self, name: str) -> None:
        if name in self.fail:
            code = self.fail[name]
            raise OSError(code, os.strerror(code))

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        if "pwrite" in self.fail and self.partial and len(data) > 1:
            self.partial = False  # half of it lands, then the disk is full
            return os.pwrite(fd, memoryview(data)[: len(data) // 2], offset)
        self._maybe("pwrite")
        return super().pwrite(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        self._maybe("fdatasync")
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._maybe("fsync")
        super().fsync(fd)

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        self._maybe("fallocate")
        super().fallocate(fd, offset, length)


def test_failed_fdatasync_is_final(tmp_path: Path) -> None:
    fs = FaultyFS()
    s = FileStorage(tmp_path, fs=fs)
    fill(s, 1, 2)
    fs.fail["fdatasync"] = errno.EIO
    with pytest.raises(StorageFailedError, match="not retried") as err:
        s.save(None, [entry(3)])
    assert err.value.path.endswith(".wal")
    del fs.fail["fdatasync"]
    with pytest.raises(StorageFailedError, match="failed earlier"):
        s.save(None, [entry(3)])
    with pytest.raises(StorageFailedError):
        s.sync()
    s.close()  # releases the lock even so
    FileStorage(tmp_path).close()


def test_failed_fsync_of_a_snapshot_is_final(tmp_path: Path) -> None:
    fs = FaultyFS()
    with FileStorage(tmp_path, fs=fs) as s:
        fill(s, 1, 5)
        fs.fail["fsync"] = errno.EIO
        with pytest.raises(StorageFailedError):
            s.save_snapshot(snap(5))
        with pytest.raises(StorageFailedError):
            s.save(None, [entry(6)])


@pytest.mark.parametrize("partial", [False, True])
def test_full_disk_on_write_leaves_the_wal_as_before(tmp_path: Path, partial: bool) -> None:
    fs = FaultyFS()
    with FileStorage(tmp_path, fs=fs) as s:
        fill(s, 1, 3)
        (segment,) = (tmp_path / "wal").glob("*.wal")
        before = segment.read_bytes()
        fs.fail["pwrite"], fs.partial = errno.ENOSPC, partial
        with pytest.raises(DiskFullError) as err:
            s.save(HardState(1, 0, 3), [entry(4)])
        assert err.value.path == str(segment)
        assert segment.read_bytes() == before  # nothing half-written is left to be read
        assert s.last_index == 3
        del fs.fail["pwrite"]
        s.save(HardState(1, 0, 3), [entry(4)])  # the same call, retried
    with FileStorage(tmp_path) as s:
        assert [e.index for e in s.initial_state().entries] == [1, 2, 3, 4]


def test_full_disk_on_a_new_segment_leaves_the_wal_as_before(tmp_path: Path) -> None:
    fs = FaultyFS()
    with FileStorage(tmp_path, fs=fs, segment_bytes=SMALL) as s:
        fs.fail["fallocate"] = errno.ENOSPC
        i = 0
        with pytest.raises(DiskFullError):
            while True:  # bounded: the first segment fills within a few dozen saves
                i += 1
                s.save(None, [entry(i)])
        assert len(segment_names(tmp_path)) == 1 and s.last_index == i - 1
        assert not list((tmp_path / "wal").glob("*.tmp"))
        with pytest.raises(DiskFullError):
            s.save(None, [entry(i)])
        del fs.fail["fallocate"]
        s.save(None, [entry(i)])
        assert len(segment_names(tmp_path)) == 2
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        assert [e.index for e in s.initial_state().entries] == list(range(1, i + 1))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount permission), unmounted afterwards."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    with tmpfs(mnt, "size=2m"):
        yield mnt


def test_real_full_disk_then_space_returns(small_tmpfs: Path) -> None:
    state = small_tmpfs / "node"
    with FileStorage(state, segment_bytes=256 * 1024) as s:
        filler = small_tmpfs / "filler"
        with open(filler, "wb") as f:  # leave less than a segment free
            try:
                while True:
                    f.write(b"\1" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        i = 0
        with pytest.raises(DiskFullError) as err:
            while True:
                i += 1
                s.save(HardState(1, 0, i - 1), [entry(i, size=200)])
        assert str(small_tmpfs) in str(err.value)
        durable = s.last_index
        assert durable == i - 1
        with pytest.raises(DiskFullError):
            s.save_snapshot(snap(durable, data=b"x" * 300_000))
        assert not [p for p in state.rglob("*.tmp")]
        with pytest.raises(DiskFullError):
            s.save(HardState(1, 0, i - 1), [entry(i, size=200)])
        filler.unlink()
        s.save(HardState(1, 0, i - 1), [entry(i, size=200)])
        assert s.save_snapshot(snap(i, data=b"x" * 300_000))
    with FileStorage(state, segment_bytes=256 * 1024) as s:
        st = s.initial_state()
        assert st.snapshot is not None and st.snapshot.meta.index == i
        assert s.last_index == i


# -- power loss: real processes killed with SIGKILL ---------------------------------------

KILL_AFTER = """
import os, signal, sys
from tsconsensus.raft.messages import Entry, HardState
from tsconsensus.raft.storage import FileStorage
state_dir, synced, unsynced, sync, power_loss = sys.argv[1:6]
s = FileStorage(state_dir, sync=sync == "1", power_loss=power_loss == "1", segment_bytes=8192)
for i in range(1, int(synced) + 1):
    s.save(HardState(1, 0, i - 1), [Entry(i, 1, data=b"%d" % i)])
n = int(synced)
for i in range(n + 1, n + int(unsynced) + 1):
    s.append(HardState(1, 0, i - 1), [Entry(i, 1, data=b"%d" % i)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_and_kill(
    state_dir: Path, synced: int, unsynced: int, sync: bool, power_loss: bool
) -> None:
    args = [str(state_dir), str(synced), str(unsynced), str(int(sync)), str(int(power_loss))]
    done = subprocess.run([sys.executable, "-c", KILL_AFTER, *args], timeout=120)
    assert done.returncode == -signal.SIGKILL


def test_sigkill_loses_exactly_the_unsynced_appends(tmp_path: Path) -> None:
    _run_and_kill(tmp_path, 40, 25, sync=True, power_loss=True)
    with FileStorage(tmp_path) as s:
        st = s.initial_state()
        assert [e.index for e in st.entries] == list(range(1, 41))
        assert st.hard_state == HardState(1, 0, 39)


def test_without_sync_power_loss_mode_loses_everything(tmp_path: Path) -> None:
    _run_and_kill(tmp_path, 30, 0, sync=False, power_loss=True)
    with FileStorage(tmp_path) as s:
        assert s.initial_state().entries == ()
    # without power-loss mode the OS has the writes: a SIGKILL alone does not lose them
    _run_and_kill(tmp_path / "b", 30, 0, sync=False, power_loss=False)
    with FileStorage(tmp_path / "b") as s:
        assert len(s.initial_state().entries) == 30


# -- fsyncs counted from outside ------------------------------------------------------------

SAVES = """
import sys
from tsconsensus.raft.messages import Entry, HardState
from tsconsensus.raft.storage import FileStorage
s = FileStorage(sys.argv[1])
for i in range(1, int(sys.argv[2]) + 1):
    s.save(HardState(1, 0, i - 1), [Entry(i, 1, data=b"x" * 256)])
s.abandon()
"""


def _count_syncs(state_dir: Path, saves: int, trace: Path) -> dict[str, int]:
    strace = shutil.which("strace")
    assert strace is not None
    command = [strace, "-f", "-o", str(trace), "-e", "trace=fdatasync,fsync", sys.executable]
    subprocess.run(
        [*command, "-c", SAVES, str(state_dir), str(saves)],
        check=True,
        timeout=120,
    )
    calls = re.findall(r"\b(fdatasync|fsync)\(", trace.read_text())
    return {name: calls.count(name) for name in ("fdatasync", "fsync")}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_strace_sees_one_fdatasync_per_save(tmp_path: Path) -> None:
    FileStorage(tmp_path / "node").close()  # the directory exists: opening costs the same
    base = _count_syncs(tmp_path / "node", 0, tmp_path / "t0")
    counted = _count_syncs(tmp_path / "node", 25, tmp_path / "t1")
    assert counted["fdatasync"] - base["fdatasync"] == 25
    assert counted["fsync"] == base["fsync"]


def test_segment_ends_clean_after_every_save(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        fill(s, 1, 10)
        (segment,) = (tmp_path / "wal").glob("*.wal")
        scan = scan_segment(segment.read_bytes())
        assert scan.problem is None and len(scan.frames) == 11
