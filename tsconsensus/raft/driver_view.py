"""Immutable pictures of a running node, for status pages and readiness checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .core import RaftCore
from .leader_silence import LeaderSilence
from .messages import NONE, Role


@dataclass(frozen=True)
class PeerView:
    """What this node knows of one member, for status pages."""

    id: int
    address: str
    voter: bool
    match: int | None  # leader only
    last_heard_s: float | None  # seconds since a message from it arrived (None: never)


@dataclass(frozen=True)
class DriverView:
    """An immutable picture of the node; any thread may read :attr:`Driver.view`. The loop
    refreshes it at every tick, and at once when the role, term, leader, membership, cluster or
    storage state changes (:meth:`ViewPublisher.stale`): indexes, progress and silences may be
    a tick old."""

    member_id: int
    cluster_id: int
    role: Role
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    has_quorum: bool
    transferring: bool
    peers: tuple[PeerView, ...]
    disk_full: bool
    leader_gap_max_s: float
    """Longest silence between two messages from the leader this node followed (0 if none):
    what heartbeats really look like from here."""
    storage_problem: str = ""
    """Why the storage takes no writes now (``"disk full: ..."`` until space returns,
    ``"storage failed: ..."`` for good); empty while it works."""


def has_quorum(core: RaftCore, heard: Mapping[int, float], tick_s: float, now: float) -> bool:
    """Leader: a majority of voters (itself included) was heard from within the minimum
    election timeout. Others: a leader is known."""
    if not core.is_leader:
        return core.leader != NONE
    window = core.config.election_ticks_min * tick_s
    fresh = sum(
        1 for v in core.membership.voters if v == core.id or now - heard.get(v, -1e9) < window
    )
    return fresh >= core.membership.quorum()


def make_view(
    core: RaftCore,
    *,
    applied: int,
    heard: Mapping[int, float],
    tick_s: float,
    disk_full: bool,
    leader_gap_max_s: float,
    storage_problem: str,
) -> DriverView:
    """Loop thread (it reads the core)."""
    now = time.monotonic()
    membership = core.membership
    peers = []
    for m in sorted(membership.members):
        pr = core.progress.get(m) if core.is_leader else None
        last = heard.get(m)
        peers.append(
            PeerView(
                id=m,
                address=membership.addresses.get(m, ""),
                voter=m in membership.voters,
                match=(core.stable_index if m == core.id else pr.match) if pr is not None else None,
                last_heard_s=None if last is None else now - last,
            )
        )
    return DriverView(
        member_id=core.id,
        cluster_id=core.cluster_id,
        role=core.role,
        term=core.term,
        leader=core.leader,
        commit=core.commit,
        applied=applied,
        last_index=core.log.last_index,
        has_quorum=has_quorum(core, heard, tick_s, now),
        transferring=core.transferee != NONE,
        peers=tuple(peers),
        disk_full=disk_full,
        leader_gap_max_s=leader_gap_max_s,
        storage_problem=storage_problem,
    )


class ViewPublisher:
    """Builds and publishes one driver's :class:`DriverView`. Loop thread only.

    ``applied`` gives the apply thread's last index, ``storage`` the disk-full flag and the
    storage problem (see :attr:`DriverView.storage_problem`); ``on_view`` is called with each
    view published.
    """

    def __init__(
        self,
        core: RaftCore,
        *,
        applied: Callable[[], int],
        silence: LeaderSilence,
        tick_s: float,
        storage: Callable[[], tuple[bool, str]],
        on_view: Callable[[DriverView], None],
    ) -> None:
        self._core, self._applied, self._silence = core, applied, silence
        self._tick_s, self._storage, self._on_view = tick_s, storage, on_view
        self._membership = core.membership  # the one :attr:`view` shows
        self.view = self._make()

    def publish(self) -> None:
        self._membership = self._core.membership
        self.view = self._make()
        self._on_view(self.view)

    def stale(self) -> bool:
        """Whether the view must be published now, not at the next tick: more than indexes
        moved (role, term, leader, membership, cluster, a transfer, the storage's state, e.g.
        space back after a full disk). Indexes, progress and
        silences may wait for the tick, which spares building a view for every Ready: about
        a tenth of a follower's CPU per append, measured."""
        core, view = self._core, self.view
        return (
            core.role is not view.role
            or core.term != view.term
            or core.leader != view.leader
            or core.membership is not self._membership
            or core.cluster_id != view.cluster_id
            or (core.transferee != NONE) != view.transferring
            or self._storage() != (view.disk_full, view.storage_problem)
        )

    def _make(self) -> DriverView:
        disk_full, problem = self._storage()
        return make_view(
            self._core,
            applied=self._applied(),
            heard=self._silence.heard,
            tick_s=self._tick_s,
            disk_full=disk_full,
            leader_gap_max_s=self._silence.longest,
            storage_problem=problem,
        )
