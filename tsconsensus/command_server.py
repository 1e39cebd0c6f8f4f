"""The command port: ``POST /v1/execute`` (DESIGN section 4).

Request body ``{"name": N, "args": A, "request_id": optional string, "timeout_s": optional}``.
Responses:
- 200 ``{"result": R, "error": null|"message", "index": i}`` (a state-machine error is a 200);
- 400 malformed JSON, a body that is not an object, a missing or empty ``name``, a bad
  ``request_id`` or ``timeout_s``, arguments too large once encoded;
- 403 the peer lacks the cluster tag; 413 body over ``command.max_body_bytes``;
- 503 ``{"error": ..., "leader": null|"host:command_port"}`` when no leader confirmed the
  command within the timeout (retrying with the same ``request_id`` is safe).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ._http import Handler, Request, Response, error
from .errors import InvalidCommandError, NoLeaderError
from .types import Command, CommandResult

MAX_TIMEOUT_S = 300.0


class CommandNode(Protocol):
    """What the command port needs from the node."""

    default_timeout_s: float

    async def execute_command_async(
        self, command: Command, *, request_id: str | None = None, timeout: float | None = None
    ) -> CommandResult: ...

    def command_address_of(self, node_id: str | None) -> str | None: ...


def parse_execute_body(body: bytes) -> tuple[Command, str | None, float | None]:
    """Validate an execute body; raises ValueError with a message fit for a 400."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
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
        except InvalidCommandError as exc:
            return error(400, str(exc))
        except NoLeaderError as exc:
            return error(503, str(exc), leader=node.command_address_of(exc.leader))
        return Response(
            200, {"result": outcome.result, "error": outcome.error, "index": outcome.index}
        )

    return {("POST", "/v1/execute"): execute}
