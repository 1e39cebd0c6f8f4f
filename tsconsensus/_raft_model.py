"""What the Raft adapter reports, built from plain values (no pysyncobj here).

:class:`FailReason` says why a submitted entry has no outcome; :func:`build_status` turns the
adapter's raw status dictionary into a :class:`NodeStatus`.
"""

from __future__ import annotations

import collections
import enum
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._wire import split_node_id
from .config import RaftConfig
from .types import CommandResult, MemberStatus, NodeStatus, RaftState

# After applying entries, pysyncobj at once sends every follower an append-entries that only
# carries the new commit index: two frames out and two back per command. Unless a follower is
# waiting for a command it forwarded, that news can ride on the next entry, or go out this
# much later if no entry comes.
COMMIT_PUSH_DELAY_S = 0.002
# How long after a follower forwarded a command commit indexes are pushed at once again.
FORWARDED_WINDOW_S = 1.0

# After a failed snapshot, how long log compaction waits before trying again.
COMPACTION_RETRY_S = 60.0

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"

STATES = {0: RaftState.FOLLOWER, 1: RaftState.CANDIDATE, 2: RaftState.LEADER}
"""pysyncobj's state numbers."""


class FailReason(enum.Enum):
    """Why a submitted entry has no outcome. All but DENIED are worth a retry."""

    NO_LEADER = "no leader"
    NOT_LEADER = "the node asked is no longer the leader"
    LEADER_CHANGED = "the leader changed before the entry was committed"
    DISCARDED = "the entry was overwritten by a new leader"
    QUEUE_FULL = "the submit queue is full"
    DENIED = "the request was denied"
    UNKNOWN_OUTCOME = "the entry's outcome could not be tracked"


SubmitCallback = Callable[[CommandResult | None, FailReason | None], None]


class SubmitQueue:
    """Commands waiting for the Raft thread, drained into group-commit batches.

    ``put`` may be called from any thread; it calls ``wake`` (a syscall) once per batch, not
    once per command. ``batches`` runs on the Raft thread: a lone command goes out at once,
    commands that arrived while the thread was busy share one log entry of at most
    ``max_batch_bytes``, so one append-entries round commits all of them.
    """

    def __init__(self, max_batch_bytes: int, wake: Callable[[], None]) -> None:
        self._pending: collections.deque[tuple[bytes, SubmitCallback]] = collections.deque()
        self._max = max_batch_bytes
        self._wake = wake
        self._wake_sent = False

    def put(self, entry: bytes, callback: SubmitCallback) -> None:
        self._pending.append((entry, callback))
        if not self._wake_sent:
            self._wake_sent = True
            self._wake()

    def batches(self) -> Iterator[tuple[list[bytes], list[SubmitCallback]]]:
        # Cleared before draining: a put racing with the drain either lands in this drain or
        # sees the flag down and wakes the thread again.
        self._wake_sent = False
        pending = self._pending
        while pending:
            entries: list[bytes] = []
            callbacks: list[SubmitCallback] = []
            size = 2
            while pending and (not entries or size + len(pending[0][0]) + 1 <= self._max):
                entry, callback = pending.popleft()
                entries.append(entry)
                callbacks.append(callback)
                size += len(entry) + 1
            yield entries, callbacks


def fan_out(callbacks: Sequence[SubmitCallback], results: Any, reason: FailReason | None) -> None:
    """Report each command of a batch to its own caller: its result, or the batch's failure."""
    if reason is None and isinstance(results, list):
        for i, callback in enumerate(callbacks):
            if i < len(results):
                callback(results[i], None)
            else:
                callback(None, FailReason.UNKNOWN_OUTCOME)
        return
    for callback in callbacks:
        callback(None, reason or FailReason.UNKNOWN_OUTCOME)


@dataclass(frozen=True)
class PeerView:
    """One other member as this node's transport sees it."""

    id: str
    connected: bool
    seconds_since_heard: float | None


def build_status(node_id: str, raw: dict[str, Any], peers: Sequence[PeerView]) -> NodeStatus:
    """A :class:`NodeStatus` from pysyncobj's ``getStatus()`` keys and the peers' views.

    Match indexes and lags are only known on the leader.
    """
    state = STATES[raw["state"]]
    commit = int(raw["commit_idx"])
    leader = raw["leader"]
    members = [
        MemberStatus(id=node_id, address=split_node_id(node_id)[0], connected=True, is_self=True)
    ]
    for peer in sorted(peers, key=lambda p: p.id):
        match = raw.get(f"match_idx_server_{peer.id}") if state is RaftState.LEADER else None
        members.append(
            MemberStatus(
                id=peer.id,
                address=split_node_id(peer.id)[0],
                connected=peer.connected,
                match_index=None if match is None else int(match),
                lag=None if match is None else max(0, commit - int(match)),
                last_contact_s=peer.seconds_since_heard,
            )
        )
    return NodeStatus(
        node_id=node_id,
        address=split_node_id(node_id)[0],
        state=state,
        leader=None if leader is None else str(leader.id),
        term=int(raw["raft_term"]),
        commit_index=commit,
        applied_index=int(raw["last_applied"]),
        has_quorum=bool(raw["has_quorum"]),
        members=tuple(members),
    )


def sync_conf(
    node_id: str, raft: RaftConfig, state_dir: str, max_entry_bytes: int
) -> dict[str, Any]:
    """The pysyncobj ``SyncObjConf`` settings for a node (creates ``state_dir``)."""
    journal = snapshot = None
    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
        journal = os.path.join(state_dir, JOURNAL_FILE)
        snapshot = os.path.join(state_dir, SNAPSHOT_FILE)
    return dict(
        autoTick=False,
        password=None,  # frames are authenticated by FrameAuthenticator instead
        bindAddress=node_id,
        # Send every entry as soon as it is queued (latency); entries queued while the Raft
        # thread was busy still leave together in one tick (throughput).
        appendEntriesUseBatch=False,
        appendEntriesPeriod=raft.heartbeat_interval_s,
        # Larger than any single entry, so pysyncobj never splits one (its chunked path is
        # fragile) and one message carries many small entries.
        appendEntriesBatchSizeBytes=max(2**16, 2 * max_entry_bytes + 4096),
        raftMinTimeout=raft.election_timeout_min_s,
        raftMaxTimeout=raft.election_timeout_max_s,
        leaderFallbackTimeout=raft.leader_lease_timeout_s,
        connectionTimeout=raft.connection_timeout_s,
        connectionRetryTime=min(1.0, raft.election_timeout_min_s),
        # Fail fast when there is no leader; the executor retries with its own deadline.
        commandsWaitLeader=False,
        dynamicMembershipChange=True,
        journalFile=journal,
        fullDumpFile=snapshot,
        logCompactionMinEntries=raft.compaction_min_entries,
        logCompactionMinTime=raft.compaction_min_interval_s,
        # Snapshots are written on the Raft thread: forking a threaded process is unsafe.
        useFork=False,
        bindRetryTime=0.1,
        maxBindRetries=30,
    )
