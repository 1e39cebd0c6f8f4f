"""Starting a node on the project's own Raft engine (``raft.engine = "native"``).

The order matters: the node's storage and HTTP ports open first, synchronously (so a locked
state directory or a port in use is an error of :func:`tsconsensus.start` itself, and peers can
ask who this node is while it decides); then, in the background, :func:`~tsconsensus.
native_start.decide_start` restarts, joins or founds (founders wait for each other, so nodes of
one process can be started one after the other) and the engine starts on the node's loop.
``Consensus.started`` tells when that is done, or why it failed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._applier import LogApplier
from ._engine import EngineNode
from ._executor import CommandExecutor
from ._http import HttpServer
from ._loop import LoopThread
from ._member_view import hex_id
from ._memory import release_free_memory
from ._outcomes import FailReason
from ._storage_switches import PLANTED_BUG_ENV, open_switched_storage
from .address import NodeAddress
from .admin_socket import admin_socket_for
from .authorization import Authorizer, cluster_password
from .client import PeerClients
from .clock import Clock
from .config import Config
from .consensus import Consensus
from .dialer import Networking, networking
from .errors import ConfigError, JoinError, TsconsensusError
from .metrics import Metrics
from .native_start import Identity, Joined, decide_start, parse_identity
from .raft import MEMORY, CoreConfig, Storage
from .raft.driver import Driver
from .staged_restore import StagedBackups, fetcher
from .start import close_ports, open_ports
from .tag_cache import TagCache
from .tailnet import Peer, Tailnet
from .types import NodeStatus, RaftState, StateMachine

log = logging.getLogger("tsconsensus")

_warned_insecure = False


def planted_bug() -> str:
    """The planted bug this node process was told to have (test switch), or ""."""
    bug = os.environ.get(PLANTED_BUG_ENV, "")
    if bug and bug not in _warned_bugs:
        _warned_bugs.add(bug)
        log.warning(
            "PLANTED BUG %r is on (%s): this node is wrong on purpose", bug, PLANTED_BUG_ENV
        )
    return bug


_warned_bugs: set[str] = set()


def check_native_config(config: Config) -> None:
    """Refuse what the native engine cannot run safely; raises :class:`ConfigError`."""
    global _warned_insecure
    if not config.storage.state_dir:
        raise ConfigError(
            "storage.state_dir",
            "",
            "is required: a directory for this node's log and snapshots, or ':memory:' for a "
            "node that keeps nothing (it comes back from a restart as a new member)",
        )
    if not config.cluster.secret:
        if not config.cluster.insecure_no_secret:
            raise ConfigError(
                "cluster.secret",
                "",
                "is empty: set the same random secret on every node (`tsc dev up` writes one), "
                "or set cluster.insecure_no_secret = true to run without",
            )
        if not _warned_insecure:
            _warned_insecure = True
            log.warning(
                "cluster.secret is empty (insecure_no_secret): anyone who can run code on a "
                "member machine can forge Raft traffic and rewrite the cluster's state"
            )


def core_config(config: Config, member: int, cluster_id: int) -> tuple[CoreConfig, float]:
    """The core's settings from the node's config, and the tick length in seconds."""
    raft = config.raft
    tick = raft.heartbeat_interval_s
    low = max(2, round(raft.election_timeout_min_s / tick))
    high = max(low + 1, round(raft.election_timeout_max_s / tick))
    max_entry = config.command.max_body_bytes + 8192
    message = max(4 * 1024 * 1024, max_entry + 256 * 1024)
    return (
        CoreConfig(
            id=member,
            cluster_id=cluster_id or 1,
            election_ticks_min=low,
            election_ticks_max=high,
            heartbeat_ticks=1,
            tick_ms=max(1, round(tick * 1000)),
            max_entry_bytes=max_entry,
            max_batch_bytes=max(1024 * 1024, max_entry),
            max_message_bytes=message,
            max_uncommitted_bytes=max(64 * 1024 * 1024, 4 * max_entry),
            snapshot_entries=raft.compaction_min_entries,
            snapshot_bytes=raft.compaction_min_bytes,
            compaction_keep=min(1000, raft.compaction_min_entries // 2),
        ),
        tick,
    )


def open_node_storage(config: Config) -> Storage:
    """The node's storage, with the test-only switches of the environment applied
    (``TSC_POWER_LOSS``, ``TSC_PLANTED_BUG=ack-before-sync``, ``TSC_INJECT_FSYNC_ERROR``,
    ``TSC_WAL_SEGMENT_BYTES``: :mod:`tsconsensus._storage_switches`)."""
    return open_switched_storage(config.storage.state_dir, sync=config.storage.fsync)


def _parse_raft_address(text: str) -> tuple[str, int] | None:
    try:
        address = NodeAddress.parse(text)
    except ValueError:
        return None
    return address.host, address.port


def build_engine(
    *,
    config: Config,
    tailnet: Tailnet,
    cluster_tag: str,
    storage: Storage,
    me: Peer,
    loop_thread: LoopThread,
    applier: LogApplier,
    peer_clients: PeerClients,
    metrics: Metrics,
    stopping: threading.Event,
    on_fatal: Callable[[BaseException], None],
    net: Networking,
) -> tuple[EngineNode, TagCache]:
    """Decide how this node starts (restart, join, found) and build its engine, not started."""
    raft_address = NodeAddress(me.address, config.ports.raft)
    me_ident = Identity(storage.member_id, storage.cluster_id, str(raft_address))

    def command_address(peer: Peer) -> str:
        return str(NodeAddress(peer.address, config.ports.command))

    def identify(peer: Peer) -> Identity:
        data = peer_clients.get(command_address(peer)).request("GET", "/v1/identity")
        try:
            return parse_identity(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise JoinError(f"{peer.hostname} answered /v1/identity oddly: {exc}") from None

    def join(peer: Peer) -> Joined:
        body = {"id": hex_id(storage.member_id), "address": str(raft_address)}
        data: Any = peer_clients.get(command_address(peer)).request("POST", "/v1/join", body)
        try:
            return Joined(int(str(data["cluster_id"]), 16))
        except (ValueError, KeyError, TypeError) as exc:
            raise JoinError(f"{peer.hostname} answered a join oddly: {exc}") from None

    hints: dict[int, str] = {}
    initial = decide_start(
        storage=storage,
        me=me_ident,
        tag=cluster_tag,
        peers=tailnet.peers,
        identify=identify,
        join=join,
        bootstrap_expect=config.cluster.bootstrap_expect,
        follow_only=config.cluster.follow_only,
        timeout_s=config.cluster.join_timeout_s,
        addresses=hints,
        sleep=lambda seconds: _sleep_unless(stopping, seconds),
    )

    settings, tick_s = core_config(config, storage.member_id, storage.cluster_id)
    authorizer = Authorizer(tailnet, cluster_tag)
    holder: list[EngineNode] = []

    def tags_changed() -> None:
        if holder:
            holder[0].recheck_connections()

    tags = TagCache(tailnet, authorizer, on_change=tags_changed)
    make_driver = functools.partial(
        Driver,
        loop=loop_thread.loop,
        config=settings,
        storage=storage,
        initial=initial,
        tick_s=tick_s,
        host=net.listen_host,
        port=config.ports.raft,
        dial=net.raft_dial,
        key=cluster_password(cluster_tag, config.cluster.secret).encode(),
        authorize=tags.authorize,
        still_allowed=tags.still_allowed,
        parse_address=_parse_raft_address,
        address_hints=hints,
        on_fatal=on_fatal,
        after_snapshot=release_free_memory,
        apply_inline=applier.quick,
        rng=random.Random(),
    )
    node_name = hex_id(storage.member_id)

    def changed(old: RaftState, new: RaftState) -> None:
        log.info("node %s: %s -> %s", node_name, old.value, new.value)
        metrics.state_changed(old, new)

    engine = EngineNode(
        loop=loop_thread.loop,
        make_driver=make_driver,
        applier=applier,
        address=str(raft_address),
        max_batch_bytes=settings.max_batch_bytes // 2,
        on_state_change=changed,
        local_reads=planted_bug() == "local-reads",
    )
    holder.append(engine)
    return engine, tags


def _sleep_unless(stopping: threading.Event, seconds: float) -> None:
    if stopping.wait(seconds):
        raise JoinError("the node was stopped while joining")


def check_bindable(host: str, port: int, what: str) -> None:
    """Raise :class:`TsconsensusError` now if ``host:port`` cannot be bound (in use, not ours),
    rather than later in the background."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TsconsensusError(
                f"cannot listen on {NodeAddress(host, port)} ({what}): {exc.strerror or exc}"
            ) from None


def make_executor(engine: EngineNode, clock: Clock, config: Config) -> CommandExecutor:
    return CommandExecutor(
        engine,  # type: ignore[arg-type]
        clock,
        attempt_timeout_s=max(2.0, 3 * config.raft.election_timeout_max_s),
        max_entry_bytes=config.command.max_body_bytes + 1024,
    )


def start_engine(engine: EngineNode, tags: TagCache, loop_thread: LoopThread) -> None:
    """Start the engine's Raft port and loop work; raises TsconsensusError naming the port."""
    tags.start()
    try:
        loop_thread.run(engine.start(), timeout=10)
    except OSError as exc:
        raise TsconsensusError(
            f"cannot listen on {engine.address} (raft port): {exc.strerror or exc}"
        ) from None


class StartingBackend:
    """Stands in for the engine while the node decides how it starts: it answers who the node
    is and refuses everything else (no leader yet)."""

    def __init__(self, member_id: int) -> None:
        self.node_id = hex_id(member_id)
        self.is_leader = False
        self.leader: str | None = None
        self.applied_index = 0  # nothing applied while starting

    def members(self) -> list[str]:
        return []

    def on_raft_thread(self) -> bool:
        return False

    log_time = 0.0

    def is_read_only(self, command: Any) -> bool:
        return False

    def submit(
        self, entry: bytes, callback: Any, *, request_id: str = "", digest: str = ""
    ) -> None:
        callback(None, FailReason.NO_LEADER)

    def submit_read(self, command: Any, callback: Any) -> None:
        callback(None, FailReason.NO_LEADER)

    def set_handing_over(self, on: bool) -> None:
        pass

    def status(self) -> NodeStatus:
        return NodeStatus(self.node_id, "", RaftState.FOLLOWER, None, 0, 0, 0, False, ())

    def call_on_raft_thread(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_exception(TsconsensusError("the node is still starting"))
        return future

    def stop(self) -> None:
        pass


def start_native(
    tailnet: Tailnet,
    state_machine: StateMachine,
    cluster_tag: str,
    config: Config,
    clock: Clock,
    me: Peer,
) -> Consensus:
    """:func:`tsconsensus.start` on the native engine: open the storage, open the HTTP ports
    (peers may ask who this node is), decide how it starts, then start the engine."""
    check_native_config(config)
    net = networking(tailnet, me, config)
    storage = open_node_storage(config)
    peer_clients = PeerClients(
        source_address=None if net.userspace else me.address,
        pool_size=config.command.pool_size,
        connect_timeout_s=config.command.connect_timeout_s,
        timeout_s=config.command.timeout_s + 5.0,
        transport=net.http_transport,
    )
    loop_thread = LoopThread(f"tsc-loop-{me.address}")
    metrics = Metrics()
    applier = LogApplier(
        state_machine,
        window_s=config.raft.dedup_window_s,
        forget_at_once=planted_bug() == "forget-request-ids",
        fetch_staged=lambda sha256: fetch_staged(sha256),
    )
    authorizer = Authorizer(tailnet, cluster_tag)
    starting = StartingBackend(storage.member_id)
    raft_address = str(NodeAddress(me.address, config.ports.raft))
    servers: list[HttpServer] = []
    node = Consensus(
        config=config,
        cluster_tag=cluster_tag,
        tailnet=tailnet,
        raft=starting,
        applier=applier,
        executor=CommandExecutor(
            starting,  # type: ignore[arg-type]
            clock,
            attempt_timeout_s=1.0,
            max_entry_bytes=config.command.max_body_bytes + 1024,
        ),
        loop_thread=loop_thread,
        servers=servers,
        metrics=metrics,
        peer_clients=peer_clients,
    )
    state_dir = config.storage.state_dir
    node.staged = StagedBackups(None if state_dir == MEMORY else Path(state_dir) / "staged")

    def ask_peers(sha256: str) -> bytes | None:
        """A staged backup from any member that has it (apply thread, blocking)."""
        for member in node.members():
            address = node.command_address_of(member)
            if address is None or member == node.node_id:
                continue
            try:
                data = peer_clients.get(address).staged_backup(sha256, timeout=60)
            except TsconsensusError:
                continue
            if data is not None:
                return data
        return None

    fetch_staged = fetcher(node.staged, ask_peers)
    node._identity = lambda: {
        "id": hex_id(storage.member_id),
        "cluster_id": hex_id(storage.cluster_id) if storage.cluster_id else None,
        "raft_address": raft_address,
    }
    try:
        servers.extend(
            open_ports(
                node,
                host=net.listen_host,
                config=config,
                tailnet=tailnet,
                authorizer=authorizer,
                loop_thread=loop_thread,
                resolve_peer=net.resolve_peer,
                admin_socket=admin_socket_for(state_dir, required=net.userspace),
            )
        )
        check_bindable(net.listen_host, config.ports.raft, "raft port")
    except BaseException:
        close_ports(servers, loop_thread)
        loop_thread.stop()
        peer_clients.close()
        storage.close()
        raise

    def finish() -> None:
        """Background: restart, join or found, then run the engine (or report why not)."""
        tags: TagCache | None = None
        engine: EngineNode | None = None
        try:
            engine, tags = build_engine(
                config=config,
                tailnet=tailnet,
                cluster_tag=cluster_tag,
                storage=storage,
                me=me,
                loop_thread=loop_thread,
                applier=applier,
                peer_clients=peer_clients,
                metrics=metrics,
                stopping=node._stopping,
                on_fatal=node._fatal,
                net=net,
            )
            if node._stopping.is_set():
                raise JoinError("the node was stopped while starting")
            start_engine(engine, tags, loop_thread)
        except BaseException as exc:
            if tags is not None:
                tags.stop()
            if engine is not None:
                try:
                    engine.stop()
                except Exception:
                    log.exception("stopping the engine failed")
            node._startup_failed(exc)
            return
        node._attach(engine, make_executor(engine, clock, config))
        node._closers.append(tags.stop)
        node.started.set_result(None)
        log.info(
            "node %s (%s) started in cluster %s",
            engine.node_id,
            raft_address,
            hex_id(storage.cluster_id),
        )

    node._closers.append(storage.close)
    threading.Thread(target=finish, name=f"tsc-start-{me.address}", daemon=True).start()
    return node
