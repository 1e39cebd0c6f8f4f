"""Deciding a starting node's Raft configuration: restart, join, or bootstrap.

Rules, in order (``decide_members``):
1. A node with a recorded configuration in its state directory restarts with it; it never
   bootstraps again (its log and snapshot carry every later membership change).
2. A new node first asks each tagged, online peer to add it (``POST /v1/join``, which the peer
   forwards to the leader). The first peer that is in a cluster answers with the configuration
   (this node included); asking again when already a member is harmless.
3. Unless ``follow_only``: with ``bootstrap_expect = 0`` every tagged peer present forms the
   configuration (fixed peer lists); with ``bootstrap_expect = N`` the node waits until N
   tagged nodes are online, and only the N lowest ids form the first cluster, all with the same
   list, so nodes started at the same moment agree on one cluster. A node outside those N keeps
   trying to join.
Every wait has a deadline (``cluster.join_timeout_s``), then :class:`JoinError`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .address import NodeAddress
from .errors import JoinError, TsconsensusError
from .tailnet import Peer

log = logging.getLogger("tsconsensus.bootstrap")

MEMBERS_FILE = "members.json"

JoinFn = Callable[[Peer], Sequence[str]]
"""Ask one peer to add this node; returns the configuration or raises TsconsensusError."""


def read_members(state_dir: str) -> list[str] | None:
    if not state_dir:
        return None
    path = Path(state_dir) / MEMBERS_FILE
    try:
        members = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TsconsensusError(f"{path} is unreadable ({exc}); remove it to join afresh") from None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise TsconsensusError(f"{path} is not a list of member ids")
    return members


def write_members(state_dir: str, members: Sequence[str]) -> None:
    """Record the configuration a node started with (atomically)."""
    if not state_dir:
        return
    os.makedirs(state_dir, exist_ok=True)
    path = Path(state_dir) / MEMBERS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(members)) + "\n")
    os.replace(tmp, path)


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


def decide_members(
    *,
    me_id: str,
    raft_port: int,
    tag: str,
    state_dir: str,
    peers: Callable[[], list[Peer]],
    join: JoinFn,
    bootstrap_expect: int,
    follow_only: bool,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> list[str]:
    """The configuration this node starts with (see the module docstring)."""
    recorded = read_members(state_dir)
    if recorded is not None:
        if me_id not in recorded:
            raise JoinError(
                f"{state_dir} belongs to another node (it lists {recorded}, not {me_id})"
            )
        log.info("restarting with recorded members %s", recorded)
        return recorded
    deadline = monotonic() + timeout_s
    pause = 0.05
    last_problem = "no tagged peer answered"
    next_report = monotonic() + 2.0
    while True:
        tagged = [p for p in peers() if p.has_tag(tag) and p.online and not p.is_self]
        for peer in sorted(tagged, key=lambda p: p.address):
            try:
                members = list(join(peer))
            except TsconsensusError as exc:
                last_problem = f"{peer.hostname}: {exc}"
                continue
            if me_id in members:
                log.info("joined through %s: members %s", peer.hostname, members)
                return members
        if not follow_only:
            ids = [me_id, *(str(NodeAddress(p.address, raft_port)) for p in tagged)]
            chosen = bootstrap_set(ids, bootstrap_expect)
            if chosen is not None and me_id in chosen:
                log.info("bootstrapping a new cluster: %s", chosen)
                return chosen
            if chosen is None:
                last_problem = f"{len(set(ids))} of {bootstrap_expect} tagged nodes online"
        now = monotonic()
        if now >= next_report:  # an operator watching `tsc node start` sees why it waits
            log.info("still waiting to join or form a cluster: %s", last_problem)
            next_report = now + 5.0
        if now >= deadline:
            mode = "follow-only node" if follow_only else "node"
            raise JoinError(
                f"{mode} {me_id} could not join or form a cluster within {timeout_s:g}s "
                f"({last_problem})"
            )
        sleep(pause)
        pause = min(pause * 2, 1.0)
