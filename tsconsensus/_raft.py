"""The Raft engine: the one module that imports pysyncobj.

It adapts pysyncobj to what the rest of the package needs (:class:`RaftNode`): submit an entry
and get its outcome through a callback, read a status, change membership. Everything pysyncobj
does wrong by default is fixed here:
- it binds ``0.0.0.0``: we bind the node's own address only;
- it unpickles frames from anyone: connections are authorized by tag at accept, before a byte
  is read, and every frame carries a MAC under the cluster password (:mod:`._wire`);
- outgoing connections leave from the node's own address, so peers can authorize them;
- an exception in a replicated method wedges the cluster: :class:`LogApplier` never raises;
- default snapshots pickle the object's attributes: ours carry only the applier's bytes.

Threads: pysyncobj runs on one thread of ours (the "Raft thread", named ``tsc-raft-<id>``).
Callbacks given to :meth:`RaftNode.submit` and to membership calls run on that thread and must
return quickly without blocking.
"""

from __future__ import annotations

import _socket
import collections
import concurrent.futures
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pysyncobj.serializer as _pso_serializer
import pysyncobj.tcp_connection as _pso_tcp_connection
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.monotonic import monotonic as _pso_monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from ._applier import LogApplier, join_entries
from ._raft_model import (
    COMMIT_PUSH_DELAY_S,
    COMPACTION_RETRY_S,
    FORWARDED_WINDOW_S,
    STATES,
    FailReason,
    PeerView,
    SubmitCallback,
    SubmitQueue,
    build_status,
    fan_out,
    sync_conf,
)
from ._wire import (
    FastGzip,
    FrameAuthenticator,
    FrameCompression,
    ResentEntriesFilter,
    SourceBindingSocketModule,
    check_bindable,
    source,
    split_node_id,
)
from .authorization import Authorizer
from .config import RaftConfig
from .errors import TsconsensusError
from .types import CommandResult, NodeStatus, RaftState

# Importing pysyncobj replaces socket.inet_ntop, on every OS, with a Windows-only version
# (pysyncobj/win_inet_pton.py); put the real one back for the rest of the process.
socket.inet_ntop = _socket.inet_ntop

log = logging.getLogger("tsconsensus.raft")
logging.getLogger("pysyncobj.syncobj").addFilter(ResentEntriesFilter())

T = TypeVar("T")


_FAIL_REASONS = {
    FAIL_REASON.MISSING_LEADER: FailReason.NO_LEADER,
    FAIL_REASON.NOT_LEADER: FailReason.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED: FailReason.LEADER_CHANGED,
    FAIL_REASON.DISCARDED: FailReason.DISCARDED,
    FAIL_REASON.QUEUE_FULL: FailReason.QUEUE_FULL,
    FAIL_REASON.REQUEST_DENIED: FailReason.DENIED,
    FAIL_REASON.UNKNOWN_OUTCOME: FailReason.UNKNOWN_OUTCOME,
}


DoneCallback = Callable[[FailReason | None], None]


_pso_serializer.gzip = FastGzip()  # type: ignore[assignment]
_pso_tcp_connection.socket = SourceBindingSocketModule()  # type: ignore[assignment]
_pso_tcp_connection.zlib = FrameCompression()  # type: ignore[assignment]


class _SyncObj(SyncObj):  # type: ignore[misc]
    """SyncObj whose frames are authenticated by a :class:`FrameAuthenticator`."""

    def __init__(self, *args: Any, authenticator: FrameAuthenticator, **kwargs: Any) -> None:
        # Set before SyncObj.__init__ so that pysyncobj counts them as its own attributes and
        # never puts them into a snapshot.
        self._tsc_authenticator = authenticator
        self._tsc_tick_thread: list[int | None] = [None]
        self._tsc_forwarded_until = 0.0
        self._tsc_handing_over = False
        self._tsc_compaction_paused_until = 0.0
        super().__init__(*args, **kwargs)
        if not hasattr(self, "_SyncObj__newAppendEntriesTime"):  # pragma: no cover
            raise TsconsensusError("unsupported pysyncobj version: internals changed")

    def tsc_note_forwarded(self) -> None:
        """A follower forwarded a command: push commit indexes at once for a while."""
        self._tsc_forwarded_until = _pso_monotonic() + FORWARDED_WINDOW_S

    def tsc_next_send_in(self) -> float | None:
        """On the leader: seconds until the next append-entries is due; None elsewhere."""
        if not self._isLeader():
            return None
        next_send: float = getattr(self, "_SyncObj__newAppendEntriesTime")  # noqa: B009
        return max(0.0, next_send - float(_pso_monotonic()))

    def _SyncObj__applyLogEntries(self) -> bool:
        need_send = bool(SyncObj._SyncObj__applyLogEntries(self))
        if not need_send or not self._isLeader():
            return need_send
        now = _pso_monotonic()
        if now < self._tsc_forwarded_until:
            return True
        due = now + COMMIT_PUSH_DELAY_S
        next_send: float = getattr(self, "_SyncObj__newAppendEntriesTime")  # noqa: B009
        if due < next_send:
            setattr(self, "_SyncObj__newAppendEntriesTime", due)  # noqa: B010
        return False

    def _SyncObj__tryLogCompaction(self) -> None:
        # A state machine whose snapshot() raises must not stop the Raft loop (pysyncobj lets
        # the error escape its tick, which would then never poll again): pause compaction.
        now = _pso_monotonic()
        if now < self._tsc_compaction_paused_until:
            return
        try:
            SyncObj._SyncObj__tryLogCompaction(self)
        except Exception:
            log.exception(
                "taking a snapshot failed; log compaction paused for %gs", COMPACTION_RETRY_S
            )
            self._tsc_compaction_paused_until = now + COMPACTION_RETRY_S

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:
        if self._tsc_handing_over:
            # While leadership is being handed over the log must not grow: the target has to
            # stay as up to date as this node, or this node wins the election again. Callers
            # (local or forwarded) get NOT_LEADER and retry on the new leader.
            self._SyncObj__callErrCallback(FAIL_REASON.NOT_LEADER, callback)
            return
        if threading.get_ident() != self._tsc_tick_thread[0]:
            super()._applyCommand(command, callback, commandType)
            return
        # On the Raft thread the next tick is about to run anyway: queue without writing to
        # pysyncobj's wake-up pipe, which would cost two syscalls and an idle tick per command.
        item = command if commandType is None else bytes((commandType,)) + command
        try:
            self._SyncObj__commandsQueue.put_nowait((item, callback))
        except queue.Full:
            self._SyncObj__callErrCallback(FAIL_REASON.QUEUE_FULL, callback)

    @property
    def encryptor(self) -> FrameAuthenticator:
        return self._tsc_authenticator

    def _getEncryptor(self) -> FrameAuthenticator:
        return self._tsc_authenticator


class _AuthorizingTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport, closed to every peer the :class:`Authorizer` denies."""

    REAUTHORIZE_EVERY_S = 1.0

    def __init__(
        self, syncObj: Any, selfNode: Any, otherNodes: Any, *, authorizer: Authorizer
    ) -> None:
        self._authorizer = authorizer
        self._source_host = split_node_id(selfNode.id)[0]
        self._next_reauthorize = 0.0
        self.last_heard: dict[str, float] = {}
        super().__init__(syncObj, selfNode, otherNodes)

    def _onTick(self) -> None:
        super()._onTick()
        now = _pso_monotonic()
        if now < self._next_reauthorize:
            return
        self._next_reauthorize = now + self.REAUTHORIZE_EVERY_S
        # Tags can be taken away from a peer while it is connected: check established
        # connections again, and drop the ones that are no longer allowed.
        for node, conn in list(self._connections.items()):
            if conn.state == CONNECTION_STATE.DISCONNECTED:
                continue
            host = split_node_id(node.id)[0] if ":" in str(node.id) else None
            if host is not None and not self._authorizer.may_dial(host):
                log.warning("raft: dropping connection to %s: no longer a tagged peer", node.id)
                conn.disconnect()

    def _onNewIncomingConnection(self, conn: Any) -> None:
        # The connection was accepted but nothing has been read from it yet: decide now, so an
        # unauthorized peer never gets a frame unpickled.
        try:
            ip, port = conn._TcpConnection__socket.getpeername()[:2]
        except (OSError, AttributeError):
            conn.disconnect()
            return
        if not self._authorizer.allows(ip, port, patient=False):
            log.warning("raft: refused connection from %s:%s (not a tagged peer)", ip, port)
            conn.disconnect()
            return
        super()._onNewIncomingConnection(conn)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        self.last_heard[str(node.id)] = _pso_monotonic()
        if isinstance(message, dict) and message.get("type") == "apply_command":
            self._syncObj.tsc_note_forwarded()
        super()._onMessageReceived(node, message)

    def _connectIfNecessarySingle(self, node: Any) -> bool:
        # Runs every tick for every node: decide cheaply unless a dial is actually due.
        conn = self._connections.get(node)
        if conn is not None and conn.state != CONNECTION_STATE.DISCONNECTED:
            return True
        if not self._shouldConnect(node):
            return False
        if not self._authorizer.may_dial(split_node_id(node.id)[0]):
            return False
        source.host = self._source_host
        try:
            return bool(super()._connectIfNecessarySingle(node))
        finally:
            source.host = None


class _ReplicatedLog(SyncObjConsumer):  # type: ignore[misc]
    """The only replicated object: hands each committed entry to the :class:`LogApplier`."""

    def __init__(self, applier: LogApplier) -> None:
        super().__init__()
        self._applier = applier

    @replicated  # type: ignore[misc,untyped-decorator,unused-ignore]
    def apply_entries(self, entry: bytes) -> list[CommandResult]:
        # pysyncobj increments its applied index after this returns.
        index = self._syncObj.raftLastApplied + 1
        return self._applier.apply_batch(entry, index)

    def _serialize(self) -> bytes:
        return self._applier.snapshot()

    def _deserialize(self, data: bytes) -> None:
        self._applier.restore(data)


class RaftNode:
    """One Raft member, identified by ``host:raft_port``.

    Construction binds the Raft port (on ``host`` only) and starts the Raft thread; it raises
    :class:`TsconsensusError` if the port cannot be bound. ``members`` is the initial
    configuration (this node included); a node with a ``state_dir`` that already holds state
    ignores it in favour of what it recorded.
    """

    def __init__(
        self,
        *,
        node_id: str,
        members: Sequence[str],
        applier: LogApplier,
        authorizer: Authorizer,
        raft: RaftConfig,
        state_dir: str,
        password: str,
        max_entry_bytes: int,
        on_state_change: Callable[[RaftState, RaftState], None] | None = None,
    ) -> None:
        self.node_id = node_id
        host, port = split_node_id(node_id)
        check_bindable(host, port)
        self._applier = applier
        self._log = _ReplicatedLog(applier)
        self._on_state_change = on_state_change
        conf = SyncObjConf(
            **sync_conf(node_id, raft, state_dir, max_entry_bytes),
            onStateChanged=self._state_changed,
        )
        others = [m for m in members if m != node_id]

        def make_transport(sync: Any, self_node: Any, other_nodes: Any) -> _AuthorizingTransport:
            self._transport = _AuthorizingTransport(
                sync, self_node, other_nodes, authorizer=authorizer
            )
            return self._transport

        try:
            self._sync = _SyncObj(
                node_id,
                others,
                conf=conf,
                consumers=[self._log],
                transportClass=make_transport,
                authenticator=FrameAuthenticator(password),
            )
        except Exception as exc:
            raise TsconsensusError(f"raft node {node_id} failed to start: {exc}") from exc
        self._tick_period = min(0.02, raft.heartbeat_interval_s / 2)
        self._stopping = threading.Event()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._submits = SubmitQueue(max_entry_bytes, self._wake)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sync._poller.subscribe(self._wake_r, self._drain_wakeups, POLL_EVENT_TYPE.READ)
        self._thread = threading.Thread(target=self._run, name=f"tsc-raft-{node_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._sync._tsc_tick_thread[0] = threading.get_ident()
        while not self._stopping.is_set():
            try:
                while self._calls:
                    self._calls.popleft()()
                self._flush_pending()
                wait = self._tick_period
                due = self._sync.tsc_next_send_in()
                if due is not None and due < wait:
                    wait = due
                self._sync.doTick(wait)
            except Exception:
                log.exception("raft tick failed; continuing")
                self._stopping.wait(self._tick_period)
        try:
            self._sync._poller.unsubscribe(self._wake_r)
            self._sync.destroy()
        except Exception:
            log.exception("raft shutdown failed")
        finally:
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):  # already plenty of wake-ups queued, or stopping
            pass

    def _drain_wakeups(self, _fd: int, _event: int) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _flush_pending(self) -> None:
        """Raft thread: submit what queued up since the last tick (group commit)."""
        for entries, callbacks in self._submits.batches():
            self._log.apply_entries(
                join_entries(entries, time.time()), callback=_fan_out(callbacks)
            )

    def _state_changed(self, old: int, new: int) -> None:
        if self._on_state_change is not None:
            self._on_state_change(STATES[old], STATES[new])

    # -- commands ---------------------------------------------------------------------------

    def on_raft_thread(self) -> bool:
        """True when called from the Raft thread (where ``apply`` runs)."""
        return threading.get_ident() == self._sync._tsc_tick_thread[0]

    def submit(self, entry: bytes, callback: SubmitCallback, *, request_id: str = "") -> None:
        """Queue ``entry`` for the log (forwarded to the leader if this node is a follower).

        ``callback(outcome, None)`` runs once the entry is applied on this node, or
        ``callback(None, reason)`` when it will not be. Some failures (a follower installing a
        snapshot) lose the callback entirely, so callers must wait with a deadline.
        """
        self._submits.put(entry, callback)

    # -- status -----------------------------------------------------------------------------

    @property
    def leader(self) -> str | None:
        node = self._sync._getLeader()
        return None if node is None else str(node.id)

    @property
    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    @property
    def applied_index(self) -> int:
        return int(self._sync.raftLastApplied)

    def members(self) -> list[str]:
        """The current Raft configuration (ids), this node first."""
        return [self.node_id, *sorted(n.id for n in self._sync.otherNodes)]

    def status(self) -> NodeStatus:
        now = _pso_monotonic()
        heard = self._transport.last_heard
        peers = [
            PeerView(
                id=str(node.id),
                connected=bool(self._sync.isNodeConnected(node)),
                seconds_since_heard=None
                if heard.get(str(node.id)) is None
                else max(0.0, now - heard[str(node.id)]),
            )
            for node in self._sync.otherNodes
        ]
        return build_status(self.node_id, self._sync.getStatus(), peers)

    # -- membership and leadership ----------------------------------------------------------

    def add_member(self, node_id: str, callback: DoneCallback) -> None:
        """Ask the cluster to add ``node_id`` (forwarded to the leader)."""
        self._sync.addNodeToCluster(node_id, callback=_done(callback))

    def remove_member(self, node_id: str, callback: DoneCallback) -> None:
        """Ask the cluster to remove ``node_id`` (forwarded to the leader)."""
        self._sync.removeNodeFromCluster(node_id, callback=_done(callback))

    def set_handing_over(self, on: bool) -> None:
        """Refuse new entries (NOT_LEADER, callers retry) while leadership moves away."""
        self._sync._tsc_handing_over = on

    def transfer_leadership(self, to: str | None, callback: DoneCallback) -> None:
        """On the leader: hand leadership to ``to`` (or the most caught-up follower)."""
        # It sends on the transport directly, which only the Raft thread may touch.
        self._calls.append(lambda: self._sync.transferLeadership(to, callback=_done(callback)))
        self._wake()

    def call_on_raft_thread(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the Raft thread, between two applied entries; its result or error
        arrives in the returned future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        self._calls.append(run)
        self._wake()
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the Raft thread and close every socket. Idempotent."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _reason(code: int) -> FailReason | None:
    """pysyncobj's fail code as a :class:`FailReason` (``None`` for success)."""
    if code == FAIL_REASON.SUCCESS:
        return None
    return _FAIL_REASONS.get(code, FailReason.UNKNOWN_OUTCOME)


def _fan_out(callbacks: list[SubmitCallback]) -> Callable[[Any, int], None]:
    return lambda results, code: fan_out(callbacks, results, _reason(code))


def _done(callback: DoneCallback) -> Callable[[Any, int], None]:
    return lambda _result, code: callback(_reason(code))
