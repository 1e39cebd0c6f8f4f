"""The storage around the WAL: identity, lock, snapshots and WAL release, disk errors (injected
and on a real full tmpfs), power-loss mode with real SIGKILLs, fsyncs counted by strace, and a
model-based test of random save/snapshot/crash sequences."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tsconsensus.errors import (
    CorruptStorageError,
    StateDirLockedError,
    StorageError,
)
from tsconsensus.raft.memory_storage import MemoryStorage
from tsconsensus.raft.messages import Entry, HardState, Membership, Snapshot, SnapshotMeta
from tsconsensus.raft.storage import FileStorage, open_storage

SMALL = 4096
MEMBERS = Membership(frozenset({1, 2, 3}), frozenset(), {1: "a", 2: "b", 3: "c"})


def entry(index: int, term: int = 1, size: int = 40) -> Entry:
    return Entry(index, term, data=bytes([index % 251]) * size, time=index)


def snap(index: int, term: int = 1, data: bytes = b"", cluster: int = 0) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, MEMBERS, cluster, index), data or b"S%d" % index)


def segment_names(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "wal").glob("*.wal"))


def snapshot_names(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "snapshots").iterdir())


def fill(s: FileStorage, first: int, last: int, term: int = 1) -> None:
    for i in range(first, last + 1):
        s.save(HardState(term, 0, i - 1), [entry(i, term)])


# -- identity and memory --------------------------------------------------------------------


def test_identity_is_created_once_and_cluster_id_set_once(tmp_path: Path) -> None:
    with FileStorage(tmp_path / "node") as s:
        member = s.member_id
        assert 0 < member < 2**64 and s.cluster_id == 0
        s.set_cluster_id(77)
        s.set_cluster_id(77)
        with pytest.raises(StorageError, match="belongs to cluster"):
            s.set_cluster_id(78)
        with pytest.raises(ValueError):
            s.set_cluster_id(0)
    with FileStorage(tmp_path / "node") as s:
        assert (s.member_id, s.cluster_id) == (member, 77)
    with FileStorage(tmp_path / "other") as s:
        assert s.member_id != member


def test_damaged_identity_is_corruption(tmp_path: Path) -> None:
    FileStorage(tmp_path).close()
    raw = bytearray((tmp_path / "IDENTITY").read_bytes())
    raw[12] ^= 1
    (tmp_path / "IDENTITY").write_bytes(bytes(raw))
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path)
    assert err.value.path == str(tmp_path / "IDENTITY")


def test_lost_identity_or_lost_log_refuses_to_start(tmp_path: Path) -> None:
    with FileStorage(tmp_path / "a") as s:
        fill(s, 1, 3)
    (tmp_path / "a" / "IDENTITY").unlink()
    with pytest.raises(StorageError, match="IDENTITY file is gone"):
        FileStorage(tmp_path / "a")
    FileStorage(tmp_path / "b").close()
    shutil.rmtree(tmp_path / "b" / "wal")
    with pytest.raises(StorageError, match="log is lost"):
        FileStorage(tmp_path / "b")


def test_memory_storage_is_a_new_member_each_time() -> None:
    a, b = open_storage(":memory:"), open_storage(":memory:")
    assert isinstance(a, MemoryStorage) and a.member_id != b.member_id
    a.save(HardState(1, 0, 0), [entry(1), entry(2)])
    assert (a.first_index, a.last_index) == (1, 2)
    assert a.save_snapshot(snap(2))
    assert a.snapshot_meta is not None and a.first_index == 3
    with pytest.raises(ValueError, match="gap"):
        a.save(None, [entry(9)])
    assert a.initial_state().entries == ()


@pytest.mark.parametrize(
    ("hard_state", "entries", "problem"),
    [
        (None, [entry(5)], "gap"),
        (None, [entry(2), entry(4)], "consecutive"),
        (None, [entry(3, 1)], "lower than before"),
        (HardState(1, 0, 0), (), "lower than the stored"),
        (HardState(2, 9, 0), (), "changes the vote"),
    ],
)
def test_appends_no_core_makes_are_refused(
    tmp_path: Path, hard_state: HardState | None, entries: list[Entry], problem: str
) -> None:
    with FileStorage(tmp_path) as s:
        s.save(HardState(2, 7, 0), [entry(1, 1), entry(2, 2)])
        with pytest.raises(ValueError, match=problem):
            s.save(hard_state, entries)
        assert s.last_index == 2 and s.hard_state == HardState(2, 7, 0)
    with FileStorage(tmp_path) as s:
        assert s.initial_state().entries == (entry(1, 1), entry(2, 2))


# -- lock -----------------------------------------------------------------------------------

HOLD = """
import sys
from tsconsensus.raft.storage import FileStorage
s = FileStorage(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def _read_line(proc: subprocess.Popen[str], deadline_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], deadline_s)
    assert ready, "child did not answer in time"
    return proc.stdout.readline().strip()


def test_second_storage_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        with pytest.raises(StateDirLockedError) as err:
            FileStorage(tmp_path)
        assert err.value.path == str(tmp_path) and err.value.pid == os.getpid()
        assert s.member_id
    FileStorage(tmp_path).close()  # released on close


def test_lock_held_by_another_process_names_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _read_line(proc, 30) == "ready"
        with pytest.raises(StateDirLockedError) as err:
            FileStorage(tmp_path)
        assert err.value.pid == proc.pid and str(proc.pid) in str(err.value)
        assert str(tmp_path) in str(err.value)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    FileStorage(tmp_path).close()  # a dead holder holds nothing


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_releases_wal_and_reopens_with_following_entries(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 120)
        before = segment_names(tmp_path)
        assert len(before) > 3
        assert s.save_snapshot(snap(100, data=b"state at 100"))
        after = segment_names(tmp_path)
        assert after == before[-len(after) :] and len(after) < len(before)
        assert snapshot_names(tmp_path) == ["snap-0000000000000064-0000000000000001.snap"]
        fill(s, 121, 130)
        assert (s.first_index, s.last_index) == (101, 130)
        assert s.snapshot_meta == snap(100).meta
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        st = s.initial_state()
        assert st.snapshot is not None and st.snapshot.meta == snap(100).meta
        assert bytes(st.snapshot.data) == b"state at 100"
        assert [e.index for e in st.entries] == list(range(101, 131))
        assert st.hard_state == HardState(1, 0, 129)


def test_a_saved_snapshot_comes_back_as_a_view_of_its_file_not_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 20)
        stored = s.save_snapshot(snap(10, data=data))
        assert stored is not None and stored.meta == snap(10).meta
        assert isinstance(stored.data, memoryview) and stored.data == data
        assert s.save_snapshot(snap(5)) is None  # not newer: nothing done
    with FileStorage(tmp_path, segment_bytes=SMALL, use_mmap=False) as s:
        fill(s, 21, 30)
        copied = s.save_snapshot(snap(25, data=b"kept as passed"))
        assert copied is not None and copied.data == b"kept as passed"


def test_hard_state_survives_the_release_of_the_segment_that_held_it(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.save(HardState(7, 3, 0), [entry(1)])
        for i in range(2, 150):
            s.save(None, [entry(i)])  # no hard state after the first save
        s.save_snapshot(snap(140))
        assert not (tmp_path / "wal" / "0000000000000001-0000000000000001.wal").exists()
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        assert s.initial_state().hard_state == HardState(7, 3, 0)


def test_snapshot_written_on_one_thread_while_another_saves(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 50)

        def saver() -> None:
            try:
                fill(s, 51, 250)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=saver)
        thread.start()
        for at in (10, 30, 50):
            assert s.save_snapshot(snap(at, data=os.urandom(200_000)))
        thread.join(timeout=60)
        assert not thread.is_alive() and not errors
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        st = s.initial_state()
        assert st.snapshot is not None and st.snapshot.meta.index == 50
        assert [e.index for e in st.entries] == list(range(51, 251))


def test_keeps_the_latest_two_snapshot_files(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 40)
        for at in (10, 20, 30, 40):
            assert s.save_snapshot(snap(at))
        assert not s.save_snapshot(snap(25))  # behind the current one: ignored
        assert [int(n[5:21], 16) for n in snapshot_names(tmp_path)] == [30, 40]
        with pytest.raises(ValueError, match="holds no entry"):
            s.save_snapshot(snap(41))


def test_installed_snapshot_replaces_a_diverging_log(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 80)  # term 1 entries that the leader's log does not have past 50
        s.save(HardState(3, 0, 60), [entry(61, 3)], snap(60, 2, b"leader state"))
        assert (s.first_index, s.last_index) == (61, 61)
        s.save(None, [entry(62, 3)])
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        st = s.initial_state()
        assert st.snapshot is not None and st.snapshot.meta.term == 2
        assert st.entries == (entry(61, 3), entry(62, 3))
        assert st.hard_state == HardState(3, 0, 60)
        assert len(segment_names(tmp_path)) <= 2  # the void log before the install is released


def test_damaged_newest_snapshot_falls_back_when_the_wal_covers_it(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=1 << 20) as s:
        fill(s, 1, 30)
        s.save_snapshot(snap(10))
        s.save_snapshot(snap(20))
    newest = tmp_path / "snapshots" / "snap-0000000000000014-0000000000000001.snap"
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with FileStorage(tmp_path, segment_bytes=1 << 20) as s:
        st = s.initial_state()
        assert st.snapshot is not None and st.snapshot.meta.index == 10
        assert [e.index for e in st.entries] == list(range(11, 31))
        with pytest.raises(ValueError, match="covered by a snapshot"):
            s.save(None, [entry(20, 2)])  # the lost snapshot's entries stay committed
        s.save(None, [entry(21, 2)])
    assert (tmp_path / "snapshots" / (newest.name + ".damaged")).exists()


def test_damaged_snapshot_without_wal_cover_is_corruption(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        fill(s, 1, 150)
        s.save_snapshot(snap(140))
    (path,) = (tmp_path / "snapshots").iterdir()
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path, segment_bytes=SMALL)
    assert err.value.path == str(path) and "checksum" in str(err.value)
    assert path.exists()  # a failed open changes nothing on disk


def test_snapshot_file_without_its_marker_is_ignored(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        fill(s, 1, 5)
    # a file whose WAL marker never became durable (the crash came between the two)
    store_dir = tmp_path / "snapshots"
    with FileStorage(tmp_path / "scratch") as other:
        fill(other, 1, 5)
        other.save_snapshot(snap(5))
    (orphan,) = (tmp_path / "scratch" / "snapshots").iterdir()
    shutil.copy(orphan, store_dir / orphan.name)
    (store_dir / "x.snap.tmp").write_bytes(b"half")
    with FileStorage(tmp_path) as s:
        assert s.initial_state().snapshot is None
        assert len(s.initial_state().entries) == 5
    assert snapshot_names(tmp_path) == []


def test_large_snapshot_is_mapped_not_copied(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    with FileStorage(tmp_path) as s:
        fill(s, 1, 3)
        s.save_snapshot(snap(3, data=data))
    with FileStorage(tmp_path) as s:
        got = s.initial_state().snapshot
        assert got is not None and isinstance(got.data, memoryview)
        assert got.data == data


# -- random histories against a model -------------------------------------------------------


class Model:
    """What the log is, by the simplest possible bookkeeping."""

    def __init__(self) -> None:
        self.base: tuple[int, int, bytes] = (0, 0, b"")
        self.entries: dict[int, Entry] = {}
        self.hard_state = HardState()

    def copy(self) -> Model:
        m = Model()
        m.base, m.entries, m.hard_state = self.base, dict(self.entries), self.hard_state
        return m

    @property
    def last(self) -> int:
        return max(self.entries, default=self.base[0])

    def term(self, index: int) -> int | None:
        if index == self.base[0]:
            return self.base[1]
        e = self.entries.get(index)
        return e.term if e else None

    def snapshot(self, index: int, term: int, data: bytes) -> None:
        keep = self.term(index) == term
        self.entries = {i: e for i, e in self.entries.items() if keep and i > index}
        self.base = (index, term, data)

    def append(self, hard_state: HardState | None, entries: list[Entry]) -> None:
        if entries:
            self.entries = {i: e for i, e in self.entries.items() if i < entries[0].index}
            self.entries.update((e.index, e) for e in entries)
        if hard_state is not None:
            self.hard_state = hard_state


def _draw_entries(data: st.DataObject, m: Model, first: int | None = None) -> list[Entry]:
    if first is None:
        first = data.draw(st.integers(m.base[0] + 1, m.last + 1), label="first")
    term = (m.term(first - 1) or 1) + data.draw(st.integers(0, 1), label="term step")
    out = []
    for index in range(first, first + data.draw(st.integers(0, 6), label="count")):
        term += data.draw(st.integers(0, 1))
        out.append(Entry(index, term, data=os.urandom(data.draw(st.integers(0, 1000)))))
    return out


def _draw_hard_state(data: st.DataObject, m: Model) -> HardState | None:
    if not data.draw(st.booleans(), label="with hard state"):
        return None
    old = m.hard_state
    term = old.term + data.draw(st.integers(0, 1))
    vote = old.vote if term == old.term and old.vote else data.draw(st.integers(0, 3))
    return HardState(term, vote, data.draw(st.integers(0, m.last + 5)))


def _check(s: FileStorage, m: Model) -> None:
    st_ = s.initial_state()
    assert st_.hard_state == m.hard_state
    if m.base[0] == 0:
        assert st_.snapshot is None
    else:
        assert st_.snapshot is not None
        assert (st_.snapshot.meta.index, st_.snapshot.meta.term) == m.base[:2]
        assert bytes(st_.snapshot.data) == m.base[2]
    assert list(st_.entries) == [m.entries[i] for i in sorted(m.entries)]
    assert (s.first_index, s.last_index) == (m.base[0] + 1, m.last)


OPS = ["save", "save", "save", "append", "sync", "snapshot", "install", "crash", "reopen"]


@settings(
    max_examples=int(os.environ.get("TSC_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_histories_match_a_model(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    state_dir = tmp_path_factory.mktemp("history")
    durable, current = Model(), Model()
    s = FileStorage(state_dir, segment_bytes=SMALL)
    try:
        for _ in range(data.draw(st.integers(5, 40), label="steps")):
            op = data.draw(st.sampled_from(OPS), label="op")
            event(op)
            if op in ("save", "append"):
                hs, entries = _draw_hard_state(data, current), _draw_entries(data, current)
                (s.save if op == "save" else s.append)(hs, entries)
                current.append(hs, entries)
                durable = current.copy() if op == "save" else durable
            elif op == "sync":
                s.sync()
                durable = current.copy()
            elif op == "snapshot" and current.last > current.base[0]:
                index = data.draw(st.integers(current.base[0] + 1, current.last))
                term, blob = current.term(index), os.urandom(data.draw(st.integers(0, 3000)))
                assert term is not None
                assert s.save_snapshot(snap(index, term, blob or b"-"))
                current.snapshot(index, term, blob or b"-")
                durable = current.copy()
            elif op == "install":
                index = data.draw(st.integers(current.base[0] + 1, current.last + 3))
                term = data.draw(st.sampled_from([current.term(index) or 1, 1, 2, 3]))
                blob = os.urandom(data.draw(st.integers(1, 2000)))
                after = current.copy()
                after.snapshot(index, term, blob)
                hs, entries = _draw_hard_state(data, after), _draw_entries(data, after, index + 1)
                s.save(hs, entries, snap(index, term, blob))
                event("install keeps the log" if current.term(index) == term else "install resets")
                after.append(hs, entries)
                current, durable = after, after.copy()
            elif op in ("crash", "reopen"):
                if op == "crash":
                    s.abandon()
                    current = durable.copy()
                else:
                    s.close()
                    durable = current.copy()
                s = FileStorage(state_dir, segment_bytes=SMALL)
                _check(s, durable)
                event(f"reopened with {len(segment_names(state_dir))} segments")
        s.close()
        s = FileStorage(state_dir, segment_bytes=SMALL)
        _check(s, current)
    finally:
        s.close()
