"""The engine's binary format: explicit types and lengths, big-endian, :mod:`struct` only.

Used for log entries and hard state in the WAL, for snapshot metadata on disk, and for messages
between members. Nothing here is ever unpickled or evaluated: every decoder checks each length
against the bytes actually present and each enum against its known values, and raises
:class:`~tsconsensus.errors.DecodeError` on anything else. Decoders accept any bytes-like object.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..errors import DecodeError
from .messages import (
    MAX_ID,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    SnapshotMeta,
)

Buffer = bytes | bytearray | memoryview

_ENTRY = struct.Struct(">QQBQI")  # index, term, kind, time, data length
_HARD_STATE = struct.Struct(">QQQ")  # term, vote, commit
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_META = struct.Struct(">QQQQ")  # index, term, cluster id, time
# type, to, from, term, index, log_term, commit, reject, hint_index, hint_term, context,
# offset, size, checksum, entry count, has snapshot meta, data length
_MESSAGE = struct.Struct(">BQQQQQQBQQQQQIIBI")
MESSAGE_HEADER_BYTES = _MESSAGE.size

_ENTRY_KINDS = {k.value: k for k in EntryKind}
_MESSAGE_TYPES = {t.value: t for t in MessageType}
MAX_ADDRESS_BYTES = 1024


def _need(buf: Buffer, offset: int, n: int, what: str) -> None:
    if n < 0 or offset + n > len(buf):
        raise DecodeError(f"truncated {what}: need {n} bytes at offset {offset}, have {len(buf)}")


# -- entries ---------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY.pack(entry.index, entry.term, entry.kind, entry.time, len(entry.data)) + bytes(
        entry.data
    )


def decode_entry(buf: Buffer, offset: int = 0) -> tuple[Entry, int]:
    """The entry at ``offset`` and the offset just after it."""
    _need(buf, offset, _ENTRY.size, "entry header")
    index, term, kind, time, n = _ENTRY.unpack_from(buf, offset)
    offset += _ENTRY.size
    _need(buf, offset, n, "entry data")
    if kind not in _ENTRY_KINDS:
        raise DecodeError(f"unknown entry kind {kind}")
    data = bytes(buf[offset : offset + n])
    return Entry(index, term, _ENTRY_KINDS[kind], data, time), offset + n


# -- hard state -------------------------------------------------------------------------------


def encode_hard_state(state: HardState) -> bytes:
    return _HARD_STATE.pack(state.term, state.vote, state.commit)


def decode_hard_state(buf: Buffer) -> HardState:
    if len(buf) != _HARD_STATE.size:
        raise DecodeError(f"hard state is {len(buf)} bytes, expected {_HARD_STATE.size}")
    return HardState(*_HARD_STATE.unpack(buf))


# -- membership --------------------------------------------------------------------------------


def _encode_ids(ids: Iterable[int]) -> bytes:
    ordered = sorted(ids)
    return _U32.pack(len(ordered)) + b"".join(_U64.pack(i) for i in ordered)


def _decode_ids(buf: Buffer, offset: int) -> tuple[frozenset[int], int]:
    _need(buf, offset, 4, "id count")
    (n,) = _U32.unpack_from(buf, offset)
    offset += 4
    _need(buf, offset, 8 * n, "id list")
    ids = frozenset(_U64.unpack_from(buf, offset + 8 * i)[0] for i in range(n))
    if 0 in ids:
        raise DecodeError("member id 0 in a membership")
    return ids, offset + 8 * n


def encode_membership(m: Membership) -> bytes:
    parts = [_encode_ids(m.voters), _encode_ids(m.learners), _encode_ids(m.removed)]
    parts.append(_U32.pack(len(m.addresses)))
    for member in sorted(m.addresses):
        raw = m.addresses[member].encode("utf-8")
        parts.append(_U64.pack(member) + _U16.pack(len(raw)) + raw)
    return b"".join(parts)


def decode_membership(buf: Buffer, offset: int = 0) -> tuple[Membership, int]:
    voters, offset = _decode_ids(buf, offset)
    learners, offset = _decode_ids(buf, offset)
    removed, offset = _decode_ids(buf, offset)
    if voters & learners:
        raise DecodeError("a member is both voter and learner")
    _need(buf, offset, 4, "address count")
    (n,) = _U32.unpack_from(buf, offset)
    offset += 4
    addresses: dict[int, str] = {}
    for _ in range(n):
        _need(buf, offset, 10, "address")
        (member,) = _U64.unpack_from(buf, offset)
        (length,) = _U16.unpack_from(buf, offset + 8)
        offset += 10
        if length > MAX_ADDRESS_BYTES:
            raise DecodeError(f"address of {length} bytes")
        _need(buf, offset, length, "address")
        try:
            addresses[member] = bytes(buf[offset : offset + length]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"address is not UTF-8: {exc}") from None
        offset += length
    return Membership(voters, learners, addresses, removed), offset


def membership_from_bytes(data: Buffer) -> Membership:
    m, end = decode_membership(data)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after a membership")
    return m


# -- snapshot metadata ------------------------------------------------------------------------


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    head = _META.pack(meta.index, meta.term, meta.cluster_id, meta.time)
    return head + encode_membership(meta.membership)


def decode_snapshot_meta(buf: Buffer, offset: int = 0) -> tuple[SnapshotMeta, int]:
    _need(buf, offset, _META.size, "snapshot meta")
    index, term, cluster_id, time = _META.unpack_from(buf, offset)
    membership, offset = decode_membership(buf, offset + _META.size)
    return SnapshotMeta(index, term, membership, cluster_id, time), offset


# -- messages ---------------------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    head = _MESSAGE.pack(
        msg.type,
        msg.to,
        msg.frm,
        msg.term,
        msg.index,
        msg.log_term,
        msg.commit,
        1 if msg.reject else 0,
        msg.hint_index,
        msg.hint_term,
        msg.context,
        msg.offset,
        msg.size,
        msg.checksum,
        len(msg.entries),
        0 if msg.snapshot is None else 1,
        len(msg.data),
    )
    parts = [head]
    parts.extend(encode_entry(e) for e in msg.entries)
    if msg.snapshot is not None:
        parts.append(encode_snapshot_meta(msg.snapshot))
    parts.append(bytes(msg.data))
    return b"".join(parts)


def decode_message(buf: Buffer) -> Message:
    """One whole message; trailing bytes are an error."""
    _need(buf, 0, _MESSAGE.size, "message header")
    (
        mtype,
        to,
        frm,
        term,
        index,
        log_term,
        commit,
        reject,
        hint_index,
        hint_term,
        context,
        offset_field,
        size,
        checksum,
        n_entries,
        has_meta,
        n_data,
    ) = _MESSAGE.unpack_from(buf, 0)
    if mtype not in _MESSAGE_TYPES:
        raise DecodeError(f"unknown message type {mtype}")
    if reject > 1 or has_meta > 1:
        raise DecodeError("bad flag byte in message header")
    if not (0 < to <= MAX_ID and 0 < frm <= MAX_ID):
        raise DecodeError("message without sender or receiver")
    offset = _MESSAGE.size
    # each entry takes at least its header: reject absurd counts before looping
    _need(buf, offset, n_entries * _ENTRY.size, "entries")
    entries = []
    for _ in range(n_entries):
        entry, offset = decode_entry(buf, offset)
        entries.append(entry)
    meta = None
    if has_meta:
        meta, offset = decode_snapshot_meta(buf, offset)
    _need(buf, offset, n_data, "message data")
    data = bytes(buf[offset : offset + n_data])
    offset += n_data
    if offset != len(buf):
        raise DecodeError(f"{len(buf) - offset} trailing bytes after a message")
    return Message(
        type=_MESSAGE_TYPES[mtype],
        to=to,
        frm=frm,
        term=term,
        index=index,
        log_term=log_term,
        entries=tuple(entries),
        commit=commit,
        reject=bool(reject),
        hint_index=hint_index,
        hint_term=hint_term,
        context=context,
        snapshot=meta,
        offset=offset_field,
        size=size,
        data=data,
        checksum=checksum,
    )
