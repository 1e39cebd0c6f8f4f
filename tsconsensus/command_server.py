"""The command port: ``POST /v1/execute`` (DESIGN section 4).

Request body ``{"name": N, "args": A, "request_id": optional string, "timeout_s": optional}``.
Responses:
- 200 ``{"result": R, "error": null|"message", "index": i}`` (a state-machine error is a 200);
- 400 malformed JSON, a body that is not an object, a missing or empty ``name``, a bad
  ``request_id`` or ``timeout_s``, arguments too large once encoded;
- 403 the peer lacks the cluster tag; 413 body over ``command.max_body_bytes``;
- 409 ``{"error", "request_id", "reason"}``: the request id was used for a different command
  (``reused``), or was first submitted longer ago than ids are remembered (``expired``);
- 503 ``{"error": ..., "leader": null|"host:command_port", "request_id": id}`` when no leader
  confirmed the command within the timeout (retrying with that ``request_id`` is safe).

``GET /v1/identity``, ``POST /v1/join`` and ``POST /v1/members/remove``: see
:mod:`tsconsensus.member_routes`.
``POST /v1/snapshot/restore`` ``{"data": base64, "sha256": hex}``: replace the state machine's
state on every node at one log position; answers like ``/v1/execute`` (the result is
``{"restored_bytes": n}``). ``/v1/execute`` has no reserved command names.
``POST /v1/leader/transfer`` ``{"to": id|null}``: move leadership (forwarded to the leader);
``to`` is a member id or its Raft address; answers ``{"leader": new id, "leader_address":
host:raft_port}``, 409 if it did not move.
``POST /v1/node/stop``: only from the node's own address; ends ``tsc node start`` cleanly
(leadership handed over first).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from typing import Any, Protocol

from ._http import Handler, Request, Response, error
from .client import SHA256_HEADER, PeerClients
from .errors import (
    ClusterError,
    InvalidCommandError,
    NoLeaderError,
    RequestIdConflictError,
    TsconsensusError,
)
from .member_routes import member_routes
from .safejson import loads
from .staged_restore import StagedBackups
from .types import Command, CommandResult

MAX_TIMEOUT_S = 300.0


class CommandNode(Protocol):
    """What the command port needs from the node."""

    default_timeout_s: float

    def members(self) -> list[str]: ...

    @property
    def leader(self) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def address(self) -> str: ...

    def transfer_leadership(self, to: str | None = None, timeout: float = 10.0) -> str: ...

    def request_stop(self) -> bool: ...

    def raft_address_of(self, node_id: str | None) -> str | None: ...

    peer_clients: PeerClients
    staged: StagedBackups

    async def execute_command_async(
        self, command: Command, *, request_id: str | None = None, timeout: float | None = None
    ) -> CommandResult: ...

    def command_address_of(self, node_id: str | None) -> str | None: ...

    async def restore_snapshot_async(
        self, data: bytes, *, sha256: str | None = None, timeout: float | None = None
    ) -> CommandResult: ...


def parse_execute_body(body: bytes) -> tuple[Command, str | None, float | None]:
    """Validate an execute body; raises ValueError with a message fit for a 400."""
    data: Any = loads(body)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    name = data.get("name")
    if "name" not in data:
        raise ValueError("missing field 'name'")
    if not isinstance(name, str) or not name:
        raise ValueError("field 'name' must be a non-empty string")
    unknown = set(data) - {"name", "args", "request_id", "timeout_s"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    request_id = data.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise ValueError("field 'request_id' must be a non-empty string")
    timeout = data.get("timeout_s")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ValueError("field 'timeout_s' must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise ValueError(f"field 'timeout_s' must be in (0, {MAX_TIMEOUT_S:g}]")
        timeout = float(timeout)
    return Command(name, data.get("args")), request_id, timeout


def command_routes(node: CommandNode) -> dict[tuple[str, str], Handler]:
    async def execute(request: Request) -> Response:
        try:
            command, request_id, timeout = parse_execute_body(request.body)
        except ValueError as exc:
            return error(400, str(exc))
        try:
            outcome = await node.execute_command_async(
                command, request_id=request_id, timeout=timeout or node.default_timeout_s
            )
        except RequestIdConflictError as exc:
            return error(409, str(exc), request_id=request_id, reason=exc.kind)
        except InvalidCommandError as exc:
            return error(400, str(exc))
        except NoLeaderError as exc:
            return error(
                503,
                str(exc),
                leader=node.command_address_of(exc.leader),
                request_id=exc.request_id,
            )
        return _outcome(outcome)

    async def restore(request: Request) -> Response:
        try:
            data, digest = _backup_body(request)
        except ValueError as exc:
            return error(400, str(exc))
        try:
            outcome = await node.restore_snapshot_async(data, sha256=digest)
        except InvalidCommandError as exc:
            return error(400, str(exc))
        except NoLeaderError as exc:
            return error(503, str(exc), leader=node.command_address_of(exc.leader))
        except ClusterError as exc:
            return error(503, str(exc), leader=node.command_address_of(node.leader))
        return _outcome(outcome)

    async def stage(request: Request) -> Response:
        try:
            data, digest = _backup_body(request)
        except ValueError as exc:
            return error(400, str(exc))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, node.staged.put, data, digest)
        return Response(200, {"staged": digest, "bytes": len(data)})

    async def staged(request: Request) -> Response:
        digest = (request.query.get("sha256") or [""])[0].lower()
        data = node.staged.get(digest) if len(digest) == 64 else None
        if data is None:
            return error(404, f"no staged backup {digest[:64]!r} here")
        return Response(200, data, content_type="application/octet-stream")

    async def transfer(request: Request) -> Response:
        try:
            data: Any = loads(request.body or b"{}")
            to = data.get("to") if isinstance(data, dict) else None
            if to is not None:
                if not isinstance(to, str):
                    raise ValueError("'to' must be a member id or null")
                pass  # a member id or a Raft address: the node resolves it
        except ValueError as exc:
            return error(400, f"bad body: {exc}")
        loop = asyncio.get_running_loop()
        if not node.is_leader:
            leader = node.command_address_of(node.leader)
            if leader is None:
                return error(503, "no leader to transfer from", leader=None)

            def forward() -> Any:
                client = node.peer_clients.get(leader)
                return client.request("POST", "/v1/leader/transfer", {"to": to})

            try:
                return Response(200, await loop.run_in_executor(None, forward))
            except TsconsensusError as exc:
                return error(503, f"forwarding to the leader {leader} failed: {exc}", leader=leader)
        try:
            new = await loop.run_in_executor(
                None, node.transfer_leadership, to, node.default_timeout_s
            )
        except ClusterError as exc:
            return error(409, str(exc), leader=node.command_address_of(node.leader))
        return Response(200, {"leader": new, "leader_address": node.raft_address_of(new)})

    async def stop_node(request: Request) -> Response:
        if request.peer[0] != node.address:
            return error(403, "only the node itself may stop it")
        if not node.request_stop():
            return error(409, "this node is not run by 'tsc node start'; stop its process instead")
        return Response(200, {"stopping": True})

    routes: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/leader/transfer"): transfer,
        ("POST", "/v1/node/stop"): stop_node,
        ("POST", "/v1/execute"): execute,
        ("POST", "/v1/snapshot/restore"): restore,
        ("POST", "/v1/snapshot/stage"): stage,
        ("GET", "/v1/snapshot/staged"): staged,
    }
    routes.update(member_routes(node))  # type: ignore[arg-type]
    return routes


def _outcome(outcome: CommandResult) -> Response:
    return Response(200, {"result": outcome.result, "error": outcome.error, "index": outcome.index})


def _backup_body(request: Request) -> tuple[bytes, str]:
    """A backup and its SHA-256: raw bytes with an ``X-Snapshot-Sha256`` header, or JSON
    ``{"data": base64, "sha256": hex}`` (small ones); raises ValueError (400)."""
    if request.headers.get("content-type", "").startswith("application/octet-stream"):
        digest = request.headers.get(SHA256_HEADER.lower(), "").lower()
        snapshot = request.body
    else:
        data: Any = loads(request.body)
        if (
            not isinstance(data, dict)
            or set(data) != {"data", "sha256"}
            or not isinstance(data["data"], str)
            or not isinstance(data["sha256"], str)
        ):
            raise ValueError(
                'body must be {"data": base64 snapshot bytes, "sha256": hex digest}, or raw '
                f"bytes (application/octet-stream) with an {SHA256_HEADER} header"
            )
        try:
            snapshot = base64.b64decode(data["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'data' is not valid base64") from None
        digest = data["sha256"].lower()
    if hashlib.sha256(snapshot).hexdigest() != digest:
        raise ValueError("the snapshot fails its checksum (its sha256 does not match)")
    return snapshot, digest
