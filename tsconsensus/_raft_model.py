"""What the Raft adapter reports, built from plain values (no pysyncobj here).

:class:`FailReason` says why a submitted entry has no outcome; :func:`build_status` turns the
adapter's raw status dictionary into a :class:`NodeStatus`.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._wire import split_node_id
from .types import CommandResult, MemberStatus, NodeStatus, RaftState

# After applying entries, pysyncobj at once sends every follower an append-entries that only
# carries the new commit index: two frames out and two back per command. Unless a follower is
# waiting for a command it forwarded, that news can ride on the next entry, or go out this
# much later if no entry comes.
COMMIT_PUSH_DELAY_S = 0.002
# How long after a follower forwarded a command commit indexes are pushed at once again.
FORWARDED_WINDOW_S = 1.0

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
