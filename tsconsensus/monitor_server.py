"""The monitor port: status and health (DESIGN section 4), authorized like every other port.

- ``GET /v1/status``: this node's view (:meth:`NodeStatus.to_json`).
- ``GET /v1/peers``: the tagged tailnet nodes, with ``online`` and ``member`` flags.
- ``GET /metrics``: Prometheus text format (:mod:`tsconsensus.metrics`).
- ``GET /healthz``: 200 while the node runs.
- ``GET /v1/snapshot``: the state machine's snapshot on this node (octet-stream), with the
  log index it covers in ``X-Tsc-Index`` and its SHA-256 in ``X-Tsc-Sha256``.
- ``GET /readyz``: 200 when the node knows a leader and has applied everything it knows to be
  committed; 503 with the reason otherwise.
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


def readiness(status: NodeStatus) -> str | None:
    """``None`` when ready, else why not."""
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
        body = node.metrics.render(node.status())
        return Response(200, body, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(_request: Request) -> Response:
        return Response(200, {"ok": True})

    async def readyz(_request: Request) -> Response:
        reason = readiness(node.status())
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
