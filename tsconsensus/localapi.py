"""tailscaled's LocalAPI: the one module that talks to tailscaled.

:class:`LocalAPIClient` speaks HTTP over tailscaled's unix socket (``GET status``,
``GET whois``, the ``dial`` upgrade, ``POST start`` for a managed node's login) and returns
typed records; :class:`LocalAPITailnet` is the :class:`Tailnet`
backend built on it. Errors are :class:`TailnetError` with a message that says what to do.

Socket paths: Linux ``/var/run/tailscale/tailscaled.sock`` (the default); macOS with the
open-source ``tailscaled``: ``/var/run/tailscaled.socket``. The macOS app store and standalone
GUI builds do not expose a unix socket (they use a TCP port with a token), which this client
does not support.

Caching: the status is reused for ``status_ttl_s`` (1 s) so that authorizing a burst of
connections costs one LocalAPI call; whois answers are kept per ``ip:port`` for
``whois_ttl_s`` (30 s), and "no such peer" answers for a much shorter time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from . import socks5
from .address import bracketed
from .errors import TailnetError
from .tailnet import Peer, normalize_ip, sort_addresses

HOST = "local-tailscaled.sock"
_NEGATIVE_TTL_S = 1.0
# In userspace-networking mode the mapping of a fresh inbound connection lands in tailscaled
# just after the dial: a whois 404 is retried for this long.
_WHOIS_RETRY_S = 0.5


@dataclass(frozen=True)
class TailnetStatus:
    """The parts of ``GET /localapi/v0/status`` the cluster uses."""

    backend_state: str
    self_peer: Peer
    peers: tuple[Peer, ...]
    tailnet_name: str = ""
    tun: bool = True
    """False when tailscaled runs in userspace-networking mode (the status's ``TUN`` field)."""
    health: tuple[str, ...] = ()
    """tailscaled's health warnings (why a login failed, for one)."""


def _peer_from_status(data: dict[str, Any], is_self: bool) -> Peer:
    addresses = sort_addresses(data.get("TailscaleIPs") or ())
    host = data.get("HostName") or str(data.get("DNSName", "")).split(".", 1)[0]
    return Peer(
        id=str(data.get("ID", "")),
        hostname=str(host),
        addresses=addresses,
        tags=tuple(data.get("Tags") or ()),  # the key is absent on untagged nodes
        online=bool(data.get("Online", is_self)),
        is_self=is_self,
    )


def _peer_from_whois(data: dict[str, Any], self_id: str) -> Peer:
    node = data.get("Node") or {}
    hostinfo = node.get("Hostinfo") or {}
    node_id = str(node.get("StableID") or node.get("ID") or "")
    host = hostinfo.get("Hostname") or str(node.get("Name", "")).split(".", 1)[0]
    return Peer(
        id=node_id,
        hostname=str(host),
        addresses=sort_addresses(node.get("Addresses") or ()),
        tags=tuple(node.get("Tags") or ()),
        online=bool(node.get("Online", True)),
        is_self=node_id == self_id,
    )


class LocalAPIClient:
    """Blocking client for tailscaled's LocalAPI. Thread-safe.

    ``transport`` replaces the unix-socket transport (tests only).
    """

    def __init__(
        self,
        socket_path: str,
        *,
        timeout: float = 5.0,
        status_ttl_s: float = 1.0,
        whois_ttl_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._http = httpx.Client(
            transport=transport or httpx.HTTPTransport(uds=socket_path),
            base_url=f"http://{HOST}",
            headers={"Host": HOST},
            timeout=timeout,
        )
        self._status_ttl = status_ttl_s
        self._whois_ttl = whois_ttl_s
        self._lock = threading.Lock()
        self._status: tuple[float, TailnetStatus] | None = None
        self._whois: dict[str, tuple[float, Peer | None]] = {}

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self._http.get(f"/localapi/v0/{path}", params=params)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise TailnetError(
                f"cannot reach tailscaled at {self.socket_path} ({exc}); is tailscaled running "
                "and is tailnet.socket_path right?"
            ) from None
        except httpx.HTTPError as exc:
            raise TailnetError(f"tailscaled LocalAPI {path} failed: {exc}") from None

    def status(self, *, fresh: bool = False) -> TailnetStatus:
        """The tailnet as tailscaled sees it; raises if tailscaled is not ``Running``."""
        now = time.monotonic()
        with self._lock:
            cached = self._status
        if cached is not None and not fresh and now - cached[0] < self._status_ttl:
            return cached[1]
        status = self.raw_status(require_running=True)
        with self._lock:
            self._status = (now, status)
        return status

    def raw_status(self, *, require_running: bool = False) -> TailnetStatus:
        """``GET status`` now, uncached; whatever the backend state unless ``require_running``.
        Raises :class:`TailnetError` if tailscaled cannot be asked or answers oddly."""
        response = self._get("status")
        if response.status_code != 200:
            raise TailnetError(
                f"tailscaled refused status (HTTP {response.status_code}): {response.text[:200]}"
            )
        try:
            data = response.json()
            state = str(data.get("BackendState", ""))
            if state != "Running" and require_running:
                raise TailnetError(
                    f"tailscaled is not running (BackendState={state or 'unknown'}); "
                    "run 'tailscale up' first"
                )
            me = _peer_from_status(data.get("Self") or {}, is_self=True)
            peers = tuple(
                _peer_from_status(p, is_self=False) for p in (data.get("Peer") or {}).values()
            )
            tailnet = data.get("CurrentTailnet") or {}
            health = tuple(str(h) for h in (data.get("Health") or ()))
            tun = bool(data.get("TUN", True))  # absent in very old versions: assume TUN
        except TailnetError:
            raise
        except (ValueError, AttributeError, TypeError) as exc:
            raise TailnetError(f"tailscaled sent an unreadable status: {exc}") from None
        return TailnetStatus(state, me, peers, str(tailnet.get("Name", "")), tun, health)

    def whois(self, ip: str, port: int, *, patient: bool = True) -> Peer | None:
        """The tailnet node behind ``ip:port``, or ``None`` (tailscaled's 404).

        ``patient``: retry a 404 for up to half a second, since in userspace-networking mode
        the mapping of a fresh connection lands in tailscaled just after the dial.
        """
        key = f"{bracketed(ip)}:{port}"  # port 0 (any) is fine for tailscaled's whois
        now = time.monotonic()
        with self._lock:
            cached = self._whois.get(key)
        if cached is not None:
            ttl = self._whois_ttl if cached[1] is not None else _NEGATIVE_TTL_S
            if now - cached[0] < ttl:
                return cached[1]
        self_id = self.status().self_peer.id
        deadline = now + (_WHOIS_RETRY_S if patient else 0.0)
        while True:
            response = self._get("whois", {"addr": key})
            if response.status_code == 200:
                try:
                    peer: Peer | None = _peer_from_whois(response.json(), self_id)
                except (ValueError, AttributeError, TypeError) as exc:
                    raise TailnetError(f"tailscaled sent an unreadable whois: {exc}") from None
                break
            if response.status_code != 404:
                raise TailnetError(f"tailscaled refused whois {key} (HTTP {response.status_code})")
            if time.monotonic() >= deadline:
                peer = None
                break
            time.sleep(0.02)
        with self._lock:
            if len(self._whois) > 10_000:
                self._whois.clear()
            self._whois[key] = (time.monotonic(), peer)
        return peer


    # -- the dial upgrade ------------------------------------------------------------------

    def _dial_request(self, host: str, port: int) -> bytes:
        return (
            "POST /localapi/v0/dial HTTP/1.1\r\n"
            f"Host: {HOST}\r\n"
            "Connection: upgrade\r\n"
            "Upgrade: ts-dial\r\n"
            f"Dial-Host: {host}\r\n"
            f"Dial-Port: {port}\r\n"
            "Dial-Network: tcp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def _dial_refused(self, host: str, port: int, head: bytes) -> ConnectionRefusedError:
        line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        return ConnectionRefusedError(
            f"tailscaled at {self.socket_path} could not dial {host}:{port} ({line.strip()})"
        )

    def dial(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP stream to tailnet peer ``host:port`` through tailscaled (``POST dial`` with
        ``Upgrade: ts-dial``; tailscaled answers 101 and the socket becomes the stream).
        Blocking, any thread. Raises :class:`OSError` (``ConnectionRefusedError`` when
        tailscaled refused or could not dial, ``TimeoutError`` past ``timeout``)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(self._dial_request(host, port))
            head = bytearray()
            # one byte at a time: nothing after the 101 head may be read here (the peer may
            # speak first); a few hundred bytes, once per connection
            while not head.endswith(b"\r\n\r\n"):
                byte = sock.recv(1)
                if not byte or len(head) > 8192:
                    raise self._dial_refused(host, port, bytes(head) or b"connection closed")
                head += byte
            if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
                raise self._dial_refused(host, port, bytes(head))
            sock.settimeout(None)
            return sock
        except BaseException:
            sock.close()
            raise

    async def dial_async(
        self, host: str, port: int, *, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """:meth:`dial` for asyncio (the caller bounds it with its connect timeout): the
        stream's reader holds whatever the peer sent right after the 101. Raises
        :class:`OSError`."""
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=limit)
        try:
            writer.write(self._dial_request(host, port))
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise self._dial_refused(host, port, b"no answer") from exc
            if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
                raise self._dial_refused(host, port, head)
            return reader, writer
        except BaseException:
            writer.close()
            raise

    # -- a managed node's login ------------------------------------------------------------

    def start_login(self, auth_key: str, hostname: str, tags: tuple[str, ...]) -> None:
        """``POST start`` with the auth key and prefs (hostname, advertised tags, want
        running): what ``tailscale up --authkey --hostname --advertise-tags`` asks. Raises
        :class:`TailnetError` if tailscaled refuses the request itself."""
        body = {
            "AuthKey": auth_key,
            "UpdatePrefs": {
                "WantRunning": True,
                "Hostname": hostname,
                "AdvertiseTags": list(tags),
            },
        }
        try:
            response = self._http.post(
                "/localapi/v0/start",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TailnetError(f"cannot reach tailscaled at {self.socket_path}: {exc}") from None
        if response.status_code not in (200, 204):
            raise TailnetError(
                f"tailscaled refused the login (HTTP {response.status_code}): "
                f"{response.text.strip()[:200]}"
            )


class LocalAPITailnet:
    """The :class:`Tailnet` of the local tailscaled.

    ``whois`` first looks the source address up in the (cached) status, which is all TUN mode
    needs (the source is the peer's own 100.x address); only a source that is not a tailnet
    address (userspace networking shows peers as 127.0.0.1:PORT) costs a LocalAPI whois.
    """

    def __init__(
        self, socket_path: str, client: LocalAPIClient | None = None, *, socks5: str = ""
    ) -> None:
        self.client = client or LocalAPIClient(socket_path)
        self.socks5 = socks5
        """tailscaled's SOCKS5 proxy (``host:port``): if set, peers are dialled through it
        instead of the LocalAPI ``dial`` upgrade."""

    def self_peer(self) -> Peer:
        return self.client.status().self_peer

    def peers(self) -> list[Peer]:
        return list(self.client.status().peers)

    def userspace(self) -> bool:
        """True when tailscaled runs in userspace-networking mode (no TUN device): peers arrive
        from 127.0.0.1 and must be dialled through tailscaled."""
        return not self.client.status().tun

    async def dial_async(
        self, host: str, port: int, *, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to tailnet peer ``host:port`` through tailscaled (see the client; or its
        SOCKS5 proxy). Raises :class:`OSError`."""
        if self.socks5:
            return await socks5.connect_async(self.socks5, host, port, limit=limit)
        return await self.client.dial_async(host, port, limit=limit)

    def dial(self, host: str, port: int, timeout: float) -> socket.socket:
        """Blocking :meth:`dial_async`."""
        if self.socks5:
            return socks5.connect(self.socks5, host, port, timeout)
        return self.client.dial(host, port, timeout)

    def whois(self, ip: str, port: int, *, patient: bool = True) -> Peer | None:
        try:
            ip = normalize_ip(ip)
        except ValueError:
            return None
        status = self.client.status()
        for peer in (status.self_peer, *status.peers):
            if ip in peer.addresses:
                return peer
        return self.client.whois(ip, port, patient=patient)
