"""A client for a node's command and monitor ports (what ``tsc`` and scripts use).

Errors are translated: an unreachable node is :class:`NodeUnreachableError`, a 403 is
:class:`NotAuthorizedError`, a 503 is :class:`NoLeaderError`, a 400/413 is
:class:`InvalidCommandError`. A state-machine error is a normal result (``CommandResult.error``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import httpx

from .address import NodeAddress
from .errors import (
    ClusterError,
    CommandTimeoutError,
    InvalidCommandError,
    InvalidJSONError,
    NodeUnreachableError,
    NoLeaderError,
    NotAuthorizedError,
    TsconsensusError,
)
from .safejson import loads
from .types import JSON, CommandResult

SHA256_HEADER = "X-Snapshot-Sha256"
"""Names the SHA-256 (hex) of a backup sent as raw bytes."""


UNIX_PREFIX = "unix:"
"""``unix:/path/admin.sock`` names a node's local admin socket instead of a TCP port."""


def is_admin_socket(address: str) -> bool:
    """True when ``address`` (as :class:`NodeClient` takes it) names a node's local admin
    socket (``unix:PATH``), False for ``host:port`` or a URL. Checks the form only."""
    return address.startswith(UNIX_PREFIX)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the process (building one reads the CA bundle:
    tens of milliseconds, which a dashboard asking several nodes a second would pay again and
    again). The ports speak plain HTTP; it serves only ``https://`` URLs given by the caller."""
    return httpx.create_ssl_context()


def new_request_id() -> str:
    """A fresh request id (random, 32 hex digits) for :meth:`NodeClient.execute`."""
    return uuid.uuid4().hex


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text page (comments and malformed lines skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")  # label values may hold spaces; values do not
        try:
            samples[series] = float(value)
        except ValueError:
            continue
    return samples


def _base_url(address: str) -> str:
    """``http://host:port`` for ``host:port`` (validated) or a URL (kept as given)."""
    if address.startswith(("http://", "https://")):
        return address
    if is_admin_socket(address):
        return "http://local-admin"
    return f"http://{NodeAddress.parse(address)}"


class NodeClient:
    """Talks to one node's port at ``address`` (``host:port``, a URL, or ``unix:PATH`` for a
    node's admin socket). Blocking, reusable.

    Raises :class:`InvalidAddressError` for an ``address`` that is neither. Answers are decoded
    with the same nesting bound as requests, so a hostile node cannot crash the client.

    ``source_address`` binds the client's side of the connection, so that a ``tsc`` running on
    a node connects *as that node* (the ports authorize by source address).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        source_address: str | None = None,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _base_url(address)
        if transport is None and is_admin_socket(address):
            self.base_url = address  # in messages: which socket
            transport = httpx.HTTPTransport(uds=address[len(UNIX_PREFIX) :], retries=0)
        if transport is None:
            transport = httpx.HTTPTransport(
                local_address=source_address,
                retries=0,
                verify=_tls_context(),
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            )
        self._http = httpx.Client(
            base_url=_base_url(address),
            timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        """Send one request; return the decoded JSON body of a 200, raise for anything else."""
        response = self._send(method, path, body, timeout)
        try:
            data = loads(response.content, what=f"the answer of {self.base_url}{path}")
        except InvalidJSONError as exc:
            if response.status_code == 200:
                raise TsconsensusError(str(exc)) from None
            data = {"error": response.text[:200]}
        if response.status_code == 200:
            return data
        self._raise_for(response.status_code, data, path)

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        timeout: float | None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        content: bytes | None = None
        if raw is not None:
            content, headers = raw, {"Content-Type": "application/octet-stream", **(headers or {})}
        elif body is not None:
            content, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NodeUnreachableError(f"cannot reach {self.base_url}: {exc}") from None
        except httpx.TimeoutException as exc:
            raise NodeUnreachableError(
                f"{self.base_url}{path}: no answer in time ({str(exc) or type(exc).__name__})",
                maybe_delivered=True,
            ) from None
        except httpx.HTTPError as exc:
            raise NodeUnreachableError(
                f"{self.base_url}{path}: the connection failed before an answer "
                f"({str(exc) or type(exc).__name__})",
                maybe_delivered=True,
            ) from None
        return response

    def _raise_for(self, status: int, data: Any, path: str) -> NoReturn:
        message = data.get("error", "") if isinstance(data, dict) else str(data)
        if status == 403:
            raise NotAuthorizedError(f"{self.base_url} refused this client: {message}")
        if status == 409:
            raise ClusterError(f"{self.base_url}: {message}")
        if status == 503:
            leader = data.get("leader") if isinstance(data, dict) else None
            request_id = data.get("request_id") if isinstance(data, dict) else None
            raise NoLeaderError(
                f"{self.base_url}: {message}",
                leader=leader,
                request_id=request_id if isinstance(request_id, str) else None,
            )
        if status in (400, 413):
            raise InvalidCommandError(f"{self.base_url} rejected the request: {message}")
        raise TsconsensusError(f"{self.base_url}{path}: HTTP {status}: {message}")

    def execute(
        self,
        name: str,
        args: JSON = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """``POST /v1/execute``; the node forwards to the leader itself.

        Without a ``request_id`` the client makes one up (:func:`new_request_id`), so that an
        unknown outcome always names the id to retry with: :class:`NoLeaderError` (503, or
        :class:`CommandTimeoutError` when the node was reached but did not answer)
        carries it as ``request_id``; retrying with it applies the command at most once.
        """
        request_id = request_id or new_request_id()
        body: dict[str, Any] = {"name": name, "args": args, "request_id": request_id}
        if timeout is not None:
            body["timeout_s"] = timeout
        http_timeout = None if timeout is None else timeout + 5.0
        try:
            data = self.request("POST", "/v1/execute", body, timeout=http_timeout)
        except NoLeaderError as exc:
            if exc.request_id is None:
                exc.request_id = request_id
            raise
        except NodeUnreachableError as exc:
            if not exc.maybe_delivered:
                raise
            raise CommandTimeoutError(
                f"{exc}; the command may or may not have been applied",
                request_id=request_id,
            ) from None
        return CommandResult(data.get("result"), data.get("error"), int(data.get("index", 0)))

    def status(self) -> dict[str, Any]:
        """``GET /v1/status`` of a monitor port."""
        data: dict[str, Any] = self.request("GET", "/v1/status")
        return data

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` of a monitor port, as ``{series: value}``: each sample's name with
        its labels as the page writes them (``tsc_commands_total{name="set"}``)."""
        response = self._send("GET", "/metrics", None, None)
        if response.status_code != 200:
            self._raise_for(response.status_code, {"error": response.text[:200]}, "/metrics")
        return parse_metrics(response.text)

    def snapshot(self, timeout: float = 60.0) -> tuple[int, bytes]:
        """``GET /v1/snapshot``: (log index covered, the state machine's snapshot bytes)."""
        response = self._send("GET", "/v1/snapshot", None, timeout)
        return self._snapshot_from(response)

    def _snapshot_from(self, response: httpx.Response) -> tuple[int, bytes]:
        if response.status_code != 200:
            try:
                data = loads(response.content)
            except InvalidJSONError:
                data = {"error": response.text[:200]}
            self._raise_for(response.status_code, data, "/v1/snapshot")
        data_bytes = response.content
        expected = response.headers.get("X-Tsc-Sha256", "")
        if hashlib.sha256(data_bytes).hexdigest() != expected:
            raise TsconsensusError(f"{self.base_url}: snapshot checksum mismatch")
        return int(response.headers.get("X-Tsc-Index", "0")), data_bytes

    def peers(self) -> list[dict[str, Any]]:
        """``GET /v1/peers`` of a monitor port."""
        data = self.request("GET", "/v1/peers")
        peers: list[dict[str, Any]] = data["peers"]
        return peers

    def join(self, node_id: str) -> list[str]:
        """``POST /v1/join`` on a command port: add ``node_id`` (the caller) to the cluster."""
        data = self.request("POST", "/v1/join", {"id": node_id})
        return [str(m) for m in data["members"]]

    def remove_member(self, node_id: str) -> list[str]:
        """``POST /v1/members/remove`` on a command port (forwarded to the leader)."""
        data = self.request("POST", "/v1/members/remove", {"id": node_id})
        return [str(m) for m in data["members"]]

    def restore_snapshot(
        self, data: bytes, *, sha256: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """``POST /v1/snapshot/restore``: replace the state on every node with ``data`` (the
        bytes of a state machine snapshot, sent as they are). ``sha256`` defaults to
        ``data``'s own digest."""
        headers = {SHA256_HEADER: sha256 or hashlib.sha256(data).hexdigest()}
        answer = self._bytes_request("/v1/snapshot/restore", data, headers, timeout)
        return CommandResult(answer.get("result"), answer.get("error"), int(answer.get("index", 0)))

    def stage_backup(self, data: bytes, sha256: str, timeout: float | None = None) -> None:
        """``POST /v1/snapshot/stage``: keep ``data`` on that node for a coming restore."""
        self._bytes_request("/v1/snapshot/stage", data, {SHA256_HEADER: sha256}, timeout)

    def staged_backup(self, sha256: str, timeout: float | None = None) -> bytes | None:
        """``GET /v1/snapshot/staged``: a backup that node staged, or None if it has not."""
        path = "/v1/snapshot/staged"
        response = self._send("GET", path, None, timeout, params={"sha256": sha256})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._raise_for(response.status_code, {"error": response.text[:200]}, path)
        return response.content

    def _bytes_request(
        self, path: str, data: bytes, headers: dict[str, str], timeout: float | None
    ) -> Any:
        response = self._send("POST", path, None, timeout, raw=data, headers=headers)
        try:
            answer = loads(response.content, what=f"the answer of {self.base_url}{path}")
        except InvalidJSONError as exc:
            if response.status_code == 200:
                raise TsconsensusError(str(exc)) from None
            answer = {"error": response.text[:200]}
        if response.status_code != 200:
            self._raise_for(response.status_code, answer, path)
        return answer

    def transfer_leadership(self, to: str | None = None) -> str:
        """``POST /v1/leader/transfer``: the new leader, as ``id`` or ``id (host:port)``."""
        data = self.request("POST", "/v1/leader/transfer", {"to": to})
        leader, address = str(data["leader"]), data.get("leader_address")
        return leader if not address or address == leader else f"{leader} ({address})"

    def stop_node(self) -> None:
        """``POST /v1/node/stop`` (only allowed from the node's own address)."""
        self.request("POST", "/v1/node/stop", {})

    def snapshot_info(self, timeout: float = 60.0) -> tuple[int, int, bytes]:
        """Like :meth:`snapshot`, with the term: (index, term, bytes)."""
        response = self._send("GET", "/v1/snapshot", None, timeout)
        index, data = self._snapshot_from(response)
        return index, int(response.headers.get("X-Tsc-Term", "0")), data

    def ready(self) -> bool:
        """``GET /readyz``: True when the node knows a leader and has caught up."""
        try:
            self.request("GET", "/readyz")
        except NoLeaderError:
            return False
        return True


class PeerClients:
    """The clients a node keeps for its peers' command ports (joins, forwarded requests).

    One :class:`NodeClient` per peer address, reused across calls, each keeping at most
    ``pool_size`` connections (``command.pool_size``) and giving up on a connection attempt
    after ``connect_timeout_s`` (``command.connect_timeout_s``). ``transport(pool_size)``, if
    given, makes each client's connections (userspace mode: dialled through tailscaled).
    Thread-safe.
    """

    def __init__(
        self,
        *,
        source_address: str | None,
        pool_size: int,
        connect_timeout_s: float,
        timeout_s: float,
        transport: Callable[[int], httpx.BaseTransport] | None = None,
    ) -> None:
        self._source = source_address
        self._transport = transport
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout_s
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._clients: dict[str, NodeClient] = {}

    def get(self, address: str) -> NodeClient:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = NodeClient(
                    address,
                    timeout=self._timeout,
                    source_address=self._source,
                    connect_timeout=self._connect_timeout,
                    max_connections=self._pool_size,
                    transport=self._transport(self._pool_size) if self._transport else None,
                )
                self._clients[address] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
