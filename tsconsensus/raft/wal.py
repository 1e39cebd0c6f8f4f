"""The write-ahead log: segment files in ``<state_dir>/wal/``, replayed at open, then appended.

Segments are named ``<seq>-<next index>.wal`` (16 hex digits each), preallocated to
``segment_bytes`` and zero-filled, and hold frames (see :mod:`.wal_records`). A segment is
created as ``<name>.tmp`` holding its header, synced, renamed, and the directory synced, so a
segment with a final name always starts with a good header. Each append writes one frame with
one write and syncs it with one ``fdatasync``; a new segment is started only when the frame
does not fit, and every segment before it has already been synced.

Recovery (:meth:`Wal.open`) replays the segments in order. A bad frame at the end of the last
segment with nothing good after it is a torn write: it is cut (the file truncated there and
preallocated again, so no stale byte can be read as data later). A bad frame anywhere else, or
one followed by a good frame, is damage: :class:`CorruptStorageError` names the file and offset.

Not thread-safe: the storage serialises every call.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from dataclasses import dataclass, field

from ..errors import CorruptStorageError, DecodeError, DiskFullError
from .files import FileSystem, fsync_dir, remove_quietly, syncing, write_all, writing
from .messages import Entry, HardState
from .wal_records import (
    HEADER_BYTES,
    SEGMENT_FRAME_BYTES,
    FrameType,
    Marker,
    SegmentHeader,
    decode_items,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    scan_segment,
)

log = logging.getLogger("tsconsensus.raft.storage")

DEFAULT_SEGMENT_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 4096
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


@dataclass
class _Segment:
    seq: int
    path: str
    max_entry: int = 0
    """The largest entry index written in it: the segment is dead once a snapshot covers it."""


@dataclass
class Recovered:
    """What replaying the WAL found. ``entries`` run from ``lo`` without gaps (they may reach
    back before the snapshot base, which lets recovery fall back to an older snapshot file);
    ``first_base`` is the base recorded in the oldest segment's header."""

    hard_state: HardState
    base_index: int
    base_term: int
    lo: int
    entries: list[Entry] = field(default_factory=list)
    first_base: tuple[int, int] = (0, 0)
    has_data: bool = False

    @property
    def next_index(self) -> int:
        return self.lo + len(self.entries)

    def term(self, index: int) -> int | None:
        if self.lo <= index < self.next_index:
            return self.entries[index - self.lo].term
        return None


class _Replay:
    """Applies the items of successive frames to a :class:`Recovered`; each method returns a
    problem (a sentence) when the item cannot be part of a log this code wrote."""

    def __init__(self, header: SegmentHeader) -> None:
        base = (header.base_index, header.base_term)
        self.rec = Recovered(header.hard_state, *base, header.next_index, first_base=base)
        self.reset_seq = 0

    def segment(self, header: SegmentHeader) -> str | None:
        if header.next_index != self.rec.next_index:
            return (
                f"segment starts at entry {header.next_index} but the log before it ends at "
                f"{self.rec.next_index - 1}"
            )
        return None

    def entry(self, e: Entry) -> str | None:
        rec = self.rec
        if e.index > rec.next_index:
            return f"entry {e.index} leaves a gap after entry {rec.next_index - 1}"
        if e.index <= rec.base_index:
            return f"entry {e.index} is covered by the snapshot at {rec.base_index}"
        if e.index < rec.lo:
            # replaces entries that an older, deleted segment held
            rec.entries, rec.lo = [], e.index
        else:
            del rec.entries[e.index - rec.lo :]
        rec.entries.append(e)
        return None

    def marker(self, m: Marker, seq: int) -> str | None:
        rec = self.rec
        if m.reset:
            rec.entries, rec.lo = [], m.index + 1
            self.reset_seq = seq
        elif m.index >= rec.next_index:
            return f"snapshot marker at {m.index} is past the log's end {rec.next_index - 1}"
        elif m.index >= rec.lo and rec.term(m.index) != m.term:
            return f"snapshot marker ({m.index}, term {m.term}) disagrees with the log"
        rec.base_index, rec.base_term = m.index, m.term
        return None


def segment_name(seq: int, next_index: int) -> str:
    return f"{seq:016x}-{next_index:016x}.wal"


class Wal:
    """The segments of one state directory. Use :meth:`open` (existing segments) or
    :meth:`create` (none yet)."""

    def __init__(self, fs: FileSystem, directory: str, *, segment_bytes: int, sync: bool) -> None:
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes {segment_bytes}: must be at least {MIN_SEGMENT_BYTES}")
        self.fs = fs
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.sync = sync
        self.segments: list[_Segment] = []
        self.reset_seq = 0
        self._fd = -1
        self._offset = 0  # where the next frame goes in the last segment
        self._allocated = 0  # bytes reserved in the last segment
        self._target = 0  # what it should have reserved (less only after a full disk)
        self._empty = True  # the last segment holds no batch yet

    # -- opening ---------------------------------------------------------------------------

    def list_segments(self) -> list[tuple[int, str]]:
        found = []
        for name in self.fs.listdir(self.dir):
            m = _NAME.match(name)
            if m:
                found.append((int(m[1], 16), os.path.join(self.dir, name)))
        return sorted(found)

    def remove_temporary(self) -> None:
        removed = [n for n in self.fs.listdir(self.dir) if n.endswith(".tmp")]
        for name in removed:
            remove_quietly(self.fs, os.path.join(self.dir, name))
        if removed and self.sync:
            fsync_dir(self.fs, self.dir)

    def create(self, header: SegmentHeader) -> None:
        """Start the first segment of an empty directory (durable on return, with sync)."""
        self._start_segment(header, self.segment_bytes)

    def open(self) -> Recovered | None:
        """Replay every segment; ``None`` if there is none. Cuts a torn tail of the last one;
        raises :class:`CorruptStorageError` on anything else that is wrong."""
        self.remove_temporary()
        found = self.list_segments()
        if not found:
            return None
        replay: _Replay | None = None
        for n, (seq, path) in enumerate(found):
            if n > 0 and seq != found[n - 1][0] + 1:
                raise CorruptStorageError(path, 0, f"segment {found[n - 1][0] + 1} is missing")
            last = n == len(found) - 1
            replay = self._replay_segment(seq, path, replay, last=last)
        assert replay is not None
        self.reset_seq = replay.reset_seq
        return replay.rec

    def _replay_segment(
        self, seq: int, path: str, replay: _Replay | None, *, last: bool
    ) -> _Replay:
        # only the last segment is ever written again
        fd = self.fs.open(path, os.O_RDWR if last else os.O_RDONLY)
        try:
            size = self.fs.fstat_size(fd)
            if size < HEADER_BYTES:
                raise CorruptStorageError(path, 0, f"segment of {size} bytes has no header")
            raw = self.fs.map_readonly(fd, size)
            replay, end, torn = self._replay_frames(raw, seq, path, replay, last=last)
            try:
                raw.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with it
        except BaseException:
            self.fs.close(fd)
            raise
        if not last:
            self.fs.close(fd)
            return replay
        self._fd, self._offset, self._allocated = fd, end, size
        self._target = max(size, self.segment_bytes)
        self._empty = end <= SEGMENT_FRAME_BYTES
        if torn:
            self._cut(path, end)
        return replay

    def _replay_frames(
        self, raw: mmap.mmap, seq: int, path: str, replay: _Replay | None, *, last: bool
    ) -> tuple[_Replay, int, bool]:
        scan = scan_segment(raw)
        if scan.problem is not None and (not last or scan.valid_after is not None):
            after = (
                f"a good frame follows at offset {scan.valid_after}"
                if scan.valid_after is not None
                else "a later segment follows"
            )
            raise CorruptStorageError(path, scan.end, f"{scan.problem}, and {after}")
        frames = scan.frames
        if not frames or frames[0].type is not FrameType.SEGMENT:
            raise CorruptStorageError(path, 0, scan.problem or "no segment header")
        try:
            header = decode_segment_header(frames[0].payload)
        except DecodeError as exc:
            raise CorruptStorageError(path, 0, str(exc)) from None
        if header.seq != seq:
            raise CorruptStorageError(path, 0, f"header says segment {header.seq}")
        if replay is None:
            replay = _Replay(header)
        elif (problem := replay.segment(header)) is not None:
            raise CorruptStorageError(path, 0, problem)
        segment = _Segment(seq, path)
        for frame in frames[1:]:
            if frame.type is not FrameType.BATCH:
                raise CorruptStorageError(path, frame.offset, "a second segment header")
            replay.rec.has_data = True
            try:
                for pos, item in decode_items(frame.payload):
                    if isinstance(item, Entry):
                        problem = replay.entry(item)
                        segment.max_entry = max(segment.max_entry, item.index)
                    elif isinstance(item, Marker):
                        problem = replay.marker(item, seq)
                    else:
                        replay.rec.hard_state, problem = item, None
                    if problem is not None:
                        raise CorruptStorageError(path, frame.offset, f"item +{pos}: {problem}")
            except DecodeError as exc:
                raise CorruptStorageError(path, frame.offset, str(exc)) from None
        self.segments.append(segment)
        if scan.problem is not None:
            log.warning("%s: cutting a torn write at offset %d (%s)", path, scan.end, scan.problem)
        return replay, scan.end, scan.problem is not None

    def _cut(self, path: str, end: int) -> None:
        with writing("cutting the torn tail of", path):
            self.fs.ftruncate(self._fd, end)
        with syncing(path):
            self.fs.fsync(self._fd)
        self._allocated = end
        try:
            self._reserve()
        except DiskFullError:
            pass  # the next append reserves again, or reports the full disk

    # -- appending -------------------------------------------------------------------------

    @property
    def current_path(self) -> str:
        return self.segments[-1].path

    def append(self, payload: bytes, header: SegmentHeader, max_entry: int, reset: bool) -> None:
        """Write one batch frame and sync it (one write, one fdatasync). ``header`` describes
        the log before this frame, for a new segment if one is needed (its ``seq`` is
        ignored).

        Raises :class:`DiskFullError` with the WAL exactly as before (retry later), or
        :class:`StorageFailedError` (fatal)."""
        frame = encode_frame(FrameType.BATCH, payload)
        if self._offset + len(frame) > self._target and self._empty:
            # a frame larger than a segment: grow this empty one rather than start another
            self._target = self._offset + len(frame)
        if self._offset + len(frame) > self._allocated and self._allocated < self._target:
            self._reserve()
        if self._offset + len(frame) > self._allocated:
            size = max(self.segment_bytes, 2 * HEADER_BYTES + 64 + len(frame))
            self._start_segment(header, size)
        path = self.current_path
        try:
            with writing("writing", path):
                write_all(self.fs, self._fd, frame, self._offset)
        except DiskFullError:
            self._undo_write(path)
            raise
        if self.sync:
            with syncing(path):
                self.fs.fdatasync(self._fd)
        self._offset += len(frame)
        self._empty = False
        segment = self.segments[-1]
        segment.max_entry = max(segment.max_entry, max_entry)
        if reset:
            self.reset_seq = segment.seq

    def _reserve(self) -> None:
        """Preallocate the last segment again after a full disk took its reservation."""
        with writing("preallocating", self.current_path):
            self.fs.fallocate(self._fd, 0, self._target)
        self._allocated = self._target

    def _undo_write(self, path: str) -> None:
        # nothing of a failed write may be read back: drop it, then try to keep the
        # reservation (which may itself fail while the disk is full)
        with writing("truncating", path):
            self.fs.ftruncate(self._fd, self._offset)
        self._allocated = self._offset
        try:
            self._reserve()
        except DiskFullError:
            pass

    def _start_segment(self, header: SegmentHeader, size: int) -> None:
        seq = self.segments[-1].seq + 1 if self.segments else 1
        path = os.path.join(self.dir, segment_name(seq, header.next_index))
        tmp = path + ".tmp"
        head = encode_segment_header(
            SegmentHeader(
                seq, header.next_index, header.base_index, header.base_term, header.hard_state
            )
        )
        with writing("creating segment", tmp):
            fd = self.fs.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with writing("creating segment", tmp):
                self.fs.fallocate(fd, 0, size)
                write_all(self.fs, fd, head, 0)
            if self.sync:
                with syncing(tmp):
                    self.fs.fsync(fd)
            with writing("creating segment", tmp):
                self.fs.rename(tmp, path)
        except BaseException as exc:
            self.fs.close(fd)
            if isinstance(exc, DiskFullError):
                remove_quietly(self.fs, tmp)
            raise
        if self.sync:
            fsync_dir(self.fs, self.dir)
        if self._fd >= 0:
            self.fs.close(self._fd)
        self.segments.append(_Segment(seq, path))
        self._fd, self._offset = fd, len(head)
        self._allocated = self._target = size
        self._empty = True

    # -- releasing -------------------------------------------------------------------------

    def release(self, base_index: int) -> int:
        """Delete the oldest segments that hold nothing after the snapshot at ``base_index``
        (nor anything before the latest reset); the last segment is always kept. Durable on
        return (with sync); returns how many were deleted."""
        doomed: list[_Segment] = []
        for segment in self.segments[:-1]:
            if not (segment.seq < self.reset_seq or segment.max_entry <= base_index):
                break
            doomed.append(segment)
        for segment in doomed:
            with writing("deleting segment", segment.path):
                self.fs.unlink(segment.path)
            # oldest first, each made durable before the next: whatever a crash keeps is a
            # run of consecutive segments whose first header holds the base and hard state
            if self.sync:
                fsync_dir(self.fs, self.dir)
            self.segments.pop(0)
        return len(doomed)

    def disk_bytes(self) -> int:
        total = 0
        for segment in self.segments:
            try:
                total += self.fs.disk_bytes(segment.path)
            except OSError:
                pass
        return total

    def close(self) -> None:
        if self._fd >= 0:
            self.fs.close(self._fd)
            self._fd = -1
