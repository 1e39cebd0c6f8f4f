"""Starting a node on pysyncobj (``raft.engine = "pysyncobj"``), the engine being replaced."""

from __future__ import annotations

import logging
from typing import Any

from ._applier import LogApplier
from ._executor import CommandExecutor
from ._http import HttpServer
from ._loop import LoopThread
from ._raft import RaftNode
from .address import NodeAddress
from .authorization import Authorizer, cluster_password
from .bootstrap import decide_members, write_members
from .client import PeerClients
from .clock import Clock
from .config import Config
from .consensus import Consensus
from .errors import JoinError
from .metrics import Metrics
from .start import close_ports, open_ports
from .tailnet import Peer, Tailnet
from .types import RaftState, StateMachine

log = logging.getLogger("tsconsensus")


def start_pysyncobj(
    tailnet: Tailnet,
    state_machine: StateMachine,
    cluster_tag: str,
    config: Config,
    clock: Clock,
    me: Peer,
) -> Consensus:
    """:func:`tsconsensus.start` on pysyncobj."""
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

        servers.extend(
            open_ports(
                node,
                host=me.address,
                config=config,
                tailnet=tailnet,
                authorizer=authorizer,
                loop_thread=loop_thread,
            )
        )
    except BaseException:
        close_ports(servers, loop_thread)
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
