"""The write-ahead log's on-disk format: frames, the items inside them, scanning a segment.

A segment file is a run of frames followed by zeros (segments are preallocated)::

    frame  = magic u32 | crc u32 | length u32 | type u8 | 3 zero bytes | payload[length]
    crc    = CRC-32 (zlib) of the 8 bytes after it, then of the payload

so the length and the type are checksummed with the payload. The first frame of a segment is
its ``SEGMENT`` header (format version, sequence number, the next entry index, and the snapshot
base and hard state in force when it was created, so older segments can be deleted without
losing either). Every later frame is a ``BATCH``: everything one sync made durable, as items::

    item   = type u8 | length u32 | payload[length]
    ENTRY      codec.encode_entry (an entry at index i replaces the log from i on)
    HARD_STATE codec.encode_hard_state
    SNAPSHOT   index u64 | term u64 | reset u8  (the log now starts after a snapshot)

Why one checksummed frame per sync rather than one per record: a power cut may persist the pages
of one write in any order, so a torn multi-record write can leave intact records *after* a lost
one. With one checksum over the whole write, a torn write is always a bad last frame (cut on
open), and a bad frame followed by a good one is always damage, never a torn write: each frame
is written only after the one before it was synced.

Big-endian, :mod:`struct` only; decoders check every length against the bytes present.
"""

from __future__ import annotations

import enum
import mmap
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import DecodeError
from .codec import decode_entry, decode_hard_state, encode_entry, encode_hard_state
from .messages import Entry, HardState

FORMAT_VERSION = 1
MAGIC = 0x54535721  # "TSW!"
MAGIC_BYTES = struct.pack(">I", MAGIC)
_HEAD = struct.Struct(">II")  # magic, crc
_TAIL = struct.Struct(">IB3x")  # length, type (the checksummed part of the header)
HEADER_BYTES = _HEAD.size + _TAIL.size
_ITEM = struct.Struct(">BI")
_MARKER = struct.Struct(">QQB")
# version, seq, next index, base index, base term, hard state term, vote, commit
_SEGMENT = struct.Struct(">HQQQQQQQ")
_ZEROS = bytes(1 << 20)
SEGMENT_FRAME_BYTES = HEADER_BYTES + _SEGMENT.size
"""Bytes of a segment's header frame: a segment no longer than this holds no batch."""

Scannable = bytes | mmap.mmap


class FrameType(enum.IntEnum):
    SEGMENT = 1
    BATCH = 2


class ItemType(enum.IntEnum):
    ENTRY = 1
    HARD_STATE = 2
    SNAPSHOT = 3


_FRAME_TYPES = {t.value: t for t in FrameType}


@dataclass(frozen=True, slots=True)
class Marker:
    """The log now starts after the snapshot at (index, term). ``reset``: the log did not hold
    that entry, so every entry before the marker is void (an installed snapshot)."""

    index: int
    term: int
    reset: bool


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    seq: int
    next_index: int
    base_index: int
    base_term: int
    hard_state: HardState


Item = Entry | HardState | Marker


# -- encoding ------------------------------------------------------------------------------


def encode_frame(ftype: FrameType, payload: bytes) -> bytes:
    tail = _TAIL.pack(len(payload), ftype)
    return _HEAD.pack(MAGIC, zlib.crc32(payload, zlib.crc32(tail))) + tail + payload


def encode_segment_header(h: SegmentHeader) -> bytes:
    hs = h.hard_state
    payload = _SEGMENT.pack(
        FORMAT_VERSION, h.seq, h.next_index, h.base_index, h.base_term, hs.term, hs.vote, hs.commit
    )
    return encode_frame(FrameType.SEGMENT, payload)


def encode_items(
    marker: Marker | None, entries: Sequence[Entry], hard_state: HardState | None
) -> bytes:
    """One append's items, in the order they take effect: marker, entries, hard state."""
    parts: list[bytes] = []
    if marker is not None:
        parts += [
            _ITEM.pack(ItemType.SNAPSHOT, _MARKER.size),
            _MARKER.pack(marker.index, marker.term, 1 if marker.reset else 0),
        ]
    for e in entries:
        raw = encode_entry(e)
        parts += [_ITEM.pack(ItemType.ENTRY, len(raw)), raw]
    if hard_state is not None:
        raw = encode_hard_state(hard_state)
        parts += [_ITEM.pack(ItemType.HARD_STATE, len(raw)), raw]
    return b"".join(parts)


# -- decoding ------------------------------------------------------------------------------


def decode_segment_header(payload: memoryview) -> SegmentHeader:
    if len(payload) != _SEGMENT.size:
        raise DecodeError(f"segment header of {len(payload)} bytes, expected {_SEGMENT.size}")
    version, seq, nxt, base_index, base_term, term, vote, commit = _SEGMENT.unpack(payload)
    if version != FORMAT_VERSION:
        raise DecodeError(f"WAL format version {version}, this build reads {FORMAT_VERSION}")
    return SegmentHeader(seq, nxt, base_index, base_term, HardState(term, vote, commit))


def decode_items(payload: memoryview) -> Iterator[tuple[int, Item]]:
    """Each item of a batch with its offset inside the payload; :class:`DecodeError` on any
    item that does not decode exactly."""
    pos = 0
    while pos < len(payload):
        if pos + _ITEM.size > len(payload):
            raise DecodeError(f"truncated item header at {pos}")
        itype, n = _ITEM.unpack_from(payload, pos)
        body = payload[pos + _ITEM.size : pos + _ITEM.size + n]
        if len(body) != n:
            raise DecodeError(f"item at {pos} claims {n} bytes, {len(body)} present")
        item: Item
        if itype == ItemType.ENTRY:
            item, end = decode_entry(body)
            if end != n:
                raise DecodeError(f"entry item at {pos} has {n - end} trailing bytes")
        elif itype == ItemType.HARD_STATE:
            item = decode_hard_state(body)
        elif itype == ItemType.SNAPSHOT:
            if n != _MARKER.size:
                raise DecodeError(f"snapshot marker of {n} bytes at {pos}")
            index, term, reset = _MARKER.unpack(body)
            if reset > 1:
                raise DecodeError(f"bad reset flag in the snapshot marker at {pos}")
            item = Marker(index, term, bool(reset))
        else:
            raise DecodeError(f"unknown item type {itype} at {pos}")
        yield pos, item
        pos += _ITEM.size + n


# -- scanning a segment --------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    offset: int
    type: FrameType
    payload: memoryview


@dataclass(frozen=True)
class SegmentScan:
    """What one segment holds.

    ``end`` is the offset just after the last good frame. ``problem`` says why the scan stopped
    before a clean end (``None``: zeros or the end of the file followed). ``garbage``: bytes
    after ``end`` are not all zero (a torn write, or damage). ``valid_after``: the offset of a
    good frame found after the bad one at ``end``, which makes it damage, not a torn write.
    """

    frames: list[Frame]
    end: int
    problem: str | None
    garbage: bool
    valid_after: int | None


def _check_frame(buf: memoryview, pos: int) -> tuple[FrameType, int] | str:
    """The frame at ``pos`` (type, payload length), or what is wrong with it."""
    if pos + HEADER_BYTES > len(buf):
        return "frame header cut short"
    magic, crc = _HEAD.unpack_from(buf, pos)
    if magic != MAGIC:
        return f"bad magic 0x{magic:08x}"
    tail = buf[pos + _HEAD.size : pos + HEADER_BYTES]
    length, ftype = _TAIL.unpack(tail)
    if bytes(tail[5:]) != b"\0\0\0":
        return "non-zero reserved header bytes"
    if ftype not in _FRAME_TYPES:
        return f"unknown frame type {ftype}"
    start = pos + HEADER_BYTES
    if start + length > len(buf):
        return f"frame of {length} bytes runs past the end of the file"
    if zlib.crc32(buf[start : start + length], zlib.crc32(tail)) != crc:
        return "checksum mismatch"
    return _FRAME_TYPES[ftype], length


def _all_zero(buf: memoryview, start: int, end: int) -> bool:
    step = len(_ZEROS)
    for pos in range(start, end, step):
        chunk = buf[pos : min(end, pos + step)]
        if chunk != _ZEROS[: len(chunk)]:
            return False
    return True


def _find_valid(raw: Scannable, buf: memoryview, start: int) -> int | None:
    pos = raw.find(MAGIC_BYTES, start)
    while pos != -1:
        if not isinstance(_check_frame(buf, pos), str):
            return pos
        pos = raw.find(MAGIC_BYTES, pos + 1)
    return None


def scan_segment(raw: Scannable) -> SegmentScan:
    """Every good frame of a segment's bytes, and how its data ends (see :class:`SegmentScan`)."""
    buf = memoryview(raw)
    frames: list[Frame] = []
    pos = 0
    problem: str | None = None
    while pos < len(buf):
        head = buf[pos : pos + HEADER_BYTES]
        if head == _ZEROS[: len(head)]:
            break  # end of data; what follows is checked below
        found = _check_frame(buf, pos)
        if isinstance(found, str):
            problem = found
            break
        ftype, length = found
        start = pos + HEADER_BYTES
        frames.append(Frame(pos, ftype, buf[start : start + length]))
        pos = start + length
    end = pos
    garbage = not _all_zero(buf, end, len(buf))
    valid_after = _find_valid(raw, buf, end + 1) if garbage else None
    if garbage and problem is None:
        problem = "zeros where a frame should start, with data after them"
    return SegmentScan(frames, end, problem, garbage, valid_after)
