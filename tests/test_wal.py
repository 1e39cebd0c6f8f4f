"""The WAL on real files: round trips, torn tails at every byte, corruption, preallocation,
segment rollover and replay across segments, entries replaced from an index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tsconsensus.errors import CorruptStorageError
from tsconsensus.raft.messages import Entry, EntryKind, HardState
from tsconsensus.raft.storage import FileStorage
from tsconsensus.raft.wal_records import (
    FrameType,
    Marker,
    decode_items,
    encode_frame,
    encode_items,
    scan_segment,
)

SMALL = 4096


def entry(index: int, term: int = 1, size: int = 40) -> Entry:
    return Entry(index, term, EntryKind.NORMAL, bytes([index % 251]) * size, time=index)


def segments(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "wal").glob("*.wal"))


def frames_of(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of each frame in a segment."""
    scan = scan_segment(path.read_bytes())
    assert scan.problem is None
    return [(f.offset, f.offset + 16 + len(f.payload)) for f in scan.frames]


def write_log(state_dir: Path, n: int, *, segment_bytes: int = 1 << 20) -> None:
    with FileStorage(state_dir, segment_bytes=segment_bytes) as s:
        for i in range(1, n + 1):
            s.save(HardState(1, 0, i - 1), [entry(i)])


def reopen_entries(state_dir: Path, segment_bytes: int = 1 << 20) -> list[Entry]:
    with FileStorage(state_dir, segment_bytes=segment_bytes) as s:
        return list(s.initial_state().entries)


# -- the format ---------------------------------------------------------------------------


def test_items_round_trip() -> None:
    items = encode_items(Marker(7, 2, True), [entry(8, 2), entry(9, 3)], HardState(3, 5, 8))
    decoded = [item for _, item in decode_items(memoryview(items))]
    assert decoded == [Marker(7, 2, True), entry(8, 2), entry(9, 3), HardState(3, 5, 8)]


def test_scan_stops_at_zeros_and_reports_garbage() -> None:
    one = encode_frame(FrameType.BATCH, b"abc")
    two = encode_frame(FrameType.BATCH, b"defg")
    clean = scan_segment(one + two + bytes(100))
    assert [bytes(f.payload) for f in clean.frames] == [b"abc", b"defg"]
    assert clean.problem is None and clean.end == len(one + two)
    torn = scan_segment(one + two[:-2] + bytes(100))
    assert torn.end == len(one) and torn.garbage and torn.valid_after is None
    damaged = scan_segment(one + b"\xff" + two[1:] + one + bytes(10))
    assert damaged.end == len(one) and damaged.valid_after == len(one + two)


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_entries_and_hard_state(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        assert s.initial_state().entries == () and s.last_index == 0
        s.save(HardState(1, 42, 0), [entry(1), entry(2)])
        s.save(None, [entry(3, 2)])
        s.save(HardState(2, 0, 3))
        assert (s.first_index, s.last_index) == (1, 3)
        member = s.member_id
    with FileStorage(tmp_path) as s:
        st = s.initial_state()
        assert st.entries == (entry(1), entry(2), entry(3, 2))
        assert st.hard_state == HardState(2, 0, 3)
        assert st.snapshot is None and s.member_id == member
        assert s.hard_state == HardState(2, 0, 3) and s.last_index == 3


def test_appends_wait_for_sync_and_share_one_frame(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as s:
        s.append(HardState(1, 0, 0), [entry(1)])
        s.append(None, [entry(2)])
        assert s.last_index == 0  # durable view: nothing synced yet
        before = frames_of(segments(tmp_path)[0])
        s.sync()
        assert s.last_index == 2
        assert len(frames_of(segments(tmp_path)[0])) == len(before) + 1
        s.sync()  # nothing pending: nothing written
        assert len(frames_of(segments(tmp_path)[0])) == len(before) + 1
    assert reopen_entries(tmp_path) == [entry(1), entry(2)]


def test_entries_replaced_from_an_index_survive_replay(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.save(HardState(1, 0, 0), [entry(i) for i in range(1, 60)])
        s.save(HardState(2, 0, 0), [entry(i, 2) for i in range(1, 80)][10:])  # 11.. term 2
        s.save(HardState(3, 0, 0), [entry(5, 3), entry(6, 3)])  # back into older segments
        s.save(None, [entry(7, 3)])
    assert reopen_entries(tmp_path, SMALL) == [entry(i) for i in range(1, 5)] + [
        entry(5, 3),
        entry(6, 3),
        entry(7, 3),
    ]


# -- preallocation and segments -------------------------------------------------------------


def test_segments_are_preallocated(tmp_path: Path) -> None:
    with FileStorage(tmp_path, segment_bytes=256 * 1024) as s:
        s.save(HardState(1, 0, 0), [entry(1)])
        (path,) = segments(tmp_path)
        assert path.stat().st_size == 256 * 1024
        assert path.stat().st_blocks * 512 >= 256 * 1024
        assert s.disk_usage().wal_bytes >= 256 * 1024


def test_rollover_and_replay_across_segments(tmp_path: Path) -> None:
    write_log(tmp_path, 300, segment_bytes=SMALL)
    paths = segments(tmp_path)
    assert len(paths) > 5
    seqs = [int(p.name.split("-")[0], 16) for p in paths]
    assert seqs == list(range(1, len(paths) + 1))
    assert all(p.stat().st_size == SMALL for p in paths)
    assert reopen_entries(tmp_path, SMALL) == [entry(i) for i in range(1, 301)]


def test_a_frame_larger_than_a_segment(tmp_path: Path) -> None:
    big = [entry(i, size=1000) for i in range(1, 20)]
    with FileStorage(tmp_path, segment_bytes=SMALL) as s:
        s.save(HardState(1, 0, 0), big)
        s.save(None, [entry(20)])
    assert reopen_entries(tmp_path, SMALL) == [*big, entry(20)]


def test_leftover_temporary_segment_is_removed(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    junk = tmp_path / "wal" / "0000000000000002-0000000000000004.wal.tmp"
    junk.write_bytes(b"half a segment")
    assert reopen_entries(tmp_path) == [entry(i) for i in range(1, 4)]
    assert not junk.exists()


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, 200, segment_bytes=SMALL)
    paths = segments(tmp_path)
    paths[2].unlink()
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path, segment_bytes=SMALL)
    assert err.value.path == str(paths[3]) and "segment 3 is missing" in str(err.value)


# -- torn tails -----------------------------------------------------------------------------


def _last_frame(state_dir: Path) -> tuple[Path, int, int]:
    path = segments(state_dir)[-1]
    start, end = frames_of(path)[-1]
    return path, start, end


@pytest.mark.parametrize("how", ["zeroed", "truncated", "flipped"])
def test_torn_last_frame_at_every_byte_loses_only_that_save(tmp_path: Path, how: str) -> None:
    pristine = tmp_path / "pristine"
    write_log(pristine, 5, segment_bytes=SMALL)
    path, start, end = _last_frame(pristine)
    good = path.read_bytes()
    for cut in range(start, end):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        target = work / "wal" / path.name
        raw = bytearray(good)
        if how == "zeroed":  # the write reached the disk up to ``cut`` only
            raw[cut:end] = bytes(end - cut)
        elif how == "flipped":  # one damaged byte in the last, unsynced frame
            raw[cut] ^= 0x5A
        else:
            del raw[cut:]
        target.write_bytes(bytes(raw))
        with FileStorage(work, segment_bytes=SMALL) as s:
            assert list(s.initial_state().entries) == [entry(i) for i in range(1, 5)], cut
            assert s.hard_state == HardState(1, 0, 3)
            s.save(HardState(1, 0, 4), [entry(5, 2)])  # writes after the cut are kept
        after = scan_segment(target.read_bytes())
        assert after.problem is None, (cut, after.problem)
        assert target.stat().st_size == len(good)  # preallocated again
        assert reopen_entries(work, SMALL) == [entry(i) for i in range(1, 5)] + [entry(5, 2)]


def test_torn_tail_of_a_rolled_over_log(tmp_path: Path) -> None:
    write_log(tmp_path, 100, segment_bytes=SMALL)
    path, start, end = _last_frame(tmp_path)
    with open(path, "r+b") as f:
        f.seek(start + 20)
        f.write(b"\0" * (end - start - 20))
    assert reopen_entries(tmp_path, SMALL) == [entry(i) for i in range(1, 100)]


# -- corruption -----------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("where", ["header", "length", "payload", "last byte"])
def test_damaged_middle_frame_is_corruption_naming_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    write_log(tmp_path, 6)
    (path,) = segments(tmp_path)
    start, end = frames_of(path)[3]
    offset = {"header": start, "length": start + 8, "payload": start + 30, "last byte": end - 1}
    _flip(path, offset[where])
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path)
    assert err.value.path == str(path) and err.value.offset == start
    assert str(path) in str(err.value) and f"offset {start}" in str(err.value)
    assert "wipe its state directory" in str(err.value)


def test_lost_middle_frame_followed_by_good_ones_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, 6)
    (path,) = segments(tmp_path)
    start, end = frames_of(path)[2]
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path)
    assert err.value.offset == start


def test_damage_at_the_end_of_an_older_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, 100, segment_bytes=SMALL)
    older = segments(tmp_path)[1]
    start, _ = frames_of(older)[-1]
    _flip(older, start + 20)
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path, segment_bytes=SMALL)
    assert err.value.path == str(older) and err.value.offset == start
    assert "later segment" in str(err.value)


def test_damaged_segment_header_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    (path,) = segments(tmp_path)
    _flip(path, 20)
    with pytest.raises(CorruptStorageError) as err:
        FileStorage(tmp_path)
    assert err.value.path == str(path) and err.value.offset == 0


def test_segment_files_keep_their_names_and_sizes(tmp_path: Path) -> None:
    write_log(tmp_path, 50, segment_bytes=SMALL)
    names = [p.name for p in segments(tmp_path)]
    first_indexes = [int(n.split("-")[1].split(".")[0], 16) for n in names]
    assert first_indexes[0] == 1 and first_indexes == sorted(first_indexes)
    assert all(os.path.getsize(p) == SMALL for p in segments(tmp_path))
