"""Snapshot files in ``<state_dir>/snapshots/``.

One file per snapshot, named ``snap-<index>-<term>.snap`` (16 hex digits each)::

    header = magic "TSCSNAP\\0" | version u16 | reserved u16 | meta length u32 | data length u64
             | crc u32
    body   = codec.encode_snapshot_meta | data

``crc`` is CRC-32 (zlib) of the header's other fields, the metadata and the data: of the whole
file. A file is written to ``<name>.tmp``, fsynced, renamed, and the directory fsynced, so a
file with a final name is complete unless the disk damaged it afterwards. The data is opaque:
the layer above puts the state machine's bytes and its dedup table in it.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import zlib
from dataclasses import dataclass

from ..errors import DecodeError, DiskFullError
from .codec import decode_snapshot_meta, encode_snapshot_meta
from .files import FileSystem, fsync_dir, remove_quietly, syncing, write_all, writing
from .messages import Snapshot

log = logging.getLogger("tsconsensus.raft.storage")

MAGIC = b"TSCSNAP\0"
VERSION = 1
_HEADER = struct.Struct(">8sHHIQI")
_CRC_AT = _HEADER.size - 4
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_CHUNK = 8 << 20
DAMAGED_SUFFIX = ".damaged"


def file_name(index: int, term: int) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


@dataclass(frozen=True, order=True)
class SnapshotFile:
    index: int
    term: int
    path: str


class SnapshotFileError(Exception):
    """A snapshot file is unreadable, short, or fails its checksum (internal: the storage
    decides whether that is fatal)."""


class SnapshotStore:
    """The snapshot directory. Thread-safe as used by the storage: writes go to distinct names,
    and only the storage's lock holder prunes."""

    def __init__(self, fs: FileSystem, directory: str, *, sync: bool, use_mmap: bool) -> None:
        self.fs = fs
        self.dir = directory
        self.sync = sync
        self.use_mmap = use_mmap

    def files(self) -> list[SnapshotFile]:
        """The snapshot files present, oldest first."""
        found = []
        for name in self.fs.listdir(self.dir):
            m = _NAME.match(name)
            if m:
                found.append(
                    SnapshotFile(int(m[1], 16), int(m[2], 16), os.path.join(self.dir, name))
                )
        return sorted(found)

    def remove_temporary(self) -> None:
        """Remove what a crash left half-written (only at open, before any writer runs)."""
        removed = False
        for name in self.fs.listdir(self.dir):
            if name.endswith(".tmp"):
                remove_quietly(self.fs, os.path.join(self.dir, name))
                removed = True
        if removed and self.sync:
            fsync_dir(self.fs, self.dir)

    def write(self, snapshot: Snapshot) -> SnapshotFile:
        """Write ``snapshot`` atomically; durable when this returns (with ``sync``).

        Raises :class:`DiskFullError` (nothing is left behind) or
        :class:`StorageFailedError`."""
        meta_raw = encode_snapshot_meta(snapshot.meta)
        data = memoryview(snapshot.data).cast("B")
        head = _HEADER.pack(MAGIC, VERSION, 0, len(meta_raw), len(data), 0)
        crc = zlib.crc32(head[:_CRC_AT])
        crc = zlib.crc32(meta_raw, crc)
        for pos in range(0, len(data), _CHUNK):
            crc = zlib.crc32(data[pos : pos + _CHUNK], crc)
        head = head[:_CRC_AT] + struct.pack(">I", crc)
        meta = snapshot.meta
        path = os.path.join(self.dir, file_name(meta.index, meta.term))
        tmp = path + ".tmp"
        with writing("writing snapshot", tmp):
            fd = self.fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                with writing("writing snapshot", tmp):
                    # reserve the whole file first: a full disk shows up before any byte is
                    # written, and the file cannot fail half-way
                    self.fs.fallocate(fd, 0, len(head) + len(meta_raw) + len(data))
                    write_all(self.fs, fd, head + meta_raw, 0)
                    offset = len(head) + len(meta_raw)
                    for pos in range(0, len(data), _CHUNK):
                        write_all(self.fs, fd, data[pos : pos + _CHUNK], offset + pos)
                if self.sync:
                    with syncing(tmp):
                        self.fs.fsync(fd)
            finally:
                self.fs.close(fd)
        except DiskFullError:
            remove_quietly(self.fs, tmp)
            raise
        with writing("renaming snapshot", tmp):
            self.fs.rename(tmp, path)
        if self.sync:
            fsync_dir(self.fs, self.dir)
        return SnapshotFile(meta.index, meta.term, path)

    def load(self, f: SnapshotFile) -> Snapshot:
        """The snapshot in ``f``, its checksum verified; :class:`SnapshotFileError` if not.

        With ``use_mmap`` the data is a read-only ``memoryview`` of the mapped file (one copy
        in memory, paged in on use; it stays valid after the file is deleted)."""
        try:
            fd = self.fs.open(f.path, os.O_RDONLY)
        except OSError as exc:
            raise SnapshotFileError(f"cannot open: {exc.strerror}") from exc
        try:
            size = self.fs.fstat_size(fd)
            if size < _HEADER.size:
                raise SnapshotFileError(f"{size} bytes, shorter than the header")
            raw: bytes | mmap.mmap
            raw = self.fs.map_readonly(fd, size) if self.use_mmap else self.fs.pread(fd, size, 0)
        except OSError as exc:
            raise SnapshotFileError(f"cannot read: {exc.strerror}") from exc
        finally:
            self.fs.close(fd)
        view = memoryview(raw)
        magic, version, _, meta_len, data_len, crc = _HEADER.unpack_from(view, 0)
        if magic != MAGIC:
            raise SnapshotFileError("not a snapshot file (bad magic)")
        if version != VERSION:
            raise SnapshotFileError(f"snapshot format version {version}, this build reads 1")
        if _HEADER.size + meta_len + data_len != size:
            raise SnapshotFileError(
                f"{size} bytes, the header says {_HEADER.size + meta_len + data_len}"
            )
        actual = zlib.crc32(view[:_CRC_AT])
        for pos in range(_HEADER.size, size, _CHUNK):
            actual = zlib.crc32(view[pos : min(size, pos + _CHUNK)], actual)
        if actual != crc:
            raise SnapshotFileError("checksum mismatch")
        body = view[_HEADER.size :]
        try:
            meta, end = decode_snapshot_meta(body[:meta_len])
        except DecodeError as exc:
            raise SnapshotFileError(f"metadata does not decode: {exc}") from exc
        if end != meta_len or (meta.index, meta.term) != (f.index, f.term):
            raise SnapshotFileError(f"metadata says ({meta.index}, {meta.term}): not its name")
        data: bytes | memoryview = body[meta_len:] if self.use_mmap else bytes(body[meta_len:])
        return Snapshot(meta, data)

    def view(self, f: SnapshotFile, written: Snapshot) -> Snapshot:
        """``written`` (just saved to ``f`` by :meth:`write`) with its data as a view of the
        mapped file: not read back or checked (it was just written), so none of it is resident
        until used. Falls back to ``written`` if the file cannot be mapped."""
        data_len = memoryview(written.data).nbytes
        try:
            fd = self.fs.open(f.path, os.O_RDONLY)
            try:
                size = self.fs.fstat_size(fd)  # the data is the file's tail
                mapped = self.fs.map_readonly(fd, size)
            finally:
                self.fs.close(fd)
        except OSError:
            return written
        return Snapshot(written.meta, memoryview(mapped)[size - data_len :])

    def set_aside(self, f: SnapshotFile) -> None:
        """Rename a damaged file out of the way (kept for inspection, never read again)."""
        with writing("renaming snapshot", f.path):
            self.fs.rename(f.path, f.path + DAMAGED_SUFFIX)
        log.warning("snapshot file %s is damaged: renamed to %s", f.path, DAMAGED_SUFFIX)

    def remove(self, files: list[SnapshotFile]) -> None:
        """Delete files that nothing refers to any more, then make that durable."""
        for f in files:
            remove_quietly(self.fs, f.path)
        if files and self.sync:
            fsync_dir(self.fs, self.dir)
