"""Snapshots between members: cut into checksummed chunks, installed only when complete. Pure.

The leader sends chunks of its latest snapshot in order, a few at a time; the follower
acknowledges each with the number of bytes it holds so far, and asks to resume from there when
a chunk is missing, out of order or fails its checksum. Nothing is installed until every byte
has arrived and every chunk's CRC-32 matched.
"""

from __future__ import annotations

import zlib

from .messages import Message, MessageType, Snapshot, SnapshotMeta


def chunk_message(
    snapshot: Snapshot, offset: int, chunk_bytes: int, *, to: int, frm: int, term: int
) -> Message:
    """The chunk of ``snapshot`` that starts at ``offset``."""
    data = bytes(snapshot.data[offset : offset + chunk_bytes])
    return Message(
        MessageType.SNAPSHOT,
        to=to,
        frm=frm,
        term=term,
        snapshot=snapshot.meta,
        offset=offset,
        size=len(snapshot.data),
        data=data,
        checksum=zlib.crc32(data),
    )


class SnapshotReceiver:
    """A follower's snapshot being assembled."""

    def __init__(self) -> None:
        self.meta: SnapshotMeta | None = None
        self._size = 0
        self._buffer = bytearray()

    @property
    def received(self) -> int:
        return len(self._buffer)

    def accept(self, m: Message) -> tuple[bool, Snapshot | None]:
        """Take one chunk. Returns (accepted, the complete snapshot once the last chunk is in).

        A rejected chunk leaves what was received so far; the reply tells the leader where to
        resume (``received``)."""
        meta = m.snapshot
        if meta is None:
            return False, None
        same = (
            self.meta is not None
            and self.meta.index == meta.index
            and self.meta.term == meta.term
            and self._size == m.size
        )
        if not same:
            if m.offset != 0:
                self.reset()
                return False, None
            self.meta, self._size, self._buffer = meta, m.size, bytearray()
        if m.offset != len(self._buffer) or zlib.crc32(m.data) != m.checksum:
            return False, None
        if len(self._buffer) + len(m.data) > self._size or (not m.data and self._size):
            return False, None
        self._buffer += m.data
        if len(self._buffer) < self._size:
            return True, None
        done = Snapshot(meta, bytes(self._buffer))
        self.reset()
        return True, done

    def reset(self) -> None:
        self.meta, self._size, self._buffer = None, 0, bytearray()
