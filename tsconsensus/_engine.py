"""The project's own Raft engine behind the interface the rest of the package uses.

:class:`EngineNode` runs a :class:`~tsconsensus.raft.driver.Driver` and adds what the engine
leaves to its user: commands are gathered into log entries (group commit), a follower forwards
them to the leader over the Raft transport, and every waiting caller is found again by its
request id when the entry is applied (on whichever node it waits). Member ids are random
64-bit numbers, shown as 16 hex digits; an address (``host:raft_port``) is an attribute.

Threads: :meth:`submit` and the status properties may be called from any thread; everything
that touches the driver runs on the node's loop; the applier runs on the driver's apply thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import _forwarding as forwarding
from ._applier import LogApplier, Outcome, join_entries
from ._forwarding import encode_forward
from ._member_view import ROLES, address_of, hex_id, id_of, member_ids, node_status
from ._outcomes import FailReason, Refusal, SubmitCallback
from .errors import ProposalRefusedError
from .raft import Entry, EntryKind, MembershipChange, MembershipOp, Role, Snapshot
from .raft.driver import Driver
from .raft.driver_view import DriverView
from .raft.loop_waker import LoopWaker
from .types import Command, CommandResult, NodeStatus, RaftState

log = logging.getLogger("tsconsensus.engine")
T = TypeVar("T")

_REFUSAL = {
    "not-leader": FailReason.NOT_LEADER,
    "transferring": FailReason.NOT_LEADER,
    "overloaded": FailReason.QUEUE_FULL,
    "too-large": FailReason.DENIED,
}
FORWARD_TIMEOUT_S = 5.0
MAX_ORIGINS = 100_000


class EngineNode:
    """One member on the new engine. Build it, then :meth:`start` it on the node's loop."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        make_driver: Callable[..., Driver],
        applier: LogApplier,
        address: str,
        max_batch_bytes: int,
        on_state_change: Callable[[RaftState, RaftState], None] | None = None,
        local_reads: bool = False,
    ) -> None:
        self.loop = loop
        # test-only planted bug: answer reads from this replica without ReadIndex
        self._local_reads = local_reads
        self._read_ids = itertools.count(1)
        self._loop_thread = 0  # the loop's thread id, known once started
        self._applier = applier
        self._address = address
        self._max_batch = max_batch_bytes
        self._on_state_change = on_state_change
        self._lock = threading.Lock()
        # request id -> (command hash, callback) of each caller waiting for it
        self._waiters: dict[str, list[tuple[str, SubmitCallback]]] = {}
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._stopped = False  # under _lock: submits after stop fail at once
        # callers of execute_command on other threads wake the loop through it
        self._submit_waker = LoopWaker(self.loop, self._drain)
        self._forward_ids = itertools.count(1)
        self._forwards: dict[int, list[str]] = {}
        # leader: request ids of forwarded commands -> the follower waiting for them
        self._origins: dict[str, int] = {}
        self._handing_over = False
        self._state = RaftState.FOLLOWER
        self.driver: Driver = make_driver(
            apply=self._apply,
            take_snapshot=self._take_snapshot,
            restore=self._restore,
            on_driver_frame=self._on_driver_frame,
            on_view=self._on_view,
        )
        self.node_id = hex_id(self.driver.core.id)
        self._applied = self.driver.applied

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._submit_waker.start()
        await self.driver.start()

    async def stop_async(self) -> None:
        with self._lock:
            self._stopped = True
        await self.driver.stop()
        self._submit_waker.close()
        self._fail_all(FailReason.NO_LEADER)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop.is_closed() or not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.stop_async(), self.loop).result(timeout)

    # -- commands ---------------------------------------------------------------------------

    def on_raft_thread(self) -> bool:
        """True on the apply thread (where the state machine runs)."""
        return self.driver.on_apply_thread()

    def submit(
        self, entry: bytes, callback: SubmitCallback, *, request_id: str, digest: str
    ) -> None:
        """Queue an encoded command (``digest``: its :func:`command_hash`, "" for a restore);
        ``callback`` runs once with its outcome (when applied on this node) or a reason it
        will not come (retry with the same id). Only an outcome of the same command answers
        it: an older entry that used the id for another command, applied here after this
        call, does not."""
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._waiters.setdefault(request_id, []).append((digest, callback))
                self._queue.append((request_id, entry))
        if stopped:
            callback(None, FailReason.NO_LEADER)  # the node stopped: nothing will answer
        else:
            self._submit_waker.wake()  # folded into a wake-up already pending

    def _on_loop_soon(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn`` on the node's loop soon; from the loop itself without waking it through
        its self-pipe (the HTTP ports run there: most commands start on the loop)."""
        if self._loop_thread == threading.get_ident():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    @property
    def log_time(self) -> float:
        """The log time (seconds) this node has applied up to."""
        return self._applier.log_time

    def is_read_only(self, command: Command) -> bool:
        return self._applier.is_read_only(command)

    def submit_read(self, command: Command, callback: SubmitCallback) -> None:
        """A linearizable read: ``callback`` gets the result once this node has applied
        everything committed when the read arrived (ReadIndex: confirmed by a heartbeat round
        of the leader, no log entry, no clock), or a reason to retry."""
        self._on_loop_soon(self._start_read, command, callback)

    def _start_read(self, command: Command, callback: SubmitCallback) -> None:
        def answer() -> None:  # where apply runs (ApplyWorker: its thread, or the loop)
            callback(self._applier.read(command, self._applied), None)

        if self._local_reads:
            self.driver.call_on_apply_thread(answer)
            return

        def done(ok: bool) -> None:
            if ok:
                answer()
            else:
                callback(None, FailReason.NO_LEADER)

        self.driver.read_index(next(self._read_ids), done)

    def _drain(self) -> None:
        with self._lock:
            pending = list(self._queue)
            self._queue.clear()
        if not pending:
            return
        view = self.driver.view
        if view.role is Role.LEADER and not self._handing_over:
            with self.driver.inputs:  # the appends go out now, not a loop turn later
                for batch in self._batches(pending):
                    self._propose_batch(batch, [rid for rid, _ in batch])
            return
        if self._handing_over or view.leader == 0:
            self._fail([rid for rid, _ in pending], FailReason.NO_LEADER)
            return
        for batch in self._batches(pending):
            forward_id = next(self._forward_ids)
            self._forwards[forward_id] = [rid for rid, _ in batch]
            self.loop.call_later(FORWARD_TIMEOUT_S, self._forwards.pop, forward_id, None)
            self.driver.send_driver(view.leader, encode_forward(forward_id, batch))

    def _batches(self, pending: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
        batches: list[list[tuple[str, bytes]]] = [[]]
        size = 0
        for item in pending:
            if batches[-1] and size + len(item[1]) > self._max_batch:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += len(item[1]) + 1
        return batches

    def _propose_batch(self, batch: Sequence[tuple[str, bytes]], request_ids: list[str]) -> str:
        """Propose on this (leader) node; the refusal reason, or '' when appended."""
        try:
            self.driver.propose(join_entries([e for _, e in batch]))
        except ProposalRefusedError as exc:
            self._fail(request_ids, _REFUSAL.get(exc.reason, FailReason.NOT_LEADER))
            return exc.reason
        return ""

    def _on_driver_frame(self, member: int, payload: bytes) -> None:
        try:
            frame = forwarding.decode(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("dropping a bad driver frame from %016x: %s", member, exc)
            return
        if frame.kind == forwarding.REFUSED:
            ids = self._forwards.pop(frame.forward_id, None)
            if ids:
                self._fail(ids, frame.reason)
            return
        if frame.kind == forwarding.RESULTS:
            # the leader applied them; answer those applied here too (the rest, this node's
            # own apply answers with the same outcome): a caller sees its command applied here
            applied = self._applied
            self._resolve(
                [
                    o
                    for o in frame.outcomes
                    if not isinstance(o[2], CommandResult) or o[2].index <= applied
                ]
            )
            return
        view = self.driver.view
        reason = ""
        if view.role is not Role.LEADER or self._handing_over:
            reason = "not-leader"
        else:
            for batch in self._batches(frame.commands):
                reason = self._propose_batch(batch, []) or reason
                if not reason:
                    self._remember_origins(batch, member)
        if reason:
            failure = _REFUSAL.get(reason, FailReason.NOT_LEADER)
            self.driver.send_driver(member, forwarding.encode_refused(frame.forward_id, failure))

    def _remember_origins(self, batch: Sequence[tuple[str, bytes]], member: int) -> None:
        origins = self._origins
        if len(origins) > MAX_ORIGINS:  # answers that never came (leader changes): forget
            origins.clear()
        for rid, _ in batch:
            origins[rid] = member

    def _send_results(self, results: dict[int, list[tuple[str, str, Outcome]]]) -> None:
        """Loop: tell followers the outcomes of the commands they forwarded."""
        for member, outcomes in results.items():
            self.driver.send_driver(member, forwarding.encode_results(outcomes))

    def _fail(self, request_ids: Sequence[str], reason: FailReason) -> None:
        callbacks: list[SubmitCallback] = []
        with self._lock:
            for rid in request_ids:
                callbacks.extend(cb for _, cb in self._waiters.pop(rid, []))
        for cb in callbacks:
            cb(None, reason)

    def _fail_all(self, reason: FailReason) -> None:
        with self._lock:
            ids = list(self._waiters)
        self._fail(ids, reason)

    # -- the apply thread -------------------------------------------------------------------

    def _apply(self, entries: Sequence[Entry]) -> None:
        batch: list[tuple[str, str, Outcome]] = []
        for e in entries:
            if e.kind is EntryKind.NORMAL:
                outcomes = self._applier.apply_entry(e.data, e.index, e.time / 1000.0)
                if outcomes:
                    batch.extend(outcomes)
            self._applied = e.index
        if batch:
            # once per batch: one lock, one loop wake-up for the forwarded ones
            self._resolve(batch)
            if self._origins:
                self._answer_followers(batch)

    def _answer_followers(self, outcomes: list[tuple[str, str, Outcome]]) -> None:
        results: dict[int, list[tuple[str, str, Outcome]]] = {}
        pop = self._origins.pop
        for rid, digest, outcome in outcomes:
            member = pop(rid, None)
            if member is not None:
                results.setdefault(member, []).append((rid, digest, outcome))
        if results:
            self._on_loop_soon(self._send_results, results)

    def _resolve(self, outcomes: Sequence[tuple[str, str, Outcome]]) -> None:
        callbacks: list[tuple[SubmitCallback, Outcome]] = []
        with self._lock:
            waiters = self._waiters
            if not waiters:
                return
            for rid, digest, outcome in outcomes:
                waiting = waiters.get(rid)
                if not waiting:
                    continue
                # "" (a restore, or a peer that does not say) matches any command
                others = []
                for w in waiting:
                    if not digest or not w[0] or w[0] == digest:
                        callbacks.append((w[1], outcome))
                    else:
                        others.append(w)
                if others:
                    waiters[rid] = others
                else:
                    del waiters[rid]
        for cb, outcome in callbacks:
            if isinstance(outcome, Refusal):
                cb(None, outcome)
            else:
                cb(outcome, None)

    def _take_snapshot(self) -> tuple[int, bytes]:
        return self._applied, self._applier.snapshot()

    def _restore(self, snapshot: Snapshot) -> None:
        self._applier.restore(bytes(snapshot.data))
        self._applied = snapshot.meta.index

    def call_on_raft_thread(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the apply thread between two applied entries."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        self.driver.call_on_apply_thread(run)
        return future

    # -- status -----------------------------------------------------------------------------

    def _on_view(self, view: DriverView) -> None:
        state = ROLES[view.role]
        if state is not self._state:
            old, self._state = self._state, state
            if state is not RaftState.LEADER and old is RaftState.LEADER:
                self._fail_all(FailReason.LEADER_CHANGED)
                self._origins = {}
            if self._on_state_change is not None:
                self._on_state_change(old, state)

    @property
    def applied_index(self) -> int:
        """The last entry applied on this node (written by the apply thread)."""
        return self._applied

    @property
    def view(self) -> DriverView:
        return self.driver.view

    @property
    def leader(self) -> str | None:
        leader = self.driver.view.leader
        return None if leader == 0 else hex_id(leader)

    @property
    def is_leader(self) -> bool:
        return self.driver.view.role is Role.LEADER

    def members(self) -> list[str]:
        """The member ids of the configuration in force, this node first."""
        return member_ids(self.driver.view)

    def address_of(self, node_id: str) -> str | None:
        """The Raft address (``host:port``) recorded for a member id."""
        return address_of(self.driver.view, node_id)

    def id_of(self, text: str) -> str | None:
        """A member id from its hex form or from its address (``host:port`` or ``host``)."""
        return id_of(self.driver.view, text)

    def status(self) -> NodeStatus:
        return node_status(
            self.driver.view,
            address=self._address,
            applied=self._applied,
            snapshot_index=self._snapshot_index(),
        )

    def _snapshot_index(self) -> int:
        meta = self.driver.storage.snapshot_meta  # one attribute read: any thread
        return 0 if meta is None else meta.index

    # -- membership and leadership ----------------------------------------------------------

    def _on_loop(self, fn: Callable[[], T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(timeout)

    def add_learner(self, member: int, address: str, timeout: float = 10.0) -> int:
        """On the leader: propose adding ``member`` as a learner; the entry's index. Raises
        :class:`ProposalRefusedError` (not the leader, a change pending, a removed id)."""
        change = MembershipChange(MembershipOp.ADD_LEARNER, member, address)
        return self._on_loop(lambda: self.driver.propose_membership(change)[0], timeout)

    def remove(self, member: int, timeout: float = 10.0) -> int:
        change = MembershipChange(MembershipOp.REMOVE, member)
        return self._on_loop(lambda: self.driver.propose_membership(change)[0], timeout)

    def set_handing_over(self, on: bool) -> None:
        self._handing_over = on

    @property
    def address(self) -> str:
        """This member's Raft address (``host:port``)."""
        return self._address

    def best_transfer_target(self) -> str | None:
        """The voter (not this node) with the highest match index, as a member id."""
        view = self.driver.view
        voters = [p for p in view.peers if p.voter and p.id != view.member_id]
        if not voters:
            return None
        best = max(voters, key=lambda p: (p.match or 0, -(p.last_heard_s or 1e9)))
        return hex_id(best.id)

    def recheck_connections(self) -> None:
        """A peer lost its tag: close Raft connections that are no longer allowed (any thread)."""
        self.loop.call_soon_threadsafe(self.driver.transport.recheck)

    def transfer_to(self, member: int, timeout: float = 5.0) -> None:
        self._on_loop(lambda: self.driver.transfer_leadership(member), timeout)


async def _call(fn: Callable[[], T]) -> T:
    return fn()
