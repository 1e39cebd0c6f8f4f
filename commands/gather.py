"""Ask a cluster how it is: the members from one node, then every member's monitor port at
once (``tsc status`` and its ``--watch`` dashboard)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

import tsconsensus as tsc

Transports = Callable[[], httpx.BaseTransport] | None
"""Userspace mode: makes transports that dial members through tailscaled (else None)."""


def _client(
    address: str, source: str | None, timeout: float, transport: Transports
) -> tsc.NodeClient:
    if transport is not None and not tsc.is_admin_socket(address):
        return tsc.NodeClient(address, timeout=timeout, transport=transport())
    return tsc.NodeClient(address, timeout=timeout, source_address=source)


def gather(
    seeds: Sequence[str],
    source: str | None,
    monitor_port: int,
    timeout: float,
    *,
    with_metrics: bool = False,
    transport: Transports = None,
) -> dict[str, Any]:
    """Ask the first seed that answers (monitor ``host:port``) for the members, then every
    member's monitor port concurrently (and its ``/metrics`` with ``with_metrics``).

    Returns ``{"leader", "leaders", "term", "has_quorum", "healthy", "nodes": [...]}``; an
    unreachable member is a node with ``reachable: false`` and its ``error``, never an
    exception. Raises the first seed's error when no seed answers. ``transport`` (userspace
    mode, from :func:`tsconsensus.member_transport`) dials every TCP address through tailscaled.
    """
    seed, first_error = None, None
    for address in dict.fromkeys(seeds):
        try:
            with _client(address, source, timeout, transport) as client:
                seed = client.status()
            break
        except tsc.TsconsensusError as exc:
            first_error = first_error or exc
    if seed is None:
        assert first_error is not None
        raise first_error
    ids = [m["id"] for m in seed["members"]]
    hosts = {m["id"]: m.get("address") or _host(m["id"]) for m in seed["members"]}

    def ask(node_id: str) -> dict[str, Any]:
        try:
            address = str(tsc.NodeAddress(hosts[node_id], monitor_port))
            with _client(address, source, timeout, transport) as c:
                answer = {"id": node_id, "reachable": True, "status": c.status()}
                if with_metrics:
                    answer["metrics"] = c.metrics()
                return answer
        except tsc.TsconsensusError as exc:
            return {"id": node_id, "reachable": False, "error": str(exc)}

    with ThreadPoolExecutor(max_workers=min(16, len(ids))) as pool:
        answers = list(pool.map(ask, ids))
    return _view(answers, hosts, monitor_port)


def _view(
    answers: list[dict[str, Any]], hosts: dict[str, str], monitor_port: int
) -> dict[str, Any]:
    statuses = {a["id"]: a["status"] for a in answers if a["reachable"]}
    leaders = sorted({s["node_id"] for s in statuses.values() if s["state"] == "leader"})
    leader_status = statuses.get(leaders[0]) if len(leaders) == 1 else None
    leader_view = {m["id"]: m for m in (leader_status or {}).get("members", [])}
    leader_commit = leader_status["commit_index"] if leader_status else None
    nodes = []
    for answer in answers:
        node_id = answer["id"]
        row: dict[str, Any] = {
            "id": node_id,
            "address": hosts[node_id],
            "monitor": str(tsc.NodeAddress(hosts[node_id], monitor_port)),
        }
        if not answer["reachable"]:
            row.update(reachable=False, error=answer["error"])
        else:
            s = answer["status"]
            seen = leader_view.get(node_id, {})
            row.update(
                reachable=True,
                state=s["state"],
                leader=s["state"] == "leader",
                term=s["term"],
                commit_index=s["commit_index"],
                applied_index=s["applied_index"],
                snapshot_index=s.get("snapshot_index", 0),
                lag=None if leader_commit is None else max(0, leader_commit - s["applied_index"]),
                connected=True if node_id in leaders else seen.get("connected"),
                last_contact_s=None if node_id in leaders else seen.get("last_contact_s"),
                # the longest silence of a leader it followed (see README, "Operations")
                leader_gap_max_s=s.get("leader_gap_max_s"),
            )
            if "metrics" in answer:
                row["metrics"] = answer["metrics"]
        nodes.append(row)
    quorum = sum(1 for n in nodes if n.get("reachable")) > len(nodes) / 2
    healthy = len(leaders) == 1 and quorum and bool(leader_status and leader_status["has_quorum"])
    return {
        "leader": leaders[0] if len(leaders) == 1 else None,
        "leaders": leaders,
        "term": max((s["term"] for s in statuses.values()), default=None),
        "has_quorum": quorum,
        "healthy": healthy,
        "nodes": nodes,
    }


def _host(node_id: str) -> str:
    try:
        return tsc.NodeAddress.parse(node_id).host
    except tsc.InvalidAddressError:
        return node_id  # shown as the node reported it
