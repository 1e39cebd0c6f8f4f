"""The emulator's networking: tailscaled's ``dial`` and, in userspace mode, its netstack.

Real tailscaled in userspace-networking mode owns the node's tailnet address inside its own
TCP/IP stack: the host has no 100.x address and no route to the tailnet. A peer's connection
to ``100.x:PORT`` is handed to ``127.0.0.1:PORT`` on the host (and ``whois`` of that loopback
source names the peer); a local process reaches a peer only through tailscaled (the LocalAPI
``dial`` upgrade, or its SOCKS5 proxy).

Here each emulated host that plays userspace mode has a *wire* address (``EmulatedNode.wire``,
``ip:port``), the stand-in for WireGuard: its :class:`Netstack` listens there. Dialling
``100.x:PORT`` sends the port over a connection from this host's wire address to the peer's;
the peer's netstack knows the sender by the wire source address, connects to
``127.0.0.1:PORT`` from a port it has just registered for ``whois``, answers one status byte
(0 = connected) and splices the two streams. The tailnet addresses themselves need exist on no
interface, so a node that dialled them directly would fail, as it would on a real host.

A host in TUN mode (no wire) dials directly, from its own tailnet address.

``netns``: the name of a network namespace (``ip netns``) this host lives in; every thread of
the netstack enters it before opening a socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..socks5 import recv_exactly

log = logging.getLogger("tsconsensus.testing.emulator")

_CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
CONNECTED, REFUSED = b"\x00", b"\x01"


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (for good: use a thread of its
    own; threads it starts are inside too). Raises :class:`OSError`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def split_wire(wire: str) -> tuple[str, int]:
    host, _, port = wire.rpartition(":")
    return host, int(port)


def splice(a: socket.socket, b: socket.socket, latency_s: float = 0.0) -> None:
    """Copy both ways until both sides are done, then close both (blocking; own thread).
    With ``latency_s``, every byte arrives that much later in each direction (a delay line:
    the throughput is kept, only the time in flight grows)."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def delayed_pump(src: socket.socket, dst: socket.socket) -> None:
        line: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def deliver() -> None:
            while True:
                due, data = line.get()
                if not data:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    break
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=deliver, daemon=True)
        writer.start()
        try:
            while data := src.recv(65536):
                line.put((time.monotonic() + latency_s, data))
        except OSError:
            pass
        line.put((0.0, b""))
        writer.join()

    if latency_s > 0:
        pump = delayed_pump

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()
    a.close()
    b.close()


class Netstack:
    """One host's userspace networking (or plain TUN-mode dialling when ``wire`` is empty).

    ``sender_of(wire_ip)`` names the host whose wire address that is (or None);
    ``register(source, hostname)`` records that loopback ``source`` (``127.0.0.1:PORT``) is
    that host's connection, for ``whois``; ``resolve(tailnet_ip)`` gives a host's wire
    address (``ip:port``, or "" if it has none, or None if no such node).
    """

    def __init__(
        self,
        *,
        wire: str,
        own_address: str,
        netns: str | None,
        sender_of: Callable[[str], str | None],
        register: Callable[[str, str], None],
        resolve: Callable[[str], str | None],
        deliver_host: str = "127.0.0.1",
    ) -> None:
        self.wire, self.own_address, self.netns = wire, own_address, netns
        self._sender_of, self._register, self._resolve = sender_of, register, resolve
        self.deliver_host = deliver_host
        self._listener: socket.socket | None = None
        self._closed = False
        self.delivered = 0
        """Inbound tailnet connections handed to the host's loopback."""
        self.socks5_connections = 0
        """Connections made through the SOCKS5 proxy (:meth:`start_socks5`)."""
        self.latency_s = 0.0
        """One-way delay added to both directions of every connection delivered to this host
        (so a round trip to it takes twice this): plays a tailnet spanning continents."""
        self._socks: socket.socket | None = None

    def start(self) -> None:
        """Listen on the wire address (nothing in TUN mode). Raises :class:`OSError`."""
        if not self.wire:
            return
        self._listener = self._serve(self.wire, 128, "emulator-wire", self._inbound)

    def stop(self) -> None:
        self._closed = True
        for listener in (self._listener, self._socks):
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)
                listener.close()

    def _serve(
        self, address: str, backlog: int, name: str, handle: Callable[[socket.socket, str], None]
    ) -> socket.socket:
        """Listen at ``address`` (``ip:port``) on a thread ``name`` of its own, inside
        ``netns``, and give each connection and its source IP to ``handle`` on a new thread
        until :meth:`stop`. Returns the listener once it listens; raises :class:`OSError` if it
        cannot (:class:`TimeoutError` if the thread never says)."""
        ready = threading.Event()
        outcome: list[socket.socket | BaseException] = []

        def run() -> None:
            # setns moves only the calling thread, hence a thread of its own for the listener
            try:
                if self.netns:
                    enter_netns(self.netns)
                listener = socket.create_server(split_wire(address), backlog=backlog)
            except BaseException as exc:
                outcome.append(exc)
                ready.set()
                return
            outcome.append(listener)
            ready.set()
            while not self._closed:
                try:
                    conn, source = listener.accept()
                except OSError:
                    return
                threading.Thread(target=handle, args=(conn, source[0]), daemon=True).start()

        threading.Thread(target=run, name=name, daemon=True).start()
        if not ready.wait(10):
            raise TimeoutError(f"{name} did not start listening at {address}")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _inbound(self, conn: socket.socket, wire_ip: str) -> None:
        """A peer's netstack hands us a connection: deliver it to our loopback."""
        try:
            conn.settimeout(10)
            head = b""
            while not head.endswith(b"\n") and len(head) < 16:
                chunk = conn.recv(1)
                if not chunk:
                    raise OSError("wire closed")
                head += chunk
            port = int(head)
            sender = self._sender_of(wire_ip)
            if sender is None:
                raise OSError(f"unknown wire sender {wire_ip}")
            local = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            local.bind((self.deliver_host, 0))
            self._register(f"{self.deliver_host}:{local.getsockname()[1]}", sender)
            try:
                local.settimeout(5)
                local.connect((self.deliver_host, port))
                local.settimeout(None)
            except OSError:
                local.close()
                conn.sendall(REFUSED)
                raise
            conn.sendall(CONNECTED)
            conn.settimeout(None)
            self.delivered += 1
        except (OSError, ValueError) as exc:
            log.debug("wire connection from %s dropped: %s", wire_ip, exc)
            conn.close()
            return
        splice(conn, local, self.latency_s)

    # -- tailscaled's SOCKS5 proxy (--socks5-server) ---------------------------------------

    def start_socks5(self, address: str) -> None:
        """Serve a SOCKS5 proxy (no auth, CONNECT) at ``address`` (``ip:port``) that dials
        like :meth:`dial`. Raises :class:`OSError` if it cannot listen."""
        self._socks = self._serve(address, 64, "emulator-socks5", self._socks_client)

    def _socks_client(self, conn: socket.socket, _source_ip: str) -> None:
        try:
            conn.settimeout(10)
            head = recv_exactly(conn, 2)
            recv_exactly(conn, head[1])  # the methods offered; "no auth" is what we take
            conn.sendall(b"\x05\x00")
            ver, cmd, _, atyp = recv_exactly(conn, 4)
            if atyp == 1:
                host = socket.inet_ntop(socket.AF_INET, recv_exactly(conn, 4))
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, recv_exactly(conn, 16))
            else:
                host = recv_exactly(conn, recv_exactly(conn, 1)[0]).decode("idna")
            port = int.from_bytes(recv_exactly(conn, 2), "big")
            if ver != 5 or cmd != 1:
                conn.sendall(b"\x05\x07\x00\x01" + bytes(6))
                raise OSError("only CONNECT is served")
            try:
                out = self.dial(host, port, timeout=5)
            except OSError:
                conn.sendall(b"\x05\x05\x00\x01" + bytes(6))
                raise
            conn.sendall(b"\x05\x00\x00\x01" + bytes(6))
            conn.settimeout(None)
            self.socks5_connections += 1
        except OSError as exc:
            log.debug("SOCKS5 request dropped: %s", exc)
            conn.close()
            return
        splice(conn, out)

    def dial(self, host: str, port: int, timeout: float) -> socket.socket:
        """A stream to tailnet peer ``host:port`` (what tailscaled's ``dial`` does). Raises
        :class:`OSError`. Called on an emulator thread (already in ``netns``)."""
        wire = self._resolve(host)
        if wire is None:
            raise ConnectionRefusedError(f"no tailnet node has address {host}")
        if not self.wire or not wire:  # TUN mode: the tailnet addresses are routable
            return socket.create_connection(
                (host, port), timeout=timeout, source_address=(self.own_address, 0)
            )
        sock = socket.create_connection(
            split_wire(wire), timeout=timeout, source_address=(split_wire(self.wire)[0], 0)
        )
        try:
            sock.sendall(b"%d\n" % port)
            if sock.recv(1) != CONNECTED:
                raise ConnectionRefusedError(f"{host}:{port} refused the connection")
            sock.settimeout(None)
            return sock
        except BaseException:
            sock.close()
            raise
