"""Wiring: :func:`start` builds a running node out of a tailnet, a state machine and a config.

A running node owns two threads: the Raft thread (pysyncobj, applies the log) and an event-loop
thread (serves the command and monitor ports, runs blocking calls' retries).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._applier import LogApplier
from ._executor import CommandExecutor
from ._http import HttpServer
from ._loop import LoopThread
from ._raft import RaftNode
from ._raft_model import FailReason
from .address import NodeAddress
from .authorization import Authorizer, cluster_password
from .bootstrap import decide_members, write_members
from .client import PeerClients
from .clock import Clock, SystemClock
from .command_server import command_routes
from .config import Config
from .errors import (
    ClusterError,
    InvalidCommandError,
    JoinError,
    NoLeaderError,
    NotTaggedError,
    TsconsensusError,
)
from .metrics import Metrics
from .monitor_server import monitor_routes
from .tailnet import Peer, Tailnet
from .types import Command, CommandResult, NodeStatus, RaftState, StateMachine

log = logging.getLogger("tsconsensus")

T = TypeVar("T")


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
        raft: RaftNode,
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

    # -- identity ---------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """``host:raft_port``, this node's id in the Raft configuration."""
        return self._raft.node_id

    @property
    def address(self) -> str:
        return NodeAddress.parse(self._raft.node_id).host

    @property
    def command_url(self) -> str:
        return f"http://{self._own(self.config.ports.command)}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self._own(self.config.ports.monitor)}"

    def _own(self, port: int) -> NodeAddress:
        return NodeAddress.parse(self._raft.node_id).with_port(port)

    def command_address_of(self, node_id: str | None) -> str | None:
        """The command port address (``host:port``) of the member ``node_id``."""
        if node_id is None:
            return None
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
        ``snapshot()``, e.g. from ``GET /v1/snapshot``), at one log position. Blocking.

        ``sha256`` (hex), when given, must match ``data``. The outcome's result is
        ``{"restored_bytes": n}``; a machine whose ``restore`` raises gives ``error``. Raises
        like :meth:`execute_command` (the bytes, base64 in the log, must fit one entry).
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
        return await self._executor.restore_async(data, digest, t)

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
        raft_port = self.config.ports.raft
        found = []
        for peer in [self.tailnet.self_peer(), *self.tailnet.peers()]:
            if not peer.has_tag(self.cluster_tag):
                continue
            node_id = str(NodeAddress(peer.address, raft_port)) if peer.addresses else ""
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
        return sorted(found, key=lambda p: p["id"])

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

    def add_member(self, node_id: str, timeout: float = 10.0) -> None:
        """Add ``node_id`` to the configuration (forwarded to the leader)."""
        self._membership_call(self._raft.add_member, node_id, timeout, "add")

    def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        """Remove ``node_id`` from the configuration (forwarded to the leader)."""
        self._membership_call(self._raft.remove_member, node_id, timeout, "remove")

    def transfer_leadership(self, to: str | None = None, timeout: float = 10.0) -> str:
        """On the leader: hand leadership to ``to`` (or the most caught-up follower), wait
        until another node leads, and return its id. Raises :class:`ClusterError`.

        The target must have every entry; under load the leader retries until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        if not self._raft.is_leader:
            raise ClusterError(f"{self.node_id} is not the leader (leader: {self.leader})")
        self._raft.set_handing_over(True)
        try:
            while True:
                if not self._raft.is_leader:
                    moved = self._raft.leader
                    if moved is not None and moved != self.node_id:
                        return moved
                try:
                    self._membership_call(self._raft.transfer_leadership, to, 1.0, "transfer to")
                except JoinError as exc:
                    if time.monotonic() >= deadline:
                        raise ClusterError(f"leadership transfer failed: {exc}") from None
                    time.sleep(0.01)  # the target is still catching up on the last entries
                    continue
                moved = self._wait_leader_change(min(deadline, time.monotonic() + 2.0))
                if moved is not None and (to is None or moved == to):
                    return moved
                if time.monotonic() >= deadline:
                    raise ClusterError(f"leadership did not move within {timeout:g}s")
        finally:
            self._raft.set_handing_over(False)

    def _wait_leader_change(self, until: float) -> str | None:
        while time.monotonic() < until:
            leader = self._raft.leader
            if leader is not None and leader != self.node_id:
                return leader
            time.sleep(0.005)
        return None

    def _membership_call(self, method: Any, arg: Any, timeout: float, what: str) -> None:
        done: concurrent.futures.Future[FailReason | None] = concurrent.futures.Future()
        method(arg, done.set_result)
        try:
            reason = done.result(timeout)
        except concurrent.futures.TimeoutError:
            raise JoinError(f"{what} {arg}: no answer within {timeout:g}s") from None
        if reason is not None:
            raise JoinError(f"{what} {arg} failed: {reason.value}")

    # -- lifecycle --------------------------------------------------------------------------

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
        self._loop.stop()
        self.peer_clients.close()

    def __enter__(self) -> Consensus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    tailnet: Tailnet,
    state_machine: StateMachine,
    cluster_tag: str,
    config: Config | None = None,
    *,
    clock: Clock | None = None,
) -> Consensus:
    """Start a cluster member on this tailnet node and return it running.

    The node must carry ``cluster_tag`` (:class:`NotTaggedError` otherwise). Its peers are the
    tailnet nodes with that tag. Binds the Raft, command and (if ``monitor.serve``) monitor
    ports on the node's own tailnet address only. Raises :class:`TsconsensusError` subclasses;
    nothing is left running when it raises.
    """
    config = config or Config.default()
    clock = clock or SystemClock()
    me = tailnet.self_peer()
    if not me.has_tag(cluster_tag):
        raise NotTaggedError(
            f"this node ({me.hostname}, {me.address}) does not carry the cluster tag "
            f"{cluster_tag}; tag it in the tailnet's ACLs (tagOwners) and re-authenticate"
        )
    raft_port = config.ports.raft
    node_id = str(NodeAddress(me.address, raft_port))

    peer_clients = PeerClients(
        source_address=me.address,
        pool_size=config.command.pool_size,
        connect_timeout_s=config.command.connect_timeout_s,
        timeout_s=config.command.timeout_s + 5.0,
    )

    def join(peer: Peer) -> list[str]:
        address = str(NodeAddress(peer.address, config.ports.command))
        try:
            return peer_clients.get(address).join(node_id)
        except (KeyError, TypeError):
            raise JoinError(f"{address} answered a join without a member list") from None

    try:
        members = decide_members(
            me_id=node_id,
            raft_port=raft_port,
            tag=cluster_tag,
            state_dir=config.storage.state_dir,
            peers=tailnet.peers,
            join=join,
            bootstrap_expect=config.cluster.bootstrap_expect,
            follow_only=config.cluster.follow_only,
            timeout_s=config.cluster.join_timeout_s,
        )
    except BaseException:
        peer_clients.close()
        raise
    write_members(config.storage.state_dir, members)
    authorizer = Authorizer(tailnet, cluster_tag)
    metrics = Metrics()
    applier = LogApplier(
        state_machine,
        window_s=config.raft.dedup_window_s,
        max_entries=config.raft.dedup_max_entries,
    )
    max_entry = config.command.max_body_bytes + 1024
    raft = RaftNode(
        node_id=node_id,
        members=members,
        applier=applier,
        authorizer=authorizer,
        raft=config.raft,
        state_dir=config.storage.state_dir,
        password=cluster_password(cluster_tag, config.cluster.secret),
        max_entry_bytes=max_entry,
        on_state_change=_on_state_change(node_id, metrics),
    )
    loop_thread = LoopThread(f"tsc-loop-{node_id}")
    servers: list[HttpServer] = []
    try:
        executor = CommandExecutor(
            raft,
            clock,
            attempt_timeout_s=max(2.0, 3 * config.raft.election_timeout_max_s),
            max_entry_bytes=max_entry,
        )
        node = Consensus(
            config=config,
            cluster_tag=cluster_tag,
            tailnet=tailnet,
            raft=raft,
            applier=applier,
            executor=executor,
            loop_thread=loop_thread,
            servers=servers,
            metrics=metrics,
            peer_clients=peer_clients,
        )

        async def authorize(ip: str, port: int) -> bool:
            if not getattr(tailnet, "may_block", True):
                return authorizer.allows(ip, port)
            # Asking tailscaled may block (a whois can wait for a userspace mapping): never
            # on the loop that serves every other request.
            return await asyncio.get_running_loop().run_in_executor(
                None, authorizer.allows, ip, port
            )

        servers.append(
            HttpServer(
                name="command",
                host=me.address,
                port=config.ports.command,
                routes=command_routes(node),
                authorize=authorize,
                max_body_bytes=config.command.max_body_bytes,
                max_connections=config.http.max_connections,
                max_connections_per_source=config.http.max_connections_per_source,
            )
        )
        if config.monitor.serve:
            servers.append(
                HttpServer(
                    name="monitor",
                    host=me.address,
                    port=config.ports.monitor,
                    routes=monitor_routes(node),
                    authorize=authorize,
                    max_body_bytes=4096,
                    max_connections=config.http.max_connections,
                    max_connections_per_source=config.http.max_connections_per_source,
                )
            )
        for server in servers:
            try:
                loop_thread.run(server.start(), timeout=10)
            except OSError as exc:
                raise TsconsensusError(
                    f"cannot listen on {server.address} ({server.name} port): {exc.strerror or exc}"
                ) from None
    except BaseException:
        for server in servers:
            try:
                loop_thread.run(server.stop(), timeout=5)
            except Exception:
                pass
        raft.stop()
        loop_thread.stop()
        peer_clients.close()
        raise
    log.info("node %s started; members %s", node_id, ", ".join(members))
    return node


def _on_state_change(node_id: str, metrics: Metrics) -> Any:
    def changed(old: RaftState, new: RaftState) -> None:
        log.info("node %s: %s -> %s", node_id, old.value, new.value)
        metrics.state_changed(old, new)

    return changed
