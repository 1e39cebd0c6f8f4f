"""The driver: one per node, it runs the pure core against real time, disk and network.

Threads and loops:
- the node's asyncio loop runs the core, the ticks and the transport (everything that touches
  the core happens there, so the core needs no lock);
- one disk worker thread persists each ``Ready`` (one write, one fdatasync): the loop never
  waits on the disk, and whatever arrives meanwhile is gathered into the next ``Ready``
  (group commit). The leader sends its appends before its own write and counts itself once
  the write is done; followers acknowledge only what is on disk;
- one apply thread hands committed entries to the layer above (``apply``), installs snapshots
  (``restore``) and takes them (``take_snapshot``), in log order. A slow ``apply`` never stalls
  heartbeats.

The driver knows nothing of commands, HTTP or tailnets: the layer above passes callables.
After a storage failure (a failed fsync) the node cannot go on safely: ``on_fatal`` is called
once with the error and the driver stops acknowledging anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..errors import DiskFullError, ProposalRefusedError, StorageError
from ._base import InitialState
from .config import CoreConfig
from .core import RaftCore
from .messages import (
    NONE,
    Entry,
    HardState,
    MembershipChange,
    Message,
    Ready,
    Role,
    Snapshot,
)
from .progress import ProgressState
from .storage_types import Storage
from .transport import Transport

log = logging.getLogger("tsconsensus.raft")

DISK_FULL_RETRY_S = 1.0


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
    """An immutable picture of the node, refreshed by the loop after every change; any thread
    may read :attr:`Driver.view`."""

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


Apply = Callable[[Sequence[Entry]], None]
TakeSnapshot = Callable[[], tuple[int, bytes]]
Restore = Callable[[Snapshot], None]


class Driver:
    """Runs one :class:`RaftCore`. Build it on any thread; call :meth:`start` and every other
    method named as loop-only on ``loop``'s thread.

    ``address`` is this member's Raft address (``host:port``), recorded in configurations so
    that peers can dial it; ``parse_address`` turns such an address into (host, port).
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        config: CoreConfig,
        storage: Storage,
        initial: InitialState,
        tick_s: float,
        host: str,
        port: int,
        key: bytes,
        authorize: Callable[[str, int], Awaitable[bool]],
        still_allowed: Callable[[str], bool],
        parse_address: Callable[[str], tuple[str, int] | None],
        apply: Apply,
        take_snapshot: TakeSnapshot,
        restore: Restore,
        on_driver_frame: Callable[[int, bytes], None] = lambda member, payload: None,
        on_view: Callable[[DriverView], None] = lambda view: None,
        on_fatal: Callable[[BaseException], None] = lambda exc: None,
        rng: random.Random | None = None,
        address_hints: dict[int, str] | None = None,
        dial: Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        | None = None,
    ) -> None:
        self.loop = loop
        self.storage = storage
        self.core = RaftCore(config, initial, rng or random.Random())
        self._tick_s = tick_s
        self._apply_fn, self._take_snapshot, self._restore = apply, take_snapshot, restore
        self._on_view, self._on_fatal = on_view, on_fatal
        self._on_driver_frame = on_driver_frame
        self._parse_address = parse_address
        # where members were, as learned before the log says (a joining node's first peers)
        self._hints = dict(address_hints or {})
        self.transport = Transport(
            host=host,
            port=port,
            member_id=config.id,
            cluster_id=config.cluster_id,
            key=key,
            authorize=authorize,
            still_allowed=still_allowed,
            resolve=self._resolve,
            on_message=self._on_message,
            on_driver_frame=self._driver_frame,
            on_unreachable=self.core.report_unreachable,
            max_frame_bytes=config.max_message_bytes + 4096,
            dial=dial,
        )
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tsc-disk")
        self._apply_queue: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._apply_thread = threading.Thread(
            target=self._apply_loop, name=f"tsc-apply-{config.id:016x}", daemon=True
        )
        self.applied = self.core.applied_handed  # written by the apply thread only
        if initial.snapshot is not None:
            # the state machine starts empty: bring it to the snapshot the log continues from
            self._apply_queue.put(("restore", initial.snapshot))
        self._reads: dict[int, tuple[int, Callable[[bool], None]]] = {}
        self._read_waiters: list[tuple[int, Callable[[bool], None]]] = []  # apply thread
        self._persisting = False
        self._scheduled = False
        self._stopped = False
        self._failed: BaseException | None = None
        self._disk_full = False
        self._problem = ""  # DriverView.storage_problem
        self._snapshot_blocked = False  # a snapshot save waits for space (logged once)
        self._ticker: asyncio.TimerHandle | None = None
        self._heard: dict[int, float] = {}
        hs = initial.hard_state
        self._durable_vote = (hs.term, hs.vote)  # what the disk holds (disk thread writes it)
        self._leader_gap_max = 0.0
        self.view = self._make_view()

    # -- lifecycle (loop) ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the Raft port and start ticking. Raises OSError naming the address."""
        await self.transport.start()
        self._apply_thread.start()
        self._ticker = self.loop.call_later(self._tick_s, self._tick)
        self._kick()

    async def stop(self) -> None:
        """Stop ticking, close the transport, let the disk and apply threads finish."""
        if self._stopped:
            return
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        await self.transport.stop()
        self._apply_queue.put(("stop", None))
        await self.loop.run_in_executor(None, self._apply_thread.join, 10)
        self._disk.shutdown(wait=True)

    @property
    def apply_thread(self) -> threading.Thread:
        return self._apply_thread

    # -- inputs (loop) -----------------------------------------------------------------------

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` (leader only). Raises :class:`ProposalRefusedError`."""
        self._refuse_if_down()
        at = self.core.propose(data)
        self._kick()
        return at

    def propose_membership(self, change: MembershipChange) -> tuple[int, int]:
        self._refuse_if_down()
        at = self.core.propose_membership(change)
        self._kick()
        return at

    def transfer_leadership(self, target: int) -> None:
        self.core.transfer_leadership(target)
        self._kick()

    def read_index(self, context: int, done: Callable[[bool], None]) -> None:
        """A linearizable read: ``done(True)`` (on the apply thread, once this node has applied
        everything committed when the read arrived) or ``done(False)`` (no leader could
        confirm it: retry)."""
        if self._failed is not None:
            done(False)
            return
        self._reads[context] = (0, done)
        self.core.read_index(context)
        self._kick()

    def send_driver(self, to: int, payload: bytes) -> None:
        self.transport.send_driver(to, payload)

    def set_cluster_id(self, cluster_id: int) -> None:
        self.transport.set_cluster_id(cluster_id)

    def _refuse_if_down(self) -> None:
        if self._failed is not None:
            raise ProposalRefusedError("not-leader", f"storage failed: {self._failed}", NONE)
        if self._disk_full:
            raise ProposalRefusedError(
                "overloaded", "the disk is full: nothing more is accepted", self.core.leader
            )

    def _on_message(self, m: Message) -> None:
        now = time.monotonic()
        if m.frm == self.core.leader and not self.core.is_leader:
            last = self._heard.get(m.frm)
            if last is not None and now - last > self._leader_gap_max:
                self._leader_gap_max = now - last
                if now - last > self.core.config.election_ticks_min * self._tick_s / 2:
                    log.warning(
                        "heard nothing from the leader %016x for %.3fs (half an election "
                        "timeout is %.3fs)",
                        m.frm,
                        now - last,
                        self.core.config.election_ticks_min * self._tick_s / 2,
                    )
        self._heard[m.frm] = now
        self.core.step(m)
        self._kick()

    def _driver_frame(self, member: int, payload: bytes) -> None:
        self._heard[member] = time.monotonic()
        self._on_driver_frame(member, payload)

    def _resolve(self, member: int) -> tuple[str, int] | None:
        address = self.core.membership.addresses.get(member) or self._hints.get(member)
        return self._parse_address(address) if address else None

    def _tick(self) -> None:
        if self._stopped:
            return
        self._ticker = self.loop.call_later(self._tick_s, self._tick)
        self.core.tick()
        self._process()

    # -- the Ready cycle (loop) -------------------------------------------------------------

    def _kick(self) -> None:
        """Process the core's output soon: once per loop iteration, so everything that
        arrived together lands in one Ready."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        if self._stopped or self._failed is not None:
            return
        if self._persisting:
            for m in self.core.take_messages():
                self.transport.send(m)
            view = self.view
            if self.core.role is not view.role or self.core.leader != view.leader:
                self._publish()  # a write held up by a full disk must not hide a step-down
            return
        rd = self.core.ready()
        if not rd:
            return
        for m in rd.messages:
            self.transport.send(m)
        if rd.soft_state is not None:
            self._soft_state_changed(rd)
        if rd.snapshot is not None or rd.entries or self._vote_changed(rd):
            self._persisting = True
            if not self.storage.syncs:
                # nothing waits for a disk: save here, without two thread hops
                done: concurrent.futures.Future[None] = concurrent.futures.Future()
                try:
                    self._persist(rd)
                    done.set_result(None)
                except BaseException as exc:
                    done.set_exception(exc)
                self._persisted(rd, done)
                return
            future = self.loop.run_in_executor(self._disk, self._persist, rd)
            future.add_done_callback(functools.partial(self._persisted, rd))
        else:
            # Nothing to make durable: at most a higher commit index, which Raft need not
            # persist (a restarted node learns it again); it is written with the next entries.
            self._finish(rd)

    def _vote_changed(self, rd: Ready) -> bool:
        hs = rd.hard_state
        return hs is not None and (hs.term, hs.vote) != self._durable_vote

    def _persist(self, rd: Ready) -> None:
        """Disk thread: one write and one sync for the whole Ready."""
        hs = rd.hard_state
        if hs is None and rd.entries:
            hs = HardState(self.core.term, self.core.vote, self.core.commit)
        self.storage.save(hs, rd.entries, rd.snapshot)
        if hs is not None:
            self._durable_vote = (hs.term, hs.vote)

    def _persisted(
        self, rd: Ready, future: asyncio.Future[None] | concurrent.futures.Future[None]
    ) -> None:
        self._persisting = False
        exc = future.exception()
        if isinstance(exc, DiskFullError):
            if not self._disk_full:
                log.error("disk full: acknowledging nothing until space returns (%s)", exc)
                self._disk_full = True
                self._problem = f"disk full: {exc}"
                self._hand_over_if_leader()
                self._publish()
            self._persisting = True
            self.loop.call_later(DISK_FULL_RETRY_S, self._retry_persist, rd)
            return
        if exc is not None:
            self._fail(exc)
            return
        if self._disk_full:
            log.warning("disk space is back: writes resume")
            self._disk_full = False
            self._problem = ""
        self._finish(rd)

    def _retry_persist(self, rd: Ready) -> None:
        if self._stopped:
            return
        if self.core.transferee == NONE:
            # the first hand-over may have found no follower caught up, or timed out: a
            # leader that cannot write must keep trying to give way
            self._hand_over_if_leader()
        future = self.loop.run_in_executor(self._disk, self._persist, rd)
        future.add_done_callback(functools.partial(self._persisted, rd))

    def _finish(self, rd: Ready) -> None:
        for m in rd.messages_after_persist:
            self.transport.send(m)
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            log.info(
                "installed a snapshot from the leader: index %d, term %d, %d bytes",
                meta.index,
                meta.term,
                len(rd.snapshot.data),
            )
            self._apply_queue.put(("restore", rd.snapshot))
        if rd.committed:
            self._apply_queue.put(("apply", rd.committed))
        for rs in rd.read_states:
            waiting = self._reads.pop(rs.context, None)
            if waiting is not None:
                self._apply_queue.put(("read", (rs.index, waiting[1])))
        for ctx in rd.reads_dropped:
            waiting = self._reads.pop(ctx, None)
            if waiting is not None:
                waiting[1](False)
        if rd.snapshot_due:
            self._apply_queue.put(("snapshot", None))
        self.core.advance(rd)
        self._publish()
        self._process()

    def _soft_state_changed(self, rd: Ready) -> None:
        soft = rd.soft_state
        assert soft is not None
        if soft.role is Role.LEADER:
            log.info("%016x leads term %d", self.core.id, soft.term)

    def _hand_over_if_leader(self) -> None:
        core = self.core
        if not core.is_leader:
            return
        best = [
            (pr.match, m)
            for m, pr in core.progress.items()
            if m != core.id and core.membership.is_voter(m) and pr.state is ProgressState.REPLICATE
        ]
        if best:
            try:
                core.transfer_leadership(max(best)[1])
            except ProposalRefusedError:
                pass

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = exc
        what = exc if isinstance(exc, StorageError) else repr(exc)
        self._problem = f"storage failed: {what}"
        log.critical("storage failed, this node stops acknowledging anything: %s", what)
        self._publish()
        self._on_fatal(exc)

    # -- snapshots (loop side) ---------------------------------------------------------------

    def _snapshot_taken(self, index: int, data: bytes) -> None:
        """Loop: the apply thread took a snapshot at ``index``; persist it, then compact."""
        if self._stopped or self._failed is not None:
            return
        try:
            meta = self.core.snapshot_meta(index)
        except ValueError:
            return  # an installed snapshot overtook it
        snapshot = Snapshot(meta, data)
        future = self.loop.run_in_executor(self._disk, self.storage.save_snapshot, snapshot)

        def saved(f: asyncio.Future[bool]) -> None:
            exc = f.exception()
            if exc is not None:
                if isinstance(exc, DiskFullError):
                    if not self._snapshot_blocked:
                        log.error("cannot save a snapshot, the disk is full: %s", exc)
                        self._snapshot_blocked = True
                    # the core asks for no other snapshot until this one is taken: retry it
                    self.loop.call_later(DISK_FULL_RETRY_S, self._snapshot_taken, index, data)
                    return
                self._fail(exc)
                return
            if self._snapshot_blocked:
                log.warning("disk space is back: the snapshot at %d is saved", index)
                self._snapshot_blocked = False
            if f.result():
                self.core.snapshot_taken(snapshot)
                self._publish()

        future.add_done_callback(saved)

    # -- the apply thread --------------------------------------------------------------------

    def _apply_loop(self) -> None:
        while True:
            kind, item = self._apply_queue.get()
            if kind == "stop":
                return
            try:
                if kind == "apply":
                    entries: Sequence[Entry] = item  # type: ignore[assignment]
                    self._apply_fn(entries)
                    self.applied = entries[-1].index
                elif kind == "restore":
                    snap: Snapshot = item  # type: ignore[assignment]
                    self._restore(snap)
                    self.applied = snap.meta.index
                elif kind == "snapshot":
                    index, data = self._take_snapshot()
                    self.loop.call_soon_threadsafe(self._snapshot_taken, index, data)
                elif kind == "read":
                    self._read_waiters.append(item)  # type: ignore[arg-type]
                elif kind == "call":
                    item()  # type: ignore[operator]
            except Exception:  # the layer above must never raise: keep the log moving
                log.exception("the apply thread failed on %s", kind)
            if self._read_waiters:
                ready = [w for w in self._read_waiters if w[0] <= self.applied]
                self._read_waiters = [w for w in self._read_waiters if w[0] > self.applied]
                for _, done in ready:
                    done(True)
            if kind != "read":
                self.loop.call_soon_threadsafe(self._publish)

    def on_apply_thread(self) -> bool:
        return threading.current_thread() is self._apply_thread

    def call_on_apply_thread(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the apply thread, between two applies (for consistent reads of the
        state machine)."""
        self._apply_queue.put(("call", fn))

    # -- status ------------------------------------------------------------------------------

    def _publish(self) -> None:
        self.view = self._make_view()
        self._on_view(self.view)

    def _make_view(self) -> DriverView:
        core = self.core
        now = time.monotonic()
        membership = core.membership
        peers = []
        for m in sorted(membership.members):
            pr = core.progress.get(m) if core.is_leader else None
            heard = self._heard.get(m)
            peers.append(
                PeerView(
                    id=m,
                    address=membership.addresses.get(m, ""),
                    voter=m in membership.voters,
                    match=(core.stable_index if m == core.id else pr.match)
                    if pr is not None
                    else None,
                    last_heard_s=None if heard is None else now - heard,
                )
            )
        return DriverView(
            member_id=core.id,
            cluster_id=core.cluster_id,
            role=core.role,
            term=core.term,
            leader=core.leader,
            commit=core.commit,
            applied=self.applied,
            last_index=core.log.last_index,
            has_quorum=self._has_quorum(),
            transferring=core.transferee != NONE,
            peers=tuple(peers),
            disk_full=self._disk_full,
            leader_gap_max_s=self._leader_gap_max,
            storage_problem=self._problem,
        )

    def _has_quorum(self) -> bool:
        """Leader: a majority of voters (itself included) was heard from within the minimum
        election timeout. Others: a leader is known."""
        core = self.core
        if not core.is_leader:
            return core.leader != NONE
        window = core.config.election_ticks_min * self._tick_s
        now = time.monotonic()
        fresh = sum(
            1
            for v in core.membership.voters
            if v == core.id or now - self._heard.get(v, -1e9) < window
        )
        return fresh >= core.membership.quorum()
