"""The driver: one per node, it runs the pure core against real time, disk and network.

Threads and loops:
- the node's asyncio loop runs the core, the ticks and the transport (everything that touches
  the core happens there, so the core needs no lock);
- one disk worker thread persists each ``Ready`` (one write, one fdatasync; what is written:
  :mod:`.ready_writer`): the loop never waits on the disk, and whatever arrives meanwhile is
  gathered into the next ``Ready`` (group commit). The leader sends its appends before its
  own write and counts itself once the write is done; followers acknowledge only what is on
  disk;
- one apply thread hands committed entries to the layer above (``apply``), installs snapshots
  (``restore``) and takes them (``take_snapshot``), in log order. A slow ``apply`` never stalls
  heartbeats.

The driver knows nothing of commands, HTTP or tailnets: the layer above passes callables.
After a storage failure (a failed fsync) the node cannot go on safely: ``on_fatal`` is called
once with the error and the driver stops acknowledging anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from ..errors import DiskFullError, ProposalRefusedError, StorageError
from ._base import InitialState
from .apply_worker import Apply, ApplyWorker, ReadDone, Restore, TakeSnapshot
from .config import CoreConfig
from .core import RaftCore
from .disk_worker import DiskWorker
from .driver_view import DriverView, ViewPublisher
from .input_batch import InputBatch
from .leader_silence import LeaderSilence
from .messages import NONE, MembershipChange, Message, Ready, Role, Snapshot
from .notice_hold import NoticeHold
from .ready_writer import ReadyWriter
from .storage_types import Storage
from .transport import Transport

log = logging.getLogger("tsconsensus.raft")

DISK_FULL_RETRY_S = 1.0
NOTICE_HOLD_S = 0.005
"""How long a commit notice waits for an append that carries it anyway (:mod:`.notice_hold`)."""


class Driver:
    """Runs one :class:`RaftCore`. Build it on any thread; call :meth:`start` and every other
    method named as loop-only on ``loop``'s thread.

    ``address`` is this member's Raft address (``host:port``), recorded in configurations so
    that peers can dial it; ``parse_address`` turns such an address into (host, port).
    ``after_snapshot`` runs on the disk thread once a snapshot taken here is saved and its
    bytes are dropped (the node gives the freed memory back to the OS there).
    ``apply_inline``: ``apply`` may run on the loop when the apply thread is idle (only for a
    quick ``apply``: it then delays heartbeats while it runs).
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
        after_snapshot: Callable[[], object] = lambda: None,
        apply_inline: bool = False,
        rng: random.Random | None = None,
        address_hints: dict[int, str] | None = None,
        dial: Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        | None = None,
    ) -> None:
        self.loop = loop
        self.storage = storage
        self.core = RaftCore(config, initial, rng or random.Random())
        self.inputs = InputBatch(self._process)
        """Loop: ``with driver.inputs:`` around a burst of inputs processes them on exit, in
        one Ready, without waiting for the next loop turn (each read of the transport is one)."""
        self._tick_s = tick_s
        self._on_fatal = on_fatal
        self._after_snapshot = after_snapshot
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
            on_down=self._peer_down,
            max_frame_bytes=config.max_message_bytes + 4096,
            dial=dial,
            batch=self.inputs,
        )
        self._out = NoticeHold(loop, self.transport.send, NOTICE_HOLD_S)
        self._disk = DiskWorker(loop, f"tsc-disk-{config.id:016x}")
        self._writer = ReadyWriter(storage, self._disk, initial.hard_state)
        self._worker = ApplyWorker(
            name=f"tsc-apply-{config.id:016x}",
            applied=self.core.applied_handed,
            apply=apply,
            take_snapshot=take_snapshot,
            restore=restore,
            on_snapshot=lambda index, data: loop.call_soon_threadsafe(
                self._snapshot_taken, index, data
            ),
            inline=apply_inline,
        )
        if initial.snapshot is not None:
            # the state machine starts empty: bring it to the snapshot the log continues from
            self._worker.restore(initial.snapshot)
        self._reads: dict[int, ReadDone] = {}
        self._persisting = False
        self._scheduled = False
        self._stopped = False
        self._failed: BaseException | None = None
        self._disk_full = False
        self._problem = ""  # DriverView.storage_problem
        self._snapshot_blocked = False  # a snapshot save waits for space (logged once)
        self._ticker: asyncio.TimerHandle | None = None
        self._silence = LeaderSilence(config.election_ticks_min * tick_s / 2)
        self._tick_due = 0.0  # when the next tick should run (loop.time())
        self._views = ViewPublisher(
            self.core,
            applied=lambda: self._worker.applied,
            silence=self._silence,
            tick_s=tick_s,
            storage=lambda: (self._disk_full, self._problem),
            on_view=on_view,
        )

    # -- lifecycle (loop) ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the Raft port and start ticking. Raises OSError naming the address."""
        await self.transport.start()
        self._disk.start()
        self._worker.start()
        self._schedule_tick()
        self._kick()

    async def stop(self) -> None:
        """Stop ticking, close the transport, let the disk and apply threads finish."""
        if self._stopped:
            return
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        self._out.flush()  # what this node knows of the commit index, while it can tell
        await self.transport.stop()
        await self.loop.run_in_executor(None, self._worker.stop, 10)
        self._disk.stop()

    @property
    def applied(self) -> int:
        """The last index the apply thread handed to ``apply`` (any thread may read it)."""
        return self._worker.applied

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
        """A linearizable read: ``done(True)`` (where ``apply`` runs, see :class:`ApplyWorker`,
        once this node has applied everything committed when the read arrived) or
        ``done(False)`` (no leader could confirm it: retry)."""
        if self._failed is not None:
            done(False)
            return
        self._reads[context] = done
        self.core.read_index(context)
        self._kick()

    def send_driver(self, to: int, payload: bytes) -> None:
        """Loop: ``payload`` to member ``to``, after any commit notice held for it (a
        forwarded command's result then finds the commit index that applies it there)."""
        self._out.release(to)
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
        self._heard_from(m.frm)
        self.core.step(m)
        self._kick()

    def _driver_frame(self, member: int, payload: bytes) -> None:
        self._heard_from(member)
        self._on_driver_frame(member, payload)

    def _heard_from(self, member: int) -> None:
        following = member == self.core.leader and not self.core.is_leader
        self._silence.heard_from(
            member, time.monotonic(), leader=following, tick_due=self._tick_due
        )

    def _peer_down(self, member: int) -> None:
        self.core.report_down(member)
        self._kick()

    def _resolve(self, member: int) -> tuple[str, int] | None:
        address = self.core.membership.addresses.get(member) or self._hints.get(member)
        return self._parse_address(address) if address else None

    def _schedule_tick(self) -> None:
        self._tick_due = self.loop.time() + self._tick_s
        self._ticker = self.loop.call_at(self._tick_due, self._tick)

    def _tick(self) -> None:
        if self._stopped:
            return
        self._silence.ticked(self._tick_due, self.loop.time())
        self._schedule_tick()
        self.core.tick()
        self._process()
        # The apply thread does not wake the loop for each batch it applies, and a follower
        # does not publish for each append (ViewPublisher.stale): the view catches up here, at
        # most one tick late.
        self._publish()

    # -- the Ready cycle (loop) -------------------------------------------------------------

    def _kick(self) -> None:
        """Process the core's output soon: once per loop iteration, so everything that
        arrived together lands in one Ready (inside an input batch: when it ends)."""
        if self.inputs.hold():
            return
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._process)

    def _process(self) -> None:
        self._scheduled = False
        if self._stopped or self._failed is not None:
            return
        if self._persisting:
            for m in self.core.take_messages():
                self._out.send(m)
            if self._views.stale():
                self._publish()  # a write held up by a full disk must not hide a step-down
            return
        rd = self.core.ready()
        if not rd:
            return
        # Committed entries were durable here before this Ready, so they may be handed out
        # before it is written. When is a matter of who waits: a leader's callers wait for
        # the apply, so it goes first; a follower's leader waits for its answer, so the apply
        # (on this thread, for a quick machine) goes after what is sent: beside the disk
        # write, or after the answers that follow a write made here.
        durable = self._writer.must_write(rd)
        syncs = durable and self.storage.syncs
        leader = self.core.is_leader
        # a snapshot's Ready hands out after its restore, in _finish
        apply_now = rd.snapshot is None and (leader or syncs)
        apply_after = rd.snapshot is None and not apply_now
        if apply_now and leader:
            self._hand_out(rd)
        if syncs:
            # the disk thread first: its wake-up and the sync overlap the sends below
            self._persisting = True
            self._submit_persist(rd)
        for m in rd.messages:
            self._out.send(m)
        if apply_now and not leader:
            self._hand_out(rd)
        soft = rd.soft_state
        if soft is not None:
            if soft.role is Role.LEADER:
                self._silence.follow(None)
                log.info("%016x leads term %d", self.core.id, soft.term)
            elif soft.role is Role.FOLLOWER and soft.leader != NONE:
                self._silence.follow(soft.leader)
        if not durable:
            # Nothing to make durable: at most a higher commit index, which Raft need not
            # persist (a restarted node learns it again); it is written with the next entries.
            self._finish(rd, apply_after)
        elif not syncs:
            # nothing waits for a disk: save here, without two thread hops
            self._persisting = True
            error: BaseException | None = None
            try:
                self._writer.write(rd, self._writer.hard_state(rd, self.core))
            except BaseException as exc:
                error = exc
            self._persisted(rd, error, apply_after)

    def _submit_persist(self, rd: Ready) -> None:
        """Write ``rd`` on the disk thread; :meth:`_persisted` follows on the loop."""
        hard_state = self._writer.hard_state(rd, self.core)
        self._writer.submit(rd, hard_state, lambda exc: self._persisted(rd, exc))

    def _persisted(self, rd: Ready, exc: BaseException | None, apply_after: bool = False) -> None:
        """Loop: ``rd`` was written (``exc`` is None) or failed with ``exc``. ``apply_after``:
        its committed entries go to the apply thread after this write, not before it."""
        self._persisting = False
        if isinstance(exc, DiskFullError):
            if not self._disk_full:
                log.error("disk full: acknowledging nothing until space returns (%s)", exc)
                self._disk_full = True
                self._problem = f"disk full: {exc}"
                self._hand_over_if_leader()
                self._publish()
            if apply_after:  # they were durable before this write: no need to wait for it
                self._hand_out(rd)
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
        self._finish(rd, apply_after)

    def _retry_persist(self, rd: Ready) -> None:
        if self._stopped:
            return
        if self.core.transferee == NONE:
            # the first hand-over may have found no follower caught up, or timed out: a
            # leader that cannot write must keep trying to give way
            self._hand_over_if_leader()
        self._submit_persist(rd)

    def _finish(self, rd: Ready, apply_after: bool = False) -> None:
        for m in rd.messages_after_persist:
            self._out.send(m)
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            log.info(
                "installed a snapshot from the leader: index %d, term %d, %d bytes",
                meta.index,
                meta.term,
                len(rd.snapshot.data),
            )
            self._worker.restore(rd.snapshot)
            self._hand_out(rd)
        elif apply_after:  # a follower's, after the answers its write allowed
            self._hand_out(rd)
        self.core.advance(rd)
        if self._views.stale():
            self._publish()
        self._process()

    def _hand_out(self, rd: Ready) -> None:
        """Give ``rd``'s committed entries, reads and snapshot request to the apply thread
        (after its snapshot, if it installs one: the entries continue from there)."""
        if rd.committed:
            self._worker.apply(rd.committed)
        for rs in rd.read_states:
            waiting = self._reads.pop(rs.context, None)
            if waiting is not None:
                self._worker.read(rs.index, waiting)
        for ctx in rd.reads_dropped:
            waiting = self._reads.pop(ctx, None)
            if waiting is not None:
                waiting(False)
        if rd.snapshot_due:
            self._worker.take_snapshot()

    def _hand_over_if_leader(self) -> None:
        target = self.core.most_caught_up_voter() if self.core.is_leader else NONE
        if target != NONE:
            try:
                self.core.transfer_leadership(target)
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

        def saved(stored: Snapshot | None, exc: BaseException | None) -> None:
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
            if stored is not None:
                # the stored one: its data is a view of the file, not bytes held in memory
                self.core.snapshot_taken(stored)
                self._publish()
                # a loop turn later, when nothing here holds the bytes any more
                self.loop.call_soon(self._disk.submit, self._after_snapshot)

        self._disk.submit(lambda: self.storage.save_snapshot(snapshot), saved)

    # -- the apply thread --------------------------------------------------------------------

    def on_apply_thread(self) -> bool:
        return self._worker.on_thread()

    def call_on_apply_thread(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the apply thread, between two applies (for consistent reads of the
        state machine)."""
        self._worker.call(fn)

    # -- status ------------------------------------------------------------------------------

    @property
    def view(self) -> DriverView:
        """The latest picture of this node (any thread may read it; see :class:`DriverView`)."""
        return self._views.view

    def _publish(self) -> None:
        self._views.publish()
