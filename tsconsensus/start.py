"""Wiring: :func:`start` builds a running node out of a tailnet, a state machine and a config.

A running node owns an event-loop thread (its HTTP ports, the Raft transport and the core), a
disk thread (every write and fsync) and an apply thread (the state machine).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._http import HttpServer
from ._loop import LoopThread
from .admin_socket import AdminSocketServer
from .authorization import Authorizer
from .clock import Clock, SystemClock
from .command_server import command_routes
from .config import Config
from .consensus import Consensus
from .errors import NotTaggedError, TsconsensusError
from .monitor_server import monitor_routes
from .tailnet import Tailnet
from .types import StateMachine

log = logging.getLogger("tsconsensus")


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
    from ._native_wiring import start_native

    return start_native(tailnet, state_machine, cluster_tag, config, clock, me)


def open_ports(
    node: Consensus,
    *,
    host: str,
    config: Config,
    tailnet: Tailnet,
    authorizer: Authorizer,
    loop_thread: LoopThread,
    resolve_peer: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None,
    admin_socket: Path | None = None,
) -> list[HttpServer]:
    """Serve the command and (if configured) monitor ports on ``host``, and the admin socket
    (both ports' endpoints, mode 0600) at ``admin_socket`` if given; the servers, started.
    ``resolve_peer`` names a connection's peer for the routes (userspace mode).
    Raises :class:`TsconsensusError` naming the port that cannot be bound (nothing left open)."""

    async def authorize(ip: str, port: int) -> bool:
        if not getattr(tailnet, "may_block", True):
            return authorizer.allows(ip, port)
        # Asking tailscaled may block (a whois can wait for a userspace mapping): never on
        # the loop that serves every other request.
        return await asyncio.get_running_loop().run_in_executor(None, authorizer.allows, ip, port)

    backups = config.command.max_backup_bytes
    servers = [
        HttpServer(
            name="command",
            host=host,
            port=config.ports.command,
            routes=command_routes(node),
            authorize=authorize,
            max_body_bytes=config.command.max_body_bytes,
            body_limits={"/v1/snapshot/restore": backups, "/v1/snapshot/stage": backups},
            # a large backup may take a while to arrive
            read_timeout_s=max(10.0, backups / 50_000_000),
            max_connections=config.http.max_connections,
            max_connections_per_source=config.http.max_connections_per_source,
            resolve_peer=resolve_peer,
        )
    ]
    if config.monitor.serve:
        servers.append(
            HttpServer(
                name="monitor",
                host=host,
                port=config.ports.monitor,
                routes=monitor_routes(node),
                authorize=authorize,
                max_body_bytes=4096,
                max_connections=config.http.max_connections,
                max_connections_per_source=config.http.max_connections_per_source,
                resolve_peer=resolve_peer,
            )
        )
    if admin_socket is not None:
        servers.append(
            AdminSocketServer(
                admin_socket,
                self_address=node.address,
                routes={**monitor_routes(node), **command_routes(node)},
                max_body_bytes=config.command.max_body_bytes,
                body_limits={"/v1/snapshot/restore": backups, "/v1/snapshot/stage": backups},
                read_timeout_s=max(10.0, backups / 50_000_000),
            )
        )
    started: list[HttpServer] = []
    try:
        for server in servers:
            try:
                loop_thread.run(server.start(), timeout=10)
            except OSError as exc:
                where = getattr(server, "path", server.address)
                raise TsconsensusError(
                    f"cannot listen on {where} ({server.name} port): {exc.strerror or exc}"
                ) from None
            started.append(server)
    except BaseException:
        close_ports(started, loop_thread)
        raise
    return servers


def close_ports(servers: list[HttpServer], loop_thread: LoopThread) -> None:
    for server in servers:
        try:
            loop_thread.run(server.stop(), timeout=5)
        except Exception:
            log.exception("stopping the %s server failed", server.name)
