"""The monitor port: status and health (DESIGN section 4), authorized like every other port.

- ``GET /v1/status``: this node's view (:meth:`NodeStatus.to_json`).
- ``GET /v1/peers``: the tagged tailnet nodes, with ``online`` and ``member`` flags.
- ``GET /metrics``: Prometheus text format (:mod:`tsconsensus.metrics`).
- ``GET /healthz``: 200 while the node runs.
- ``GET /v1/snapshot``: the state machine's snapshot on this node (octet-stream), with the
  log index it covers in ``X-Tsc-Index`` and its SHA-256 in ``X-Tsc-Sha256``.
- ``GET /readyz``: 200 when the node's storage takes writes, it knows a leader and has applied
  everything it knows to be committed; 503 with the reason otherwise (``{"error": "not ready:
  disk full: ..."}`` while the disk is full).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Protocol

from ._http import Handler, Request, Response, error
from .errors import TailnetError
from .metrics import Metrics
from .types import NodeStatus


class MonitorNode(Protocol):
    def status(self) -> NodeStatus: ...

    def snapshot(self, timeout: float = 30.0) -> tuple[int, bytes]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def storage_problem(self) -> str: ...


def storage_problem(node: MonitorNode) -> str | None:
    """Why ``node``'s storage takes no writes (``"disk full: ..."``, ``"storage failed: ..."``),
    or ``None``."""
    return node.storage_problem or None


def readiness(status: NodeStatus, problem: str | None = None) -> str | None:
    """``None`` when ready, else why not. ``problem``: :func:`storage_problem`."""
    if problem is not None:
        return problem
    if status.leader is None:
        return "no leader known"
    if status.applied_index < status.commit_index:
        return f"applied {status.applied_index} of {status.commit_index} committed entries"
    return None


def monitor_routes(node: MonitorNode) -> dict[tuple[str, str], Handler]:
    async def get_status(_request: Request) -> Response:
        return Response(200, node.status().to_json())

    async def get_peers(_request: Request) -> Response:
        loop = asyncio.get_running_loop()
        try:
            peers = await loop.run_in_executor(None, node.peers)
        except TailnetError as exc:
            return error(503, f"tailnet unavailable: {exc}")
        return Response(200, {"peers": peers})

    async def get_metrics(_request: Request) -> Response:
        body = node.metrics.render(node.status()) + storage_gauges(storage_problem(node))
        return Response(200, body, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(_request: Request) -> Response:
        return Response(200, {"ok": True})

    async def readyz(_request: Request) -> Response:
        reason = readiness(node.status(), storage_problem(node))
        if reason is not None:
            return error(503, f"not ready: {reason}")
        return Response(200, {"ok": True})

    async def get_snapshot(_request: Request) -> Response:
        loop = asyncio.get_running_loop()
        index, data = await loop.run_in_executor(None, node.snapshot)
        digest = hashlib.sha256(data).hexdigest()
        return Response(
            200,
            data,
            content_type="application/octet-stream",
            headers={
                "X-Tsc-Index": str(index),
                "X-Tsc-Term": str(node.status().term),
                "X-Tsc-Sha256": digest,
            },
        )

    return {
        ("GET", "/v1/status"): get_status,
        ("GET", "/v1/snapshot"): get_snapshot,
        ("GET", "/v1/peers"): get_peers,
        ("GET", "/metrics"): get_metrics,
        ("GET", "/healthz"): healthz,
        ("GET", "/readyz"): readyz,
    }


def storage_gauges(problem: str | None) -> str:
    """The storage's gauges in the text format, for ``problem`` (:func:`storage_problem`)."""
    full = problem is not None and problem.startswith("disk full")
    return (
        "# HELP tsc_storage_disk_full 1 while this node's disk is full: it acknowledges "
        "nothing until space returns.\n"
        "# TYPE tsc_storage_disk_full gauge\n"
        f"tsc_storage_disk_full {int(full)}\n"
        "# HELP tsc_storage_failed 1 once this node's storage failed (a failed fsync): the "
        "node stops.\n"
        "# TYPE tsc_storage_failed gauge\n"
        f"tsc_storage_failed {int(problem is not None and not full)}\n"
    )
