"""Userspace networking, piece by piece: the emulator's ``dial`` and netstack, the LocalAPI
client's dial (blocking and asyncio), mode detection, HTTP over dialled streams, and a real
node process in userspace mode with its admin socket (all on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tsconsensus as tsc
from tsconsensus.dialer import TailnetHTTPTransport, networking
from tsconsensus.localapi import LocalAPIClient, LocalAPITailnet
from tsconsensus.testing.cluster import node_command
from tsconsensus.testing.emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator

from .cli import CliResult, run_cli
from .helpers import eventually, free_port, tsc_until_ok

TAG = "tag:db"


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[tuple[LocalAPIEmulator, LocalAPIEmulator]]:
    """Hosts a and b in userspace mode; their wire is on 127.0.0.21/22, and their tailnet
    addresses (100.64.7.x) exist nowhere, as on a host without a TUN device."""
    tailnet = EmulatedTailnet()
    a = EmulatedNode("a", ["100.64.7.1"], [TAG], wire=f"127.0.0.21:{free_port('127.0.0.21')}")
    b = EmulatedNode("b", ["100.64.7.2"], [TAG], wire=f"127.0.0.22:{free_port('127.0.0.22')}")
    tailnet.add(a)
    tailnet.add(b)
    ea = tailnet.emulator("a", tmp_path / "a.sock").start()
    eb = tailnet.emulator("b", tmp_path / "b.sock").start()
    try:
        yield ea, eb
    finally:
        ea.stop()
        eb.stop()


def _exchange(dialer: LocalAPIClient | LocalAPITailnet, port: int, byte: bytes) -> bytes:
    """Dial the greeter on host b with ``dialer.dial_async``, send ``byte``, read its answer
    (within 10 s)."""

    async def exchange() -> bytes:
        reader, writer = await dialer.dial_async("100.64.7.2", port)
        writer.write(byte)
        data = await reader.readexactly(4)
        writer.close()
        return data

    return asyncio.run(asyncio.wait_for(exchange(), 10))


@contextlib.contextmanager
def greeter() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A server on 127.0.0.1 that speaks first (b"hi "), then echoes; records sources."""
    server = socket.create_server(("127.0.0.1", 0))
    sources: list[tuple[str, int]] = []

    def serve() -> None:
        while True:
            try:
                conn, addr = server.accept()
            except OSError:
                return
            sources.append(addr)
            with conn:
                conn.sendall(b"hi ")
                while data := conn.recv(1024):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1], sources
    finally:
        server.close()


def test_dial_reaches_the_peer_loopback_and_whois_names_the_dialler(
    two_hosts: tuple[LocalAPIEmulator, LocalAPIEmulator],
) -> None:
    ea, eb = two_hosts
    client_a = LocalAPIClient(ea.socket_path)
    with greeter() as (port, sources):
        sock = client_a.dial("100.64.7.2", port, timeout=5)
        with sock:
            sock.settimeout(5)
            sock.sendall(b"ping")
            got = b""
            while len(got) < 7:
                got += sock.recv(64)
        assert got == b"hi ping"  # what the peer sent right after the 101 is not lost
        assert ea.dials == 1 and eb.netstack.delivered == 1
        ip, source_port = sources[0]
        assert ip == "127.0.0.1"
        peer = LocalAPITailnet(eb.socket_path).whois(ip, source_port)
        assert peer is not None and peer.hostname == "a" and peer.address == "100.64.7.1"


def test_dial_async_keeps_the_first_bytes_and_failures_are_oserrors(
    two_hosts: tuple[LocalAPIEmulator, LocalAPIEmulator],
) -> None:
    ea, _ = two_hosts
    client = LocalAPIClient(ea.socket_path)

    with greeter() as (port, _):
        assert _exchange(client, port, b"x") == b"hi x"
    closed = free_port()
    with pytest.raises(ConnectionRefusedError, match=r"could not dial 100\.64\.7\.2"):
        _exchange(client, closed, b"x")
    with pytest.raises(ConnectionRefusedError, match="502"):
        client.dial("100.64.7.99", 80, timeout=5)  # no such tailnet node


def test_http_over_dialled_streams(two_hosts: tuple[LocalAPIEmulator, LocalAPIEmulator]) -> None:
    ea, _ = two_hosts
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        transport = TailnetHTTPTransport(LocalAPIClient(ea.socket_path).dial, max_connections=2)
        with tsc.NodeClient(f"100.64.7.2:{port}", transport=transport, timeout=5) as client:
            for n in range(3):  # kept alive: one dial serves all three
                assert client.request("GET", f"/v1/n{n}") == {"path": f"/v1/n{n}"}
        assert ea.dials == 1
        refused = TailnetHTTPTransport(LocalAPIClient(ea.socket_path).dial, max_connections=1)
        with (
            tsc.NodeClient(f"100.64.7.99:{port}", transport=refused, timeout=5) as client,
            pytest.raises(tsc.NodeUnreachableError),
        ):
            client.request("GET", "/")
    finally:
        server.shutdown()
        server.server_close()


def test_mode_is_detected_from_tailscaled_and_can_be_forced(
    two_hosts: tuple[LocalAPIEmulator, LocalAPIEmulator], tmp_path: Path
) -> None:
    ea, _ = two_hosts
    tailnet = LocalAPITailnet(ea.socket_path)
    me = tailnet.self_peer()
    auto = networking(tailnet, me, tsc.Config.default())
    assert auto.userspace and auto.listen_host == "127.0.0.1" and auto.raft_dial is not None
    forced = tsc.Config.default().with_overrides(tailnet=tsc.TailnetConfig(mode="tun"))
    assert networking(tailnet, me, forced).listen_host == "100.64.7.1"
    tun_node = EmulatedNode("t", ["100.64.7.3"], [TAG])
    with LocalAPIEmulator(tmp_path / "t.sock", tun_node) as et:
        tun = LocalAPITailnet(et.socket_path)
        assert not networking(tun, tun.self_peer(), tsc.Config.default()).userspace
        userspace = tsc.Config.default().with_overrides(tailnet=tsc.TailnetConfig(mode="userspace"))
        assert networking(tun, tun.self_peer(), userspace).userspace
    with pytest.raises(tsc.ConfigError, match=r"tailnet\.mode"):
        tsc.Config.from_toml('[tailnet]\nbackend = "static"\nmode = "userspace"\n')
    with pytest.raises(tsc.ConfigError, match=r"tailnet\.mode"):
        tsc.Config.from_toml('[tailnet]\nmode = "tunnel"\n')


def test_a_node_in_userspace_mode_listens_on_loopback_and_serves_its_admin_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = EmulatedNode("solo", ["100.64.8.1"], [TAG], wire=f"127.0.0.23:{free_port('127.0.0.23')}")
    ports = {"raft": free_port(), "command": free_port(), "monitor": free_port()}
    state = tmp_path / "state"
    config = tmp_path / "node.toml"
    config.write_text(
        f'[cluster]\ntag = "{TAG}"\nsecret = "s3cret"\n'
        f"[ports]\nraft = {ports['raft']}\ncommand = {ports['command']}\n"
        f"monitor = {ports['monitor']}\n"
        f'[storage]\nstate_dir = "{state}"\n'
        f'[tailnet]\nbackend = "localapi"\nsocket_path = "{tmp_path / "ts.sock"}"\n'
    )
    with LocalAPIEmulator(tmp_path / "ts.sock", node):
        with open(tmp_path / "node.log", "ab") as out:
            proc = subprocess.Popen(
                [*node_command(), str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            admin = state / "admin.sock"
            eventually(admin.exists, timeout=20, what="the admin socket")
            assert stat.S_IMODE(os.stat(admin).st_mode) == 0o600
            done = tsc_until_ok(
                "exec", "--config", str(config), "--name", "set", "--args", '{"k": 1}', "--json",
                timeout=30,
                what="tsc exec through the admin socket",
            )  # fmt: skip
            assert json.loads(done.stdout)["error"] is None
            with tsc.NodeClient(f"unix:{admin}", timeout=5) as client:
                assert client.status()["state"] == "leader"
                assert client.execute("get", {"key": "k"}).result == 1
            # A local process on TCP is not a tailnet peer: refused on every port.
            for name in ("command", "monitor"):
                url = f"http://127.0.0.1:{ports[name]}/v1/status"
                assert httpx.get(url, timeout=5).status_code == 403
            with socket.create_connection(("127.0.0.1", ports["raft"]), timeout=5) as raw:
                raw.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    assert raw.recv(1) == b""
            # Nothing listens on the tailnet address (it does not exist here), nor anywhere
            # but loopback: the ports are bound to 127.0.0.1 only.
            listening = Path("/proc/net/tcp").read_text()
            for port in ports.values():
                bound = [
                    ln.split()[1]
                    for ln in listening.splitlines()[1:]
                    if ln.split()[3] == "0A" and ln.split()[1].endswith(f":{port:04X}")
                ]
                assert bound == [f"0100007F:{port:04X}"], bound
            # In auto mode each command asks tailscaled for the mode once and passes the
            # answer on (in-process here, where the questions can be counted).
            this = ("--config", str(config))
            doctor, asked = _asking_the_mode(monkeypatch, "doctor", *this, "--json")
            checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
            assert checks["mode"]["status"] == checks["node"]["status"] == "ok", checks
            assert asked == 1
            status, asked = _asking_the_mode(monkeypatch, "status", *this)
            assert status.code == 0 and asked == 1, status.stderr
            stop, asked = _asking_the_mode(monkeypatch, "node", "stop", *this)
            assert stop.code == 0 and "node stopped" in stop.stdout, stop.stderr
            assert asked == 1
            # "node stopped" only once the node no longer answers where tsc asked it
            still = tsc.NodeClient(f"unix:{admin}", timeout=1)
            with pytest.raises(tsc.NodeUnreachableError), still:
                still.request("GET", "/healthz")
            assert proc.wait(30) == 0
            assert not admin.exists()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def _asking_the_mode(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[CliResult, int]:
    """``tsc ARGS`` in-process, and how often it asked tailscaled for its networking mode."""
    asked = [0]
    real = LocalAPITailnet.userspace

    def counted(self: LocalAPITailnet) -> bool:
        asked[0] += 1
        return real(self)

    with monkeypatch.context() as patched:
        patched.setattr(LocalAPITailnet, "userspace", counted)
        return run_cli(*args), asked[0]


class _LoopbackTailnet:
    """Userspace-mode answers: peers known only by their 127.0.0.1 source ports."""

    may_block = False

    def __init__(self) -> None:
        self.nodes = {
            "me": tsc.Peer("me", "me", ("100.64.7.1",), (TAG,), is_self=True),
            "a": tsc.Peer("a", "a", ("100.64.7.2",), (TAG,)),
            "b": tsc.Peer("b", "b", ("100.64.7.3",), (TAG,)),
        }
        self.sources = {1001: "a", 1002: "b"}

    def self_peer(self) -> tsc.Peer:
        return self.nodes["me"]

    def peers(self) -> list[tsc.Peer]:
        return [self.nodes["a"], self.nodes["b"]]

    def whois(self, ip: str, port: int, *, patient: bool = True) -> tsc.Peer | None:
        name = self.sources.get(port) if ip == "127.0.0.1" else None
        return self.nodes[name] if name else None


def test_loopback_peers_stay_allowed_until_one_loses_its_tag() -> None:
    from tsconsensus.authorization import Authorizer
    from tsconsensus.tag_cache import TagCache

    tailnet = _LoopbackTailnet()
    changes: list[int] = []
    cache = TagCache(
        tailnet,  # type: ignore[arg-type]
        Authorizer(tailnet, TAG),  # type: ignore[arg-type]
        on_change=lambda: changes.append(1),
    )

    async def authorize(port: int) -> bool:
        return await cache.authorize("127.0.0.1", port)

    try:
        assert asyncio.run(authorize(1001)) and asyncio.run(authorize(1002))
        assert not asyncio.run(authorize(1003))  # a local process: not a tailnet peer
        assert cache.refresh() and cache.still_allowed("127.0.0.1") and not changes
        # b loses its tag: every loopback connection must be authorized again
        tailnet.nodes["b"] = tsc.Peer("b", "b", ("100.64.7.3",), ())
        assert cache.refresh() and changes == [1]
        assert not cache.still_allowed("127.0.0.1")
        assert asyncio.run(authorize(1001)) and not asyncio.run(authorize(1002))
        assert cache.still_allowed("127.0.0.1")
    finally:
        cache.stop()


def test_dial_through_the_socks5_proxy(tmp_path: Path) -> None:
    tailnet = EmulatedTailnet()
    a = EmulatedNode("a", ["100.64.7.1"], [TAG], wire=f"127.0.0.21:{free_port('127.0.0.21')}")
    b = EmulatedNode("b", ["100.64.7.2"], [TAG], wire=f"127.0.0.22:{free_port('127.0.0.22')}")
    tailnet.add(a)
    tailnet.add(b)
    proxy = f"127.0.0.21:{free_port('127.0.0.21')}"
    ea = LocalAPIEmulator(tmp_path / "a.sock", a, tailnet=tailnet, socks5=proxy).start()
    eb = tailnet.emulator("b", tmp_path / "b.sock").start()
    try:
        dialer = LocalAPITailnet(ea.socket_path, socks5=proxy)

        with greeter() as (port, sources):
            with dialer.dial("100.64.7.2", port, timeout=5) as sock:
                sock.settimeout(5)
                assert sock.recv(3) == b"hi "
            assert _exchange(dialer, port, b"y") == b"hi y"
            peer = LocalAPITailnet(eb.socket_path).whois(*sources[0])
            assert peer is not None and peer.hostname == "a"
        assert ea.dials == 0 and ea.netstack.socks5_connections == 2
        with pytest.raises(ConnectionRefusedError, match="connection refused"):
            dialer.dial("100.64.7.2", free_port(), timeout=5)
    finally:
        ea.stop()
        eb.stop()


def test_a_state_dir_too_long_for_a_unix_socket() -> None:
    from tsconsensus.admin_socket import admin_socket_for

    deep = "/tmp/" + "d" * 120
    assert admin_socket_for(deep, required=False) is None  # TUN mode goes on without it
    with pytest.raises(tsc.ConfigError, match=r"storage\.state_dir.*too long"):
        admin_socket_for(deep, required=True)
    assert admin_socket_for("/var/lib/tsc", required=True) == Path("/var/lib/tsc/admin.sock")
    assert admin_socket_for(":memory:", required=True) is None
