"""The Raft engine: the one module that imports pysyncobj.

It adapts pysyncobj to what the rest of the package needs (:class:`RaftNode`): submit an entry
and get its outcome through a callback, read a status, change membership. Everything pysyncobj
does wrong by default is fixed here:
- it binds ``0.0.0.0``: the server binds the node's own address only;
- it unpickles frames from anyone: connections are authorized by tag *at accept*, before a byte
  is read, and every frame must carry a MAC (keyed BLAKE2b) under the cluster password;
- its Fernet encryption and per-frame deflate cost more than the rest of a small frame's
  handling: the tailnet encrypts already, so frames are authenticated (a MAC) and sent stored;
- outgoing connections leave from the node's own address, so peers can authorize them by
  source address even when every node shares one loopback or one host;
- an exception in a replicated method wedges the cluster: :class:`LogApplier` never raises;
- default snapshots pickle the object's attributes: ours carry only the applier's bytes;
- its fail reasons are translated into :class:`FailReason`.

Threads: pysyncobj runs on one thread of ours (the "Raft thread", named ``tsc-raft-<id>``).
Callbacks given to :meth:`RaftNode.submit` and to membership calls run on that thread and must
return quickly without blocking.
"""

from __future__ import annotations

import _socket
import collections
import concurrent.futures
import enum
import gzip
import hashlib
import hmac
import ipaddress
import logging
import os
import queue
import socket
import struct
import threading
import time
import zlib
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
from .authorization import Authorizer
from .config import RaftConfig
from .errors import TsconsensusError
from .types import CommandResult, MemberStatus, NodeStatus, RaftState

# Importing pysyncobj replaces socket.inet_ntop, on every OS, with a Windows-only version
# (pysyncobj/win_inet_pton.py); put the real one back for the rest of the process.
socket.inet_ntop = _socket.inet_ntop

log = logging.getLogger("tsconsensus.raft")


class _ResentEntriesFilter(logging.Filter):
    """Drops pysyncobj's "truncating already-applied log entries" alarm.

    pysyncobj rewinds a follower's next index whenever an older acknowledgement arrives, so a
    busy leader re-sends entries the follower already holds; the follower then truncates and
    re-adds the same entries (same term, same content) and logs a CRITICAL "may have diverged".
    Applied entries are committed, and Raft never replaces committed entries with different
    ones, so what is being replaced is always identical: the alarm is noise here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("truncating already-applied log entries")


logging.getLogger("pysyncobj.syncobj").addFilter(_ResentEntriesFilter())

T = TypeVar("T")

# After applying entries, pysyncobj at once sends every follower an append-entries that only
# carries the new commit index: two frames out and two back per command. Unless a follower is
# waiting for a command it forwarded, that news can ride on the next entry, or go out this
# much later if no entry comes.
COMMIT_PUSH_DELAY_S = 0.002
# How long after a follower forwarded a command commit indexes are pushed at once again.
FORWARDED_WINDOW_S = 1.0

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"


class FailReason(enum.Enum):
    """Why a submitted entry has no outcome. All but DENIED are worth a retry."""

    NO_LEADER = "no leader"
    NOT_LEADER = "the node asked is no longer the leader"
    LEADER_CHANGED = "the leader changed before the entry was committed"
    DISCARDED = "the entry was overwritten by a new leader"
    QUEUE_FULL = "the submit queue is full"
    DENIED = "the request was denied"
    UNKNOWN_OUTCOME = "the entry's outcome could not be tracked"


_FAIL_REASONS = {
    FAIL_REASON.MISSING_LEADER: FailReason.NO_LEADER,
    FAIL_REASON.NOT_LEADER: FailReason.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED: FailReason.LEADER_CHANGED,
    FAIL_REASON.DISCARDED: FailReason.DISCARDED,
    FAIL_REASON.QUEUE_FULL: FailReason.QUEUE_FULL,
    FAIL_REASON.REQUEST_DENIED: FailReason.DENIED,
    FAIL_REASON.UNKNOWN_OUTCOME: FailReason.UNKNOWN_OUTCOME,
}

_STATES = {0: RaftState.FOLLOWER, 1: RaftState.CANDIDATE, 2: RaftState.LEADER}

SubmitCallback = Callable[[CommandResult | None, FailReason | None], None]
DoneCallback = Callable[[FailReason | None], None]


class _SourceAddress(threading.local):
    host: str | None = None


_source = _SourceAddress()


class _SourceBindingSocketModule:
    """Stands in for the ``socket`` module inside ``pysyncobj.tcp_connection``.

    pysyncobj creates its outgoing sockets itself and never binds them. While a Raft thread of
    ours dials (see :meth:`_AuthorizingTransport._connectIfNecessarySingle`) it sets its own
    address in a thread-local; sockets made then are bound to it. Any other use falls through
    to the real module unchanged.
    """

    def __getattr__(self, name: str) -> Any:
        value = getattr(socket, name)
        setattr(self, name, value)  # looked up on every frame: resolve each name once
        return value

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        sock = socket.socket(family, type)
        host = _source.host
        if host is not None and _family_of(host) == family:
            sock.bind((host, 0))
        return sock


def _family_of(host: str) -> int:
    return socket.AF_INET if ipaddress.ip_address(host).version == 4 else socket.AF_INET6


class _FrameCompression:
    """Stands in for the ``zlib`` module inside ``pysyncobj.tcp_connection``.

    pysyncobj deflates every frame at level 3; for the small frames Raft mostly sends, setting
    up deflate costs more than the rest of the frame's handling. Frames under 64 KiB are sent
    as a *stored* (uncompressed) zlib stream, which any zlib reader accepts, so peers need no
    change; larger ones (snapshot chunks) are still compressed.
    """

    _STORED_LIMIT = 65535

    def __getattr__(self, name: str) -> Any:
        value = getattr(zlib, name)
        setattr(self, name, value)
        return value

    def compress(self, data: bytes, level: int = -1) -> bytes:
        if len(data) > self._STORED_LIMIT:
            return zlib.compress(data, 1)
        # zlib header (deflate, 32K window, no dictionary), one final stored block, adler32.
        size = len(data)
        return b"".join(
            (
                b"\x78\x01",
                struct.pack("<BHH", 1, size, size ^ 0xFFFF),
                data,
                struct.pack(">I", zlib.adler32(data)),
            )
        )

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return zlib.decompress(data)


class _FastGzip:
    """Stands in for ``gzip`` inside ``pysyncobj.serializer``: snapshots are written at level 1.

    pysyncobj writes snapshots on the Raft thread (we do not let it fork a threaded process);
    gzip's default level 9 would stall the cluster for a large state, level 1 is several times
    faster for a slightly larger file.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(gzip, name)

    @staticmethod
    def GzipFile(*args: Any, **kwargs: Any) -> gzip.GzipFile:
        kwargs.setdefault("compresslevel", 1)
        return gzip.GzipFile(*args, **kwargs)


_pso_serializer.gzip = _FastGzip()  # type: ignore[assignment]
_pso_tcp_connection.socket = _SourceBindingSocketModule()  # type: ignore[assignment]
_pso_tcp_connection.zlib = _FrameCompression()  # type: ignore[assignment]


class FrameAuthenticator:
    """Authenticates every Raft frame with a keyed BLAKE2b MAC under the cluster password.

    It takes the place of pysyncobj's Fernet "encryptor" (same three methods). The tailnet
    already encrypts every packet (WireGuard), so what the cluster needs from its password is
    authentication: a frame that does not carry a valid tag is dropped, with its connection,
    before it is unpickled. Replays across connections are stopped by pysyncobj's per-connection
    random keys, which travel inside the authenticated payload.
    """

    _HEADER = struct.Struct(">BQ")
    _VERSION = 1
    _MAC_LEN = 32

    def __init__(self, password: str) -> None:
        self._key = hashlib.sha256(b"tsconsensus-raft-frame\x00" + password.encode()).digest()

    def _mac(self, header: bytes, data: bytes) -> bytes:
        # Keyed BLAKE2b is a MAC by design (RFC 7693) and, unlike OpenSSL's HMAC here, costs
        # well under two microseconds for a small frame.
        mac = hashlib.blake2b(header, key=self._key, digest_size=self._MAC_LEN)
        mac.update(data)
        return mac.digest()

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        header = self._HEADER.pack(self._VERSION, max(0, int(current_time)))
        return header + self._mac(header, data) + data

    def extract_timestamp(self, token: bytes) -> int:
        version, timestamp = self._HEADER.unpack_from(token)
        if version != self._VERSION:
            raise ValueError("unknown frame version")
        return int(timestamp)

    def decrypt(self, token: bytes) -> bytes:
        split = self._HEADER.size
        header, mac, data = (
            token[:split],
            token[split : split + self._MAC_LEN],
            token[split + self._MAC_LEN :],
        )
        if len(mac) != self._MAC_LEN or not hmac.compare_digest(mac, self._mac(header, data)):
            raise ValueError("frame authentication failed")
        return data


class _SyncObj(SyncObj):  # type: ignore[misc]
    """SyncObj whose frames are authenticated by a :class:`FrameAuthenticator`."""

    def __init__(self, *args: Any, authenticator: FrameAuthenticator, **kwargs: Any) -> None:
        # Set before SyncObj.__init__ so that pysyncobj counts them as its own attributes and
        # never puts them into a snapshot.
        self._tsc_authenticator = authenticator
        self._tsc_tick_thread: list[int | None] = [None]
        self._tsc_forwarded_until = 0.0
        self._tsc_handing_over = False
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


def split_node_id(node_id: str) -> tuple[str, int]:
    """``"100.64.0.1:6270"`` -> ``("100.64.0.1", 6270)`` (IPv6 hosts may be bracketed)."""
    host, _, port = node_id.rpartition(":")
    return host.strip("[]"), int(port)


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
        if not self._authorizer.allows(ip, port):
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
        _source.host = self._source_host
        try:
            return bool(super()._connectIfNecessarySingle(node))
        finally:
            _source.host = None


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


def check_bindable(host: str, port: int) -> None:
    """Raise :class:`TsconsensusError` if ``host:port`` cannot be bound (in use, not local)."""
    with socket.socket(_family_of(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TsconsensusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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
        journal = snapshot = None
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            journal = os.path.join(state_dir, JOURNAL_FILE)
            snapshot = os.path.join(state_dir, SNAPSHOT_FILE)
        conf = SyncObjConf(
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
        self._pending: collections.deque[tuple[bytes, SubmitCallback]] = collections.deque()
        self._max_batch_bytes = max_entry_bytes
        self._wake_sent = False
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
        """Raft thread: submit everything queued since the last tick, as few entries as fit.

        A lone command goes out at once; commands that arrived while the Raft thread was busy
        share one log entry, so one append-entries round commits all of them (group commit).
        """
        # Cleared before draining: a submit racing with the drain either lands in this drain
        # or sees the flag down and wakes the thread again.
        self._wake_sent = False
        while self._pending:
            entries: list[bytes] = []
            callbacks: list[SubmitCallback] = []
            size = 2
            while self._pending and (
                not entries or size + len(self._pending[0][0]) + 1 <= self._max_batch_bytes
            ):
                entry, callback = self._pending.popleft()
                entries.append(entry)
                callbacks.append(callback)
                size += len(entry) + 1
            self._log.apply_entries(
                join_entries(entries, time.time()), callback=_fan_out(callbacks)
            )

    def _state_changed(self, old: int, new: int) -> None:
        if self._on_state_change is not None:
            self._on_state_change(_STATES[old], _STATES[new])

    # -- commands ---------------------------------------------------------------------------

    def submit(self, entry: bytes, callback: SubmitCallback) -> None:
        """Queue ``entry`` for the log (forwarded to the leader if this node is a follower).

        ``callback(outcome, None)`` runs once the entry is applied on this node, or
        ``callback(None, reason)`` when it will not be. Some failures (a follower installing a
        snapshot) lose the callback entirely, so callers must wait with a deadline.
        """

        self._pending.append((entry, callback))
        if not self._wake_sent:  # one wake-up per batch: a write is a syscall
            self._wake_sent = True
            self._wake()

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
        raw = self._sync.getStatus()
        state = _STATES[raw["state"]]
        commit = int(raw["commit_idx"])
        leader = raw["leader"]
        last_index = commit
        members = [
            MemberStatus(
                id=self.node_id,
                address=split_node_id(self.node_id)[0],
                connected=True,
                match_index=None,
                lag=None,
                is_self=True,
            )
        ]
        now = _pso_monotonic()
        heard = self._transport.last_heard
        for node in sorted(self._sync.otherNodes, key=lambda n: n.id):
            match = raw.get(f"match_idx_server_{node.id}") if state is RaftState.LEADER else None
            last = heard.get(str(node.id))
            members.append(
                MemberStatus(
                    id=node.id,
                    address=split_node_id(node.id)[0],
                    connected=bool(self._sync.isNodeConnected(node)),
                    match_index=None if match is None else int(match),
                    lag=None if match is None else max(0, last_index - int(match)),
                    last_contact_s=None if last is None else max(0.0, now - last),
                )
            )
        return NodeStatus(
            node_id=self.node_id,
            address=split_node_id(self.node_id)[0],
            state=state,
            leader=None if leader is None else str(leader.id),
            term=int(raw["raft_term"]),
            commit_index=commit,
            applied_index=int(raw["last_applied"]),
            has_quorum=bool(raw["has_quorum"]),
            members=tuple(members),
        )

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

    def force_snapshot(self) -> None:
        """Take a snapshot (and compact the log) at the next opportunity."""
        self._calls.append(self._sync.forceLogCompaction)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the Raft thread and close every socket. Idempotent."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _fan_out(callbacks: list[SubmitCallback]) -> Callable[[Any, int], None]:
    """One pysyncobj callback that reports each command of a batch to its own caller."""

    def done(results: Any, error: int) -> None:
        if error == FAIL_REASON.SUCCESS and isinstance(results, list):
            for i, callback in enumerate(callbacks):
                if i < len(results):
                    callback(results[i], None)
                else:
                    callback(None, FailReason.UNKNOWN_OUTCOME)
        else:
            reason = _FAIL_REASONS.get(error, FailReason.UNKNOWN_OUTCOME)
            for callback in callbacks:
                callback(None, reason)

    return done


def _done(callback: DoneCallback) -> Callable[[Any, int], None]:
    def done(_result: Any, error: int) -> None:
        callback(None if error == FAIL_REASON.SUCCESS else _FAIL_REASONS.get(error))

    return done
