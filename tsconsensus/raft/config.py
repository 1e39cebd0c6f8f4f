"""The core's settings, in ticks and bytes, with the limits that must fit inside each other."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import MESSAGE_HEADER_BYTES
from .messages import ENTRY_OVERHEAD, MAX_ID

SNAPSHOT_META_OVERHEAD = 64 * 1024
"""Room in a message for a snapshot's metadata (its membership with addresses)."""


@dataclass(frozen=True)
class CoreConfig:
    """Settings of one :class:`~tsconsensus.raft.core.RaftCore`.

    Time is counted in ticks (the driver calls ``tick()`` at a fixed interval, ``tick_ms``).
    Size limits nest: an entry's data fits in ``max_entry_bytes``; one entry always fits in a
    message (``max_message_bytes``, the transport's frame body); a batch of entries in one
    append stays within ``max_batch_bytes`` (but carries at least one entry); a snapshot chunk
    fits in a message too. :meth:`validate` raises :class:`ValueError` naming the setting.
    """

    id: int
    cluster_id: int
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    """Each election waits a fresh random number of ticks in [min, max)."""
    heartbeat_ticks: int = 1
    tick_ms: int = 50
    """How long one tick is; used only for the log time stamped on entries."""
    max_entry_bytes: int = 2 * 1024 * 1024
    max_batch_bytes: int = 1024 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    max_inflight: int = 64
    """Appends in flight to one follower before waiting for acknowledgements."""
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    """Past this many bytes of uncommitted entries the leader refuses proposals (overloaded)."""
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshot_chunks_inflight: int = 4
    snapshot_entries: int = 10_000
    """Ask for a snapshot once this many applied entries follow the last one."""
    snapshot_bytes: int = 32 * 1024 * 1024
    """... or once the applied entries after it hold this many bytes, or as many bytes as the
    last snapshot if that is more (large entries would otherwise keep gigabytes of log in
    memory; a large state is not rewritten for every few megabytes of log)."""
    compaction_keep: int = 1_000
    """Entries kept behind a snapshot, so a slightly slow follower needs no snapshot."""
    compaction_keep_bytes: int = 4 * 1024 * 1024
    """... and at most this many bytes of them."""
    pre_vote: bool = True
    check_quorum: bool = True
    auto_promote: bool = True
    """The leader promotes a learner to voter once it has caught up with the commit index."""

    def validate(self) -> CoreConfig:
        if not 0 < self.id <= MAX_ID:
            raise ValueError(f"id {self.id}: must be a non-zero 64-bit integer")
        if not 0 < self.cluster_id <= MAX_ID:
            raise ValueError(f"cluster_id {self.cluster_id}: must be a non-zero 64-bit integer")
        if self.heartbeat_ticks < 1:
            raise ValueError(f"heartbeat_ticks {self.heartbeat_ticks}: must be at least 1")
        if self.election_ticks_min <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks_min {self.election_ticks_min}: must exceed heartbeat_ticks"
            )
        if self.election_ticks_max <= self.election_ticks_min:
            raise ValueError(
                f"election_ticks_max {self.election_ticks_max}: must exceed election_ticks_min"
            )
        room = self.max_message_bytes - MESSAGE_HEADER_BYTES - ENTRY_OVERHEAD
        if self.max_entry_bytes > room:
            raise ValueError(
                f"max_entry_bytes {self.max_entry_bytes}: an entry must fit in a message "
                f"(max_message_bytes {self.max_message_bytes} minus headers = {room})"
            )
        if self.max_batch_bytes > room:
            raise ValueError(
                f"max_batch_bytes {self.max_batch_bytes}: must fit in a message ({room})"
            )
        if self.snapshot_chunk_bytes + SNAPSHOT_META_OVERHEAD > self.max_message_bytes - (
            MESSAGE_HEADER_BYTES
        ):
            raise ValueError(
                f"snapshot_chunk_bytes {self.snapshot_chunk_bytes}: a chunk must fit in a message"
            )
        for name in ("max_inflight", "snapshot_chunks_inflight", "snapshot_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.compaction_keep < 0:
            raise ValueError(f"compaction_keep {self.compaction_keep}: must not be negative")
        if self.compaction_keep_bytes < 0:
            raise ValueError(
                f"compaction_keep_bytes {self.compaction_keep_bytes}: must not be negative"
            )
        if self.snapshot_bytes < 1:
            raise ValueError(f"snapshot_bytes {self.snapshot_bytes}: must be at least 1")
        if self.max_uncommitted_bytes < self.max_entry_bytes:
            raise ValueError(
                f"max_uncommitted_bytes {self.max_uncommitted_bytes}: must be at least "
                f"max_entry_bytes ({self.max_entry_bytes})"
            )
        return self
