"""How a node on the new engine finds its place: restart, join, or found a new cluster.

Rules, in order (:func:`decide_start`):
1. A node whose storage holds a log, a snapshot or a cluster id restarts from it; it never
   founds or joins again (its log carries every later membership change).
2. A new node (empty storage: a new random member id) asks every tagged, online peer who it
   is (``GET /v1/identity``). If any of them belongs to a cluster, it asks to join
   (``POST /v1/join``, forwarded to the leader, which adds it as a learner and promotes it
   once it has caught up), records the cluster id, and starts with an empty log.
3. Unless ``follow_only``, when nobody is in a cluster yet: with ``bootstrap_expect = 0`` every
   tagged online peer forms the cluster; with ``N``, the N lowest Raft addresses among the
   tagged online nodes do, once N are online. Every founder waits until it knows each other
   founder's member id, so all of them write the same first entry and derive the same cluster
   id from the founders' ids. A node outside the founders keeps trying to join.
Every wait has a deadline (``cluster.join_timeout_s``), then :class:`JoinError`.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .address import NodeAddress
from .errors import JoinError, TsconsensusError
from .raft import InitialState, Storage, bootstrap_state
from .tailnet import Peer

log = logging.getLogger("tsconsensus.bootstrap")


@dataclass(frozen=True)
class Identity:
    """What ``GET /v1/identity`` tells about a node."""

    member_id: int
    cluster_id: int  # 0: not in a cluster yet
    raft_address: str


@dataclass(frozen=True)
class Joined:
    """What ``POST /v1/join`` answered."""

    cluster_id: int


IdentifyFn = Callable[[Peer], Identity]
JoinFn = Callable[[Peer], Joined]


def bootstrap_set(candidates: Sequence[str], expect: int) -> list[str] | None:
    """The ids that form the first cluster, or ``None`` while too few are online.

    Pure: every node that sees the same candidates computes the same set.
    """
    ordered = sorted(set(candidates))
    if expect == 0:
        return ordered
    if len(ordered) < expect:
        return None
    return ordered[:expect]


def derive_cluster_id(member_ids: list[int]) -> int:
    """The id of a cluster founded by these members: every founder computes the same one."""
    packed = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    digest = hashlib.blake2b(b"tsconsensus-cluster\0" + packed, digest_size=8).digest()
    return int.from_bytes(digest) or 1


def has_state(storage: Storage) -> bool:
    initial = storage.initial_state()
    return bool(initial.entries or initial.snapshot is not None or storage.cluster_id)


def decide_start(
    *,
    storage: Storage,
    me: Identity,
    tag: str,
    peers: Callable[[], list[Peer]],
    identify: IdentifyFn,
    join: JoinFn,
    bootstrap_expect: int,
    follow_only: bool,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    addresses: dict[int, str] | None = None,
) -> InitialState:
    """The state this node's core starts from (see the module docstring). Records the cluster
    id (and, for a founder, the first entry) in ``storage`` before returning. Every peer's
    Raft address learned on the way is added to ``addresses`` (member id -> address): a node
    that joins needs them before its log tells it where its peers are."""
    if has_state(storage):
        log.info(
            "restarting with recorded members: member %016x of cluster %016x",
            me.member_id,
            storage.cluster_id,
        )
        return storage.initial_state()
    my_host = NodeAddress.parse(me.raft_address).host
    deadline = monotonic() + timeout_s
    pause = 0.05
    last_problem = "no tagged peer answered"
    next_report = monotonic() + 2.0
    while True:
        tagged = [p for p in peers() if p.has_tag(tag) and p.online and not p.is_self]
        known: dict[str, Identity] = {}
        for peer in sorted(tagged, key=lambda p: p.address):
            try:
                known[peer.address] = identify(peer)
                if addresses is not None:
                    addresses[known[peer.address].member_id] = known[peer.address].raft_address
            except TsconsensusError as exc:
                last_problem = f"{peer.hostname}: {exc}"
        members = [a for a, i in known.items() if i.cluster_id]
        for address in members:
            peer = next(p for p in tagged if p.address == address)
            try:
                answer = join(peer)
            except TsconsensusError as exc:
                last_problem = f"joining through {peer.hostname}: {exc}"
                continue
            storage.set_cluster_id(answer.cluster_id)
            log.info(
                "joined cluster %016x through %s as member %016x",
                answer.cluster_id,
                peer.hostname,
                me.member_id,
            )
            return InitialState()
        if not members and not follow_only:
            founders = _founders(me, my_host, tagged, known, bootstrap_expect)
            if isinstance(founders, str):
                last_problem = founders
            elif founders is not None:
                return _found(storage, founders)
        now = monotonic()
        if now >= next_report:  # an operator watching `tsc node start` sees why it waits
            log.info("still waiting to join or form a cluster: %s", last_problem)
            next_report = now + 5.0
        if now >= deadline:
            mode = "follow-only node" if follow_only else "node"
            raise JoinError(
                f"{mode} {me.raft_address} could not join or form a cluster within "
                f"{timeout_s:g}s ({last_problem})"
            )
        sleep(pause)
        pause = min(pause * 2, 0.5)


def _founders(
    me: Identity, my_host: str, tagged: list[Peer], known: dict[str, Identity], expect: int
) -> dict[int, str] | str | None:
    """The founders (id -> Raft address) if this node is one and all are known; a reason to
    wait (str); or None if this node is not a founder. Founders are chosen by host address
    (every node sees the same tagged hosts), then each must have told its member id."""
    hosts = [my_host, *(p.address for p in tagged)]
    chosen = bootstrap_set(hosts, expect)
    if chosen is None:
        return f"{len(set(hosts))} of {expect} tagged nodes online"
    if my_host not in chosen:
        return None
    founders = {me.member_id: me.raft_address}
    missing = []
    for host in chosen:
        if host == my_host:
            continue
        ident = known.get(host)
        if ident is None:
            missing.append(host)
        else:
            founders[ident.member_id] = ident.raft_address
    if missing:
        return f"waiting for the member ids of {', '.join(missing)}"
    return founders


def _found(storage: Storage, founders: dict[int, str]) -> InitialState:
    cluster_id = derive_cluster_id(list(founders))
    initial = bootstrap_state(founders)
    storage.set_cluster_id(cluster_id)
    storage.save(initial.hard_state, initial.entries)
    log.info(
        "founded cluster %016x with %s",
        cluster_id,
        ", ".join(f"{m:016x}@{a}" for m, a in sorted(founders.items())),
    )
    return initial


def identity_fields(ident: Identity) -> dict[str, object]:
    """The JSON body of ``GET /v1/identity``."""
    return {
        "id": f"{ident.member_id:016x}",
        "cluster_id": f"{ident.cluster_id:016x}" if ident.cluster_id else None,
        "raft_address": ident.raft_address,
    }


def parse_identity(data: object) -> Identity:
    """Read a ``GET /v1/identity`` body; ValueError if malformed."""
    if not isinstance(data, dict):
        raise ValueError("identity is not an object")
    member = int(str(data["id"]), 16)
    cluster = data.get("cluster_id")
    address = data.get("raft_address")
    if not isinstance(address, str) or not address:
        raise ValueError("identity without a raft_address")
    return Identity(member, int(str(cluster), 16) if cluster else 0, address)
