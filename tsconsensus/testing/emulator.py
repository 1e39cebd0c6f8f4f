"""A tailscaled LocalAPI emulator: a real HTTP server on a unix socket.

It serves the JSON shapes tailscaled serves (DESIGN section 7) for ``GET /localapi/v0/status``
and ``GET /localapi/v0/whois?addr=IP:PORT``, and the ``POST /localapi/v0/dial`` upgrade (101,
then the socket is a stream to the peer), for one "self" node and any number of peers, and
lets a test change the tailnet while it runs: add nodes, tag and untag them, take them offline,
stop the backend, and map userspace-networking sources (``127.0.0.1:PORT``) to peers.

    emu = LocalAPIEmulator(socket_path, self_node=EmulatedNode("n1", ["100.64.0.1"], ["tag:db"]))
    emu.start()
    emu.add(EmulatedNode("n2", ["100.64.0.2"], ["tag:db"]))
    emu.set_tags("n2", [])            # untagged: the Tags key disappears, as in tailscaled
    emu.stop()

A node with a ``wire`` address plays userspace-networking mode (status ``TUN: false``; peers'
connections arrive on the host's 127.0.0.1; see :mod:`.emulator_netstack`). Extra ``POST``
endpoints (a fake tailscaled's ``start``) are added through ``post_handlers``.

Like tailscaled, it rejects requests whose Host is not ``local-tailscaled.sock`` and requests
that carry an Origin or Referer header (403).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..tailnet import normalize_ip
from .emulator_netstack import Netstack, enter_netns, splice

HOST = "local-tailscaled.sock"


@dataclass
class EmulatedNode:
    """One tailnet node as the emulator reports it."""

    hostname: str
    addresses: Sequence[str]
    tags: Sequence[str] = ()
    online: bool = True
    node_id: str = ""
    os: str = "linux"
    tailnet: str = "example.ts.net"
    extra: dict[str, Any] = field(default_factory=dict)
    wire: str = ""
    """``ip:port`` of this host's emulated WireGuard: set, the host plays userspace mode."""

    def __post_init__(self) -> None:
        if not self.node_id:
            digest = hashlib.sha256(self.hostname.encode()).hexdigest()
            self.node_id = f"n{int(digest[:12], 16) % 10**12:012d}CNTRL"

    def peer_status(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ID": self.node_id,
            "PublicKey": f"nodekey:{self.node_id.lower():0<64}"[:72],
            "HostName": self.hostname,
            "DNSName": f"{self.hostname}.{self.tailnet}.",
            "OS": self.os,
            "UserID": 1,
            "TailscaleIPs": list(self.addresses),
            "Online": self.online,
            "Active": self.online,
            "RxBytes": 0,
            "TxBytes": 0,
            "LastSeen": "0001-01-01T00:00:00Z",
            **self.extra,
        }
        if self.tags:  # tailscaled omits the key for untagged nodes
            data["Tags"] = list(self.tags)
        return data

    def whois_node(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ID": int(hashlib.sha256(self.node_id.encode()).hexdigest()[:8], 16),
            "StableID": self.node_id,
            "Name": f"{self.hostname}.{self.tailnet}.",
            "Addresses": [f"{a}/32" if ":" not in a else f"{a}/128" for a in self.addresses],
            "Online": self.online,
            "Hostinfo": {"Hostname": self.hostname, "OS": self.os},
        }
        if self.tags:
            data["Tags"] = list(self.tags)
        return data


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that goes away mid-request (a node killed by a test) is what real
        # tailscaled sees all the time: not worth a traceback on stderr. Anything else is.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class EmulatedTailnet:
    """The nodes of one tailnet, shared by the emulators of its hosts (one per node).

    Changing a node here (tags, online) changes what every host's tailscaled reports.
    """

    def __init__(self, nodes: Sequence[EmulatedNode] = ()) -> None:
        self.lock = threading.RLock()
        self.nodes: dict[str, EmulatedNode] = {n.hostname: n for n in nodes}

    def add(self, node: EmulatedNode) -> None:
        with self.lock:
            self.nodes[node.hostname] = node

    def remove(self, hostname: str) -> None:
        with self.lock:
            self.nodes.pop(hostname, None)

    def set_tags(self, hostname: str, tags: Sequence[str]) -> None:
        with self.lock:
            self.nodes[hostname].tags = list(tags)

    def set_online(self, hostname: str, online: bool) -> None:
        with self.lock:
            self.nodes[hostname].online = online

    def emulator(self, hostname: str, socket_path: str | Path) -> LocalAPIEmulator:
        """The tailscaled of host ``hostname`` (not started)."""
        return LocalAPIEmulator(socket_path, self.nodes[hostname], tailnet=self)


class LocalAPIEmulator:
    """The fake tailscaled of one host. Thread-safe; every change shows in the next request.

    Its peers are the other nodes of ``tailnet`` (a private one if not given).
    """

    def __init__(
        self,
        socket_path: str | Path,
        self_node: EmulatedNode,
        *,
        tailnet: EmulatedTailnet | None = None,
        netns: str | None = None,
        socks5: str = "",
    ) -> None:
        self.socket_path = str(socket_path)
        self.netns = netns
        self.socks5 = socks5
        """``ip:port`` of a SOCKS5 proxy to serve (tailscaled's ``--socks5-server``), or ""."""
        self.tailnet = tailnet or EmulatedTailnet()
        self.tailnet.add(self_node)
        self._lock = self.tailnet.lock
        self._self = self_node
        self._userspace: dict[str, str] = {}  # "127.0.0.1:PORT" -> hostname
        self.backend_state = "Running"
        self.delay_s = 0.0
        """Seconds every answer waits: plays a slow or overloaded tailscaled."""
        self.requests = 0
        self.userspace = bool(self_node.wire)
        """Plays userspace-networking mode (status ``TUN: false``); set by a wire address."""
        self.dials = 0
        """``dial`` upgrades answered with 101."""
        self.health: list[str] = []
        self.post_handlers: dict[str, Callable[[bytes], tuple[int, Any]]] = {}
        self.netstack = Netstack(
            wire=self_node.wire,
            own_address=self_node.addresses[0] if self_node.addresses else "",
            netns=netns,
            sender_of=self._sender_of,
            register=self.map_userspace,
            resolve=self._wire_of,
        )
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _sender_of(self, wire_ip: str) -> str | None:
        with self._lock:
            for node in self.tailnet.nodes.values():
                if node.wire and node.wire.rpartition(":")[0] == wire_ip:
                    return node.hostname
        return None

    def _wire_of(self, ip: str) -> str | None:
        with self._lock:
            for node in self.tailnet.nodes.values():
                if ip in node.addresses:
                    return node.wire
        return None

    @property
    def _peers(self) -> dict[str, EmulatedNode]:
        return {h: n for h, n in self.tailnet.nodes.items() if n is not self._self}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalAPIEmulator:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if emulator.delay_s:
                    time.sleep(emulator.delay_s)
                status, body = emulator._handle(self.path, dict(self.headers.items()))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                lower = {k.lower(): v for k, v in self.headers.items()}
                path = urlsplit(self.path).path
                if path == "/localapi/v0/dial" and lower.get("host") == HOST:
                    emulator._serve_dial(self, lower)
                    return
                length = int(lower.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer = emulator._handle_post(path, lower, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = _UnixHTTPServer(self.socket_path, Handler)
        os.chmod(self.socket_path, 0o666)
        server = self._server

        def serve() -> None:
            if self.netns:  # handler threads it starts are in the namespace too
                enter_netns(self.netns)
            server.serve_forever()

        self._thread = threading.Thread(target=serve, name="localapi-emulator", daemon=True)
        self._thread.start()
        try:
            self.netstack.start()
            if self.socks5:
                self.netstack.start_socks5(self.socks5)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.netstack.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def __enter__(self) -> LocalAPIEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- changing the tailnet ---------------------------------------------------------------

    def add(self, node: EmulatedNode) -> None:
        self.tailnet.add(node)

    def remove(self, hostname: str) -> None:
        self.tailnet.remove(hostname)

    def _node(self, hostname: str) -> EmulatedNode:
        return self.tailnet.nodes[hostname]

    def set_tags(self, hostname: str, tags: Sequence[str]) -> None:
        self.tailnet.set_tags(hostname, tags)

    def set_online(self, hostname: str, online: bool) -> None:
        self.tailnet.set_online(hostname, online)

    def map_userspace(self, source: str, hostname: str) -> None:
        """Userspace networking: connections from ``source`` (``127.0.0.1:PORT``) are this
        peer's (tailscaled proxies them in from loopback)."""
        with self._lock:
            self._userspace[source] = hostname

    # -- serving ----------------------------------------------------------------------------

    def _handle_post(self, path: str, lower: dict[str, str], body: bytes) -> tuple[int, Any]:
        if lower.get("host") != HOST or "origin" in lower or "referer" in lower:
            return 403, {"error": "invalid localapi request"}
        handler = self.post_handlers.get(path)
        if handler is None:
            return 404, {"error": f"no such endpoint {path}"}
        with self._lock:
            self.requests += 1
        return handler(body)

    def _serve_dial(self, handler: BaseHTTPRequestHandler, lower: dict[str, str]) -> None:
        """``POST dial`` with ``Upgrade: ts-dial``: 101, then the socket is the peer stream."""

        def refuse(status: int, message: str) -> None:
            payload = json.dumps({"error": message}).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(payload)
            handler.close_connection = True

        if lower.get("upgrade") != "ts-dial" or "upgrade" not in lower.get("connection", ""):
            refuse(400, "bad dial request: want Upgrade: ts-dial")
            return
        host, port_text = lower.get("dial-host", ""), lower.get("dial-port", "")
        if not host or not port_text.isdigit() or lower.get("dial-network", "tcp") != "tcp":
            refuse(400, "bad dial request: Dial-Host, Dial-Port (and Dial-Network tcp)")
            return
        with self._lock:
            self.requests += 1
        try:
            out = self.netstack.dial(host, int(port_text), timeout=5.0)
        except OSError as exc:
            refuse(502, f"dial {host}:{port_text}: {exc}")
            return
        with self._lock:
            self.dials += 1
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "ts-dial")
        handler.send_header("Connection", "upgrade")
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        splice(handler.connection, out)

    def _handle(self, target: str, headers: dict[str, str]) -> tuple[int, Any]:
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("host") != HOST or "origin" in lower or "referer" in lower:
            return 403, {"error": "invalid localapi request"}
        url = urlsplit(target)
        with self._lock:
            self.requests += 1
            if url.path == "/localapi/v0/status":
                return 200, self._status()
            if url.path == "/localapi/v0/whois":
                addr = (parse_qs(url.query).get("addr") or [""])[0]
                return self._whois(addr)
        return 404, {"error": f"no such endpoint {url.path}"}

    def _status(self) -> dict[str, Any]:
        me = self._self.peer_status()
        return {
            "Version": "1.90.0-emulated",
            "TUN": not self.userspace,
            "BackendState": self.backend_state,
            "Health": list(self.health),
            "TailscaleIPs": list(self._self.addresses),
            "Self": me,
            "Peer": {
                f"nodekey:{p.node_id.lower():0<64}"[:72]: p.peer_status()
                for p in self._peers.values()
            },
            "User": {"1": {"ID": 1, "LoginName": "tagged-devices", "DisplayName": "tagged"}},
            "CurrentTailnet": {
                "Name": self._self.tailnet,
                "MagicDNSSuffix": self._self.tailnet,
                "MagicDNSEnabled": True,
            },
        }

    def _whois(self, addr: str) -> tuple[int, Any]:
        hostname = self._userspace.get(addr)
        node = None
        if hostname is not None:
            node = self.tailnet.nodes.get(hostname)
        else:
            ip = addr.rsplit(":", 1)[0].strip("[]")
            try:
                ip = normalize_ip(ip)
            except ValueError:
                return 400, {"error": f"invalid addr {addr!r}"}
            for candidate in self.tailnet.nodes.values():
                if ip in candidate.addresses:
                    node = candidate
                    break
        if node is None:
            return 404, {"error": "no match for IP:port"}
        return 200, {
            "Node": node.whois_node(),
            "UserProfile": {"ID": 1, "LoginName": "tagged-devices", "DisplayName": "tagged"},
            "CapMap": {},
        }
