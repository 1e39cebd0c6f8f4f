"""What a node's Raft view says about its members, in the words of the public API: member ids
in hex, hosts of Raft addresses, and :class:`~tsconsensus.types.NodeStatus`.

Pure functions of a :class:`DriverView` (an immutable picture), so any thread may call them.
"""

from __future__ import annotations

from .address import NodeAddress
from .raft import Role
from .raft.driver_view import DriverView
from .types import MemberStatus, NodeStatus, RaftState

ROLES = {
    Role.LEADER: RaftState.LEADER,
    Role.CANDIDATE: RaftState.CANDIDATE,
    Role.PRE_CANDIDATE: RaftState.FOLLOWER,
    Role.FOLLOWER: RaftState.FOLLOWER,
}
CONNECTED_WITHIN_S = 3.0  # a member heard from this recently shows as connected


def hex_id(member: int) -> str:
    return f"{member:016x}"


def parse_hex_id(text: str) -> int:
    """A member id from its 16 hex digits; ValueError otherwise."""
    if len(text) != 16:
        raise ValueError(f"{text!r} is not a member id (16 hex digits)")
    value = int(text, 16)
    if value == 0:
        raise ValueError("member id 0 is not valid")
    return value


def host_of(raft_address: str) -> str:
    """The host of a member's Raft address as recorded in the configuration."""
    try:
        return NodeAddress.parse(raft_address).host
    except ValueError:
        return raft_address  # shown as recorded


def member_ids(view: DriverView) -> list[str]:
    """The member ids of the configuration in force, this node first."""
    own = hex_id(view.member_id)
    ids = [hex_id(p.id) for p in view.peers]
    return [own, *sorted(i for i in ids if i != own)]


def address_of(view: DriverView, node_id: str) -> str | None:
    """The Raft address (``host:port``) recorded for a member id."""
    for p in view.peers:
        if hex_id(p.id) == node_id:
            return p.address
    return None


def id_of(view: DriverView, text: str) -> str | None:
    """A member id from its hex form or from its address (``host:port`` or ``host``)."""
    for p in view.peers:
        if text in (hex_id(p.id), p.address, host_of(p.address)):
            return hex_id(p.id)
    return None


def node_status(view: DriverView, *, address: str, applied: int, snapshot_index: int) -> NodeStatus:
    """The node's status as :meth:`Consensus.status` gives it (``address``: its Raft address)."""
    last = view.last_index
    members = []
    for p in view.peers:
        is_self = p.id == view.member_id
        heard = p.last_heard_s
        members.append(
            MemberStatus(
                id=hex_id(p.id),
                address=host_of(p.address),
                connected=is_self or (heard is not None and heard < CONNECTED_WITHIN_S),
                match_index=p.match,
                lag=None if p.match is None else max(0, last - p.match),
                is_self=is_self,
                last_contact_s=None if is_self else heard,
            )
        )
    return NodeStatus(
        node_id=hex_id(view.member_id),
        address=host_of(address),
        state=ROLES[view.role],
        leader=None if view.leader == 0 else hex_id(view.leader),
        term=view.term,
        # what is applied is committed; the view may be up to a tick older than ``applied``
        commit_index=max(view.commit, applied),
        applied_index=applied,
        has_quorum=view.has_quorum,
        members=tuple(members),
        leader_gap_max_s=view.leader_gap_max_s,
        snapshot_index=snapshot_index,
    )
