"""How a node reaches its peers and where it listens: TUN mode or userspace networking.

In TUN mode (the normal one) the node's tailnet address is on a local interface: ports listen
there and outgoing connections leave from it, so peers authorize them by source address.

In userspace-networking mode (tailscaled ``--tun=userspace-networking``: containers, hosts
without ``/dev/net/tun``) the host has no tailnet address. tailscaled hands a peer's
connection to ``127.0.0.1`` on the same port (``whois`` of that source names the peer), and a
local process reaches a peer only through tailscaled: the LocalAPI ``dial`` upgrade. So the
node listens on 127.0.0.1 only and dials every Raft, command and monitor connection through
the tailnet backend's ``dial``.

The mode is asked of tailscaled (its status says whether it uses a TUN device) unless
``tailnet.mode`` forces it: :func:`detect_userspace` asks, :func:`networking` decides once, at
start, and a caller that has already decided passes its answer on instead of asking again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpcore
import httpx

from .config import Config
from .errors import ConfigError, TailnetError
from .tailnet import Peer, Tailnet

log = logging.getLogger("tsconsensus")

LOOPBACK = "127.0.0.1"
RAFT_READ_LIMIT = 1 << 20
"""The stream buffer of a dialled Raft connection (as the transport's own dial)."""
AsyncDial = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(frozen=True)
class Networking:
    """Where the node listens and how it dials, decided at start.

    ``raft_dial`` is None in TUN mode (the transport's own dial, bound to ``listen_host``);
    ``http_transport(pool_size)`` is None in TUN mode (plain httpx, bound to the address).
    """

    userspace: bool
    listen_host: str
    raft_dial: AsyncDial | None = None
    http_transport: Callable[[int], httpx.BaseTransport] | None = None
    resolve_peer: Callable[[str, int], Awaitable[tuple[str, int]]] | None = None
    """Names an HTTP connection's peer by its tailnet address (userspace mode)."""


def detect_userspace(tailnet: Tailnet, config: Config) -> bool:
    """Whether the node runs in userspace networking: as ``tailnet.mode`` forces it, else as
    the tailnet reports (one question to tailscaled; a backend that cannot tell is TUN mode).
    Raises :class:`TailnetError` if tailscaled cannot say its mode."""
    if config.tailnet.mode != "auto":
        return config.tailnet.mode == "userspace"
    detect = getattr(tailnet, "userspace", None)
    return bool(detect()) if callable(detect) else False


def networking(
    tailnet: Tailnet, me: Peer, config: Config, *, userspace: bool | None = None
) -> Networking:
    """The node's networking. ``userspace``: the mode when the caller has already decided it
    (it then wins over ``tailnet.mode``, and tailscaled is not asked); None decides it with
    :func:`detect_userspace`. Raises :class:`ConfigError` if userspace mode is forced on a
    backend that cannot dial, :class:`TailnetError` if tailscaled cannot say its mode."""
    mode = config.tailnet.mode
    can_dial = hasattr(tailnet, "dial_async") and hasattr(tailnet, "dial")
    if userspace is None:
        userspace = detect_userspace(tailnet, config)
    if not userspace:
        return Networking(False, me.address)
    if not can_dial:
        raise ConfigError(
            "tailnet.mode",
            mode,
            f"userspace mode needs a backend that dials through "
            f"tailscaled (localapi or managed), not {config.tailnet.backend}",
        )
    log.info("userspace networking: listening on %s, dialling peers through tailscaled", LOOPBACK)
    dial_async = typing.cast(
        AsyncDial,
        functools.partial(tailnet.dial_async, limit=RAFT_READ_LIMIT),  # type: ignore[attr-defined]
    )
    dial_sync = typing.cast(Callable[[str, int, float], socket.socket], tailnet.dial)  # type: ignore[attr-defined]

    def transport(pool_size: int) -> httpx.BaseTransport:
        return TailnetHTTPTransport(dial_sync, max_connections=pool_size)

    return Networking(True, LOOPBACK, dial_async, transport, _peer_resolver(tailnet))


def _peer_resolver(tailnet: Tailnet) -> Callable[[str, int], Awaitable[tuple[str, int]]]:
    """For the HTTP routes: a loopback source named by its tailnet address (``whois``, off the
    loop); anything the tailnet does not know stays as it is."""

    def lookup(ip: str, port: int) -> tuple[str, int]:
        try:
            peer = tailnet.whois(ip, port)
        except TailnetError:
            return ip, port
        return (peer.address, port) if peer is not None and peer.addresses else (ip, port)

    async def resolve(ip: str, port: int) -> tuple[str, int]:
        return await asyncio.get_running_loop().run_in_executor(None, lookup, ip, port)

    return resolve


# -- httpx over a dialled stream -------------------------------------------------------------


class _SocketStream(httpcore.NetworkStream):
    """httpcore's view of a connected socket (one that tailscaled dialled)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "socket":
            return self._sock
        return None


class _DialBackend(httpcore.NetworkBackend):
    def __init__(self, dial: Callable[[str, int, float], socket.socket]) -> None:
        self._dial = dial

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            return _SocketStream(self._dial(host, port, timeout or 10.0))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, TailnetError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: typing.Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


class TailnetHTTPTransport(httpx.BaseTransport):
    """An httpx transport whose connections tailscaled dials (``dial(host, port, timeout)``),
    pooled like httpx's own (at most ``max_connections``). Thread-safe; errors are httpx's."""

    def __init__(
        self, dial: Callable[[str, int, float], socket.socket], *, max_connections: int
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=_DialBackend(dial),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, typing.Iterable)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except Exception as exc:
            for core_type, httpx_type in _ERRORS:
                if isinstance(exc, core_type):
                    raise httpx_type(str(exc)) from exc
            raise
        assert isinstance(response.stream, typing.Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
