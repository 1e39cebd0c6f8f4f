"""A running cluster member: :class:`Consensus`, built by :func:`tsconsensus.start`."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ._applier import LogApplier
from ._engine import EngineNode
from ._executor import CommandExecutor
from ._http import HttpServer
from ._loop import LoopThread
from ._member_view import parse_hex_id
from .address import NodeAddress
from .client import PeerClients
from .config import Config
from .errors import (
    ClusterError,
    InvalidCommandError,
    JoinError,
    NoLeaderError,
    ProposalRefusedError,
    TsconsensusError,
)
from .metrics import Metrics
from .staged_restore import StagedBackups, restore_everywhere
from .tailnet import Tailnet
from .types import Command, CommandResult, NodeStatus

log = logging.getLogger("tsconsensus")

T = TypeVar("T")


class RaftBackend(Protocol):
    """What :class:`Consensus` needs from the engine behind it."""

    node_id: str

    @property
    def applied_index(self) -> int: ...

    @property
    def leader(self) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    def members(self) -> list[str]: ...

    def status(self) -> NodeStatus: ...

    def on_raft_thread(self) -> bool: ...

    def set_handing_over(self, on: bool) -> None: ...

    def call_on_raft_thread(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]: ...

    def stop(self) -> None: ...


class Consensus:
    """A running cluster member. Build it with :func:`start`; end it with :meth:`stop`.

    Thread-safe: every method may be called from any thread, except that the blocking methods
    must not be called from the node's own event loop (use the ``_async`` forms there).
    """

    def __init__(
        self,
        *,
        config: Config,
        cluster_tag: str,
        tailnet: Tailnet,
        raft: RaftBackend,
        applier: LogApplier,
        executor: CommandExecutor,
        loop_thread: LoopThread,
        servers: list[HttpServer],
        metrics: Metrics,
        peer_clients: PeerClients,
    ) -> None:
        self.config = config
        self.cluster_tag = cluster_tag
        self.tailnet = tailnet
        self._raft = raft
        self._applier = applier
        self._executor = executor
        self._loop = loop_thread
        self._servers = servers
        self._stopped = False
        self.default_timeout_s = config.command.timeout_s
        self.metrics = metrics
        self.peer_clients = peer_clients
        self._on_stop_request: Callable[[], None] | None = None
        self._identity: Callable[[], dict[str, Any]] | None = None
        self._raft_address = NodeAddress(tailnet.self_peer().address, config.ports.raft)
        self._closers: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        """Done once the node runs its engine; holds the error if it could not join or form
        a cluster (or its storage failed later)."""
        self._on_fatal: Callable[[BaseException], None] | None = None
        self.staged = StagedBackups(None)
        """Backups staged here for a restore (replaced by a directory one at start)."""

    @property
    def _engine(self) -> EngineNode | None:
        """The engine behind this node (None while it is still joining or forming)."""
        return self._raft if isinstance(self._raft, EngineNode) else None

    def _attach(self, engine: EngineNode, executor: CommandExecutor) -> None:
        """The native engine is ready: it takes over from the starting placeholder."""
        self._raft = engine
        self._executor = executor

    @property
    def storage_problem(self) -> str:
        """Why this node's storage takes no writes now (``"disk full: ..."`` until space
        returns, ``"storage failed: ..."`` for good); empty while it works or is starting."""
        engine = self._engine
        return "" if engine is None else engine.view.storage_problem

    def identity(self) -> dict[str, Any]:
        """``GET /v1/identity``: this node's member id, cluster id and Raft address."""
        if self._identity is None:
            return {"id": self.node_id, "cluster_id": None, "raft_address": str(self._raft_address)}
        return self._identity()

    # -- identity ---------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """``host:raft_port``, this node's id in the Raft configuration."""
        return self._raft.node_id

    @property
    def address(self) -> str:
        return self._raft_address.host

    @property
    def command_url(self) -> str:
        return f"http://{self._own(self.config.ports.command)}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self._own(self.config.ports.monitor)}"

    def _own(self, port: int) -> NodeAddress:
        return self._raft_address.with_port(port)

    def raft_address_of(self, node_id: str | None) -> str | None:
        """The Raft address (``host:port``) of the member ``node_id``."""
        if node_id is None:
            return None
        engine = self._engine
        return engine.address_of(node_id) if engine is not None else node_id

    def command_address_of(self, node_id: str | None) -> str | None:
        """The command port address (``host:port``) of the member ``node_id``."""
        if node_id is None:
            return None
        engine = self._engine
        if engine is not None:
            raft_address = engine.address_of(node_id)
            if raft_address is None:
                return None
            node_id = raft_address
        return str(NodeAddress.parse(node_id).with_port(self.config.ports.command))

    # -- commands ---------------------------------------------------------------------------

    def execute_command(
        self, command: Command, *, request_id: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Commit ``command`` through the leader and return its outcome. Blocking.

        Any node may be asked: a follower forwards to the leader and retries on a new leader
        until ``timeout`` (default ``command.timeout_s``). With a ``request_id``, retries (also
        the caller's own) never apply the command twice. A state-machine failure comes back
        as ``CommandResult.error``. Raises :class:`InvalidCommandError`,
        :class:`NoLeaderError` or :class:`CommandTimeoutError` (outcome unknown).
        """
        t = self.default_timeout_s if timeout is None else timeout
        started, forwarded = time.perf_counter(), not self._raft.is_leader
        try:
            outcome = self._executor.execute(command, request_id, t)
        except TsconsensusError:
            self.metrics.command_rejected()
            raise
        self._count(command, outcome, started, forwarded)
        return outcome

    async def execute_command_async(
        self, command: Command, *, request_id: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """:meth:`execute_command` for callers on an event loop (any loop)."""
        t = self.default_timeout_s if timeout is None else timeout
        started, forwarded = time.perf_counter(), not self._raft.is_leader
        try:
            outcome = await self._executor.execute_async(command, request_id, t)
        except TsconsensusError:
            self.metrics.command_rejected()
            raise
        self._count(command, outcome, started, forwarded)
        return outcome

    def restore_snapshot(
        self, data: bytes, *, sha256: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Replace the state machine's state on every node with ``data`` (bytes of its
        ``snapshot()``, e.g. from ``GET /v1/snapshot``), at one log index. Blocking.

        The bytes are staged on the members over their command ports and one small entry
        commits the restore (:mod:`tsconsensus.staged_restore`), so their size is not bound
        by the log's entry limit. ``sha256`` (hex), when given, must match ``data``. The
        outcome's result is ``{"restored_bytes": n}``; a machine whose ``restore`` raises
        gives ``error``. Raises like :meth:`execute_command`, or :class:`ClusterError` when
        fewer than a majority could stage the bytes.
        """
        return self._loop.run(self.restore_snapshot_async(data, sha256=sha256, timeout=timeout))

    async def restore_snapshot_async(
        self, data: bytes, *, sha256: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """:meth:`restore_snapshot` for callers on an event loop (any loop)."""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256.lower() != digest:
            raise InvalidCommandError("the snapshot does not match its sha256")
        t = self.default_timeout_s if timeout is None else timeout
        return await restore_everywhere(self, data, digest, t)

    @property
    def executor(self) -> CommandExecutor:
        return self._executor

    def _count(
        self, command: Command, outcome: CommandResult, started: float, forwarded: bool
    ) -> None:
        self.metrics.command_done(
            command.name,
            time.perf_counter() - started,
            failed=outcome.error is not None,
            forwarded=forwarded,
        )

    # -- status -----------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        return self._raft.status()

    @property
    def leader(self) -> str | None:
        """The id of the leader this node last heard from, or ``None``."""
        return self._raft.leader

    @property
    def is_leader(self) -> bool:
        return self._raft.is_leader

    def members(self) -> list[str]:
        return self._raft.members()

    def peers(self) -> list[dict[str, Any]]:
        """The tailnet nodes carrying the cluster tag (this one included), each with whether it
        is online and a member of the Raft configuration (``GET /v1/peers``)."""
        members = set(self._raft.members())
        engine = self._engine
        raft_port = self.config.ports.raft
        found = []
        for peer in [self.tailnet.self_peer(), *self.tailnet.peers()]:
            if not peer.has_tag(self.cluster_tag):
                continue
            node_id = str(NodeAddress(peer.address, raft_port)) if peer.addresses else ""
            if engine is not None and node_id:
                node_id = engine.id_of(node_id) or ""
            found.append(
                {
                    "id": node_id,
                    "hostname": peer.hostname,
                    "addresses": list(peer.addresses),
                    "online": peer.online,
                    "member": node_id in members,
                    "self": peer.is_self,
                }
            )
        return sorted(found, key=lambda p: (p["id"] == "", p["id"], p["addresses"]))

    def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Block until a leader is known; return its id. Raises :class:`NoLeaderError`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self._raft.leader
            if leader is not None:
                return leader
            time.sleep(0.02)
        raise NoLeaderError(f"no leader within {timeout:g}s")

    def snapshot(self, timeout: float = 30.0) -> tuple[int, bytes]:
        """The state machine's snapshot and the log index it covers (this node's state)."""
        machine = self._applier.machine
        future = self._raft.call_on_raft_thread(
            lambda: (self._raft.applied_index, machine.snapshot())
        )
        return future.result(timeout)

    # -- membership -------------------------------------------------------------------------

    def join_member(self, member_id: str, raft_address: str, timeout: float = 10.0) -> None:
        """On the leader: add a new member as a learner (promoted once it has
        caught up) and wait until that change has committed. Raises :class:`JoinError` (a
        removed id, a change that did not commit in time) or :class:`NoLeaderError`."""
        engine = self._require_engine()
        member = parse_hex_id(member_id)
        self._change_membership(lambda: engine.add_learner(member, raft_address), timeout)

    def member_id_of(self, text: str) -> str | None:
        """The member id named by ``text``: an id, a Raft address or a host (None if none)."""
        engine = self._engine
        return None if engine is None else engine.id_of(text)

    def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        """On the leader: remove the member ``node_id`` (an id or an address) from the
        configuration and wait until that has committed (the command port forwards requests
        to the leader). Raises :class:`JoinError` or :class:`NoLeaderError`."""
        engine = self._require_engine()
        member_id = self.member_id_of(node_id)
        if member_id is None:
            raise JoinError(f"{node_id} is not a member")
        member = parse_hex_id(member_id)
        self._change_membership(lambda: engine.remove(member), timeout)

    def _require_engine(self) -> EngineNode:
        engine = self._engine
        if engine is None:
            raise JoinError("this node is still joining or forming its cluster")
        return engine

    def _change_membership(self, propose: Callable[[], int], timeout: float) -> None:
        """Propose a change (retrying while another one is pending) and wait for its commit."""
        engine = self._require_engine()
        deadline = time.monotonic() + timeout
        while True:
            try:
                index = propose()
                break
            except ProposalRefusedError as exc:
                if exc.reason == "invalid-membership":
                    raise JoinError(str(exc)) from None
                if exc.reason == "not-leader":
                    raise NoLeaderError(str(exc), leader=self.leader) from None
                if time.monotonic() >= deadline:
                    raise JoinError(f"membership change not accepted in time: {exc}") from None
                time.sleep(0.05)
        while engine.applied_index < index:  # applied here, so committed
            if not engine.is_leader:
                raise JoinError("leadership moved before the change committed; ask again")
            if time.monotonic() >= deadline:
                raise JoinError(f"the membership change at index {index} did not commit in time")
            time.sleep(0.01)

    def transfer_leadership(self, to: str | None = None, timeout: float = 10.0) -> str:
        """On the leader: hand leadership to ``to`` (or the most caught-up follower), wait
        until another node leads, and return its id. Raises :class:`ClusterError`.

        The target must have every entry; under load the leader retries until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        if not self._raft.is_leader:
            raise ClusterError(f"{self.node_id} is not the leader (leader: {self.leader})")
        return self._transfer(self._require_engine(), to, deadline, timeout)

    def _transfer(self, engine: EngineNode, to: str | None, deadline: float, timeout: float) -> str:
        target = self.member_id_of(to) if to is not None else None
        if to is not None and target is None:
            raise ClusterError(f"{to} is not a member")
        engine.set_handing_over(True)
        try:
            while True:
                if not engine.is_leader:
                    moved = engine.leader
                    if moved is not None and moved != self.node_id:
                        return moved
                choice = target or engine.best_transfer_target()
                if choice is None:
                    raise ClusterError("no other voter to hand leadership to")
                try:
                    engine.transfer_to(parse_hex_id(choice))
                except ProposalRefusedError as exc:
                    raise ClusterError(f"leadership transfer refused: {exc}") from None
                moved = self._wait_leader_change(min(deadline, time.monotonic() + 2.0))
                if moved is not None and (target is None or moved == target):
                    return moved
                if time.monotonic() >= deadline:
                    raise ClusterError(f"leadership did not move within {timeout:g}s")
        finally:
            engine.set_handing_over(False)

    def _wait_leader_change(self, until: float) -> str | None:
        while time.monotonic() < until:
            leader = self._raft.leader
            if leader is not None and leader != self.node_id:
                return leader
            time.sleep(0.005)
        return None

    # -- lifecycle --------------------------------------------------------------------------

    def set_fatal_handler(self, handler: Callable[[BaseException], None]) -> None:
        """Called once (any thread) if the node cannot go on: it could not join or form a
        cluster, or its storage failed. ``tsc node start`` ends the process with the error."""
        self._on_fatal = handler
        if self.started.done() and self.started.exception() is not None:
            handler(self.started.exception())  # type: ignore[arg-type]

    def _startup_failed(self, exc: BaseException) -> None:
        if not self._stopping.is_set():
            log.error("node %s could not start: %s", self.node_id, exc)
        if not self.started.done():
            self.started.set_exception(exc)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def _fatal(self, exc: BaseException) -> None:
        """The engine cannot go on (a failed fsync): tell whoever runs the node."""
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def set_stop_handler(self, handler: Callable[[], None]) -> None:
        """What ``POST /v1/node/stop`` calls: the runner's way to end the process cleanly."""
        self._on_stop_request = handler

    def request_stop(self) -> bool:
        """Ask whoever runs this node (``tsc node start``) to stop it; False if nobody can."""
        if self._on_stop_request is None:
            return False
        self._on_stop_request()
        return True

    def stop(self, *, hand_over: bool = True) -> None:
        """Stop serving, hand leadership over if this node leads (so a planned restart costs
        no election timeout), leave the Raft loop, close every socket. Idempotent; blocking."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if not self.started.done():
            try:  # a node still joining gives up first
                self.started.result(timeout=10)
            except Exception:
                pass
        for server in self._servers:
            try:
                self._loop.run(server.stop(), timeout=5)
            except Exception:
                log.exception("stopping the %s server failed", server.name)
        if (
            hand_over
            and self._raft.is_leader
            and any(m.connected for m in self._raft.status().members if not m.is_self)
        ):
            try:
                new = self.transfer_leadership(timeout=2.0)
                log.info("handed leadership to %s before stopping", new)
            except ClusterError as exc:
                log.warning("could not hand leadership over before stopping: %s", exc)
        self._raft.stop()
        for close in self._closers:
            try:
                close()
            except Exception:
                log.exception("closing failed")
        self._loop.stop()
        self.peer_clients.close()

    def __enter__(self) -> Consensus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
