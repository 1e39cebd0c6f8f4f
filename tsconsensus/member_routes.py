"""Membership endpoints of the command port on the native engine.

- ``GET /v1/identity``: ``{"id": member id, "cluster_id": id|null, "raft_address": host:port}``;
  a starting node answers it too (that is how founders learn each other's ids).
- ``POST /v1/join`` ``{"id": member id, "address": "host:raft_port"}``: a new node asks to be
  added as a learner (promoted to voter once caught up). Only for itself: the address's host
  must be the caller's. Forwarded to the leader; answered once the change has committed:
  ``{"cluster_id", "members", "leader"}``. Already a member: 200. A removed id: 409, with how
  to come back (wipe the state directory: the node then joins under a new id).
- ``POST /v1/members/remove`` ``{"id": member id, Raft address or host}``: forwarded to the
  leader; 409 if it is not a member.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Any, Protocol

from ._http import Handler, Request, Response, error
from ._member_view import parse_hex_id
from .address import NodeAddress
from .client import PeerClients
from .errors import JoinError, NoLeaderError, TsconsensusError
from .safejson import loads


class MemberNode(Protocol):
    default_timeout_s: float
    peer_clients: PeerClients

    def identity(self) -> dict[str, Any]: ...

    def members(self) -> list[str]: ...

    @property
    def leader(self) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    def command_address_of(self, node_id: str | None) -> str | None: ...

    def member_id_of(self, text: str) -> str | None: ...

    def join_member(self, member_id: str, raft_address: str, timeout: float = 10.0) -> None: ...

    def remove_member(self, node_id: str, timeout: float = 10.0) -> None: ...


def member_routes(node: MemberNode) -> dict[tuple[str, str], Handler]:
    async def identity(request: Request) -> Response:
        return Response(200, node.identity())

    async def join(request: Request) -> Response:
        try:
            member_id, address = _join_body(request.body)
        except ValueError as exc:
            return error(400, str(exc))
        if address.host != _canonical_ip(request.peer[0]):
            return error(
                403, f"a node may only ask to add itself ({request.peer[0]}), not {address.host}"
            )
        try:
            parse_hex_id(member_id)
        except ValueError as exc:
            return error(400, f"{exc}; {_JOIN_SHAPE}")
        if node.identity().get("cluster_id") is None:
            return error(503, "this node is not in a cluster yet", leader=None)
        if member_id in node.members():
            return _members(node)
        body = {"id": member_id, "address": str(address)}
        return await _on_leader(
            node, "/v1/join", body, lambda t: node.join_member(member_id, str(address), t)
        )

    async def remove(request: Request) -> Response:
        try:
            data: Any = loads(request.body)
            text = data.get("id") if isinstance(data, dict) else None
            if not isinstance(text, str):
                raise ValueError('body must be {"id": member id or "host:raft_port"}')
        except ValueError as exc:
            return error(400, str(exc))
        try:
            _id_or_address(text)
        except ValueError as exc:
            return error(400, str(exc))
        member_id = node.member_id_of(text)
        members = node.members()
        if member_id is None:
            listed = ", ".join(sorted(members))
            return error(409, f"{text} is not a member (members: {listed})", members=members)
        return await _on_leader(
            node,
            "/v1/members/remove",
            {"id": member_id},
            lambda t: node.remove_member(member_id, t),
        )

    return {
        ("GET", "/v1/identity"): identity,
        ("POST", "/v1/join"): join,
        ("POST", "/v1/members/remove"): remove,
    }


async def _on_leader(
    node: MemberNode, path: str, body: dict[str, Any], change: Callable[[float], None]
) -> Response:
    """Run ``change`` here if this node leads, else hand the request to the leader."""
    loop = asyncio.get_running_loop()
    timeout = node.default_timeout_s
    if not node.is_leader:
        leader = node.command_address_of(node.leader)
        if leader is None:
            return error(503, "no leader right now; ask again shortly", leader=None)

        def forward() -> Any:
            return node.peer_clients.get(leader).request("POST", path, body)

        try:
            return Response(200, await loop.run_in_executor(None, forward))
        except JoinError as exc:
            return error(409, str(exc))
        except TsconsensusError as exc:
            status = 409 if "409" in str(exc) or "removed" in str(exc) else 503
            return error(status, f"the leader {leader} answered: {exc}", leader=leader)
    try:
        await loop.run_in_executor(None, change, timeout)
    except NoLeaderError as exc:
        return error(503, str(exc), leader=node.command_address_of(exc.leader))
    except JoinError as exc:
        if "removed" in str(exc):
            return error(
                409,
                f"{exc}; wipe that node's state directory and start it again: it joins as a "
                "new member",
            )
        return error(503, str(exc), leader=node.command_address_of(node.leader))
    return _members(node)


def _members(node: MemberNode) -> Response:
    return Response(
        200,
        {
            "cluster_id": node.identity().get("cluster_id"),
            "members": node.members(),
            "leader": node.leader,
        },
    )


_JOIN_SHAPE = 'body must be {"id": member id, "address": "host:raft_port"}'


def _join_body(body: bytes) -> tuple[str, NodeAddress]:
    """(member id, Raft address) of a join; ValueError (400) naming what is wrong. The address
    is checked first, so that a caller naming someone else's address hears 403, not 400."""
    data: Any = loads(body)
    if not isinstance(data, dict):
        raise ValueError(_JOIN_SHAPE)
    member_id, address = data.get("id"), data.get("address", data.get("id"))
    if not isinstance(member_id, str) or not isinstance(address, str):
        raise ValueError(_JOIN_SHAPE)
    parsed = NodeAddress.parse(address)
    return member_id.lower(), parsed


def _id_or_address(text: str) -> None:
    """ValueError unless ``text`` is a member id or a ``host:port``."""
    try:
        parse_hex_id(text)
    except ValueError:
        NodeAddress.parse(text)


def _canonical_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
