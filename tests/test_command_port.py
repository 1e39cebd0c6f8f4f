"""The command port's contract for bad input, limits and authorization (DESIGN section 4)."""

from __future__ import annotations

import ipaddress
import json
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tsconsensus.testing import LocalCluster

from .helpers import http

Make = Callable[..., LocalCluster]


@pytest.fixture
def cluster(make_cluster: Make) -> LocalCluster:
    return make_cluster(3, command_overrides={"max_body_bytes": 2048})


def outsider(cluster: LocalCluster) -> str:
    """A loopback address on the same /24 that is not a peer of the static tailnet."""
    return str(ipaddress.ip_address(cluster.addresses[0]) + 200)


def test_bad_requests_get_their_status_and_a_json_error(cluster: LocalCluster) -> None:
    with http(cluster, 1) as client:
        cases = [
            (b"{not json", 400, "not valid JSON"),
            (b"[1, 2]", 400, "JSON object"),
            (json.dumps({"args": {}}).encode(), 400, "missing field 'name'"),
            (json.dumps({"name": ""}).encode(), 400, "non-empty"),
            (json.dumps({"name": "get", "request_id": 5}).encode(), 400, "request_id"),
            (json.dumps({"name": "set", "args": {"k": "x" * 4000}}).encode(), 413, "exceeds"),
        ]
        for body, status, text in cases:
            response = client.post("/v1/execute", content=body)
            assert response.status_code == status, (body[:40], response.text)
            assert text in response.json()["error"]
        unknown = client.post("/v1/execute", json={"name": "frobnicate", "args": {}})
        assert unknown.status_code == 200
        assert unknown.json()["error"].startswith("unknown command 'frobnicate'")
        assert client.get("/v1/execute").status_code == 405
        missing = client.get("/nowhere")
        assert missing.status_code == 404 and "error" in missing.json()
        # the node keeps serving after all of that
        ok = client.post("/v1/execute", json={"name": "set", "args": {"k": 1}})
        assert ok.status_code == 200 and ok.json()["error"] is None


def test_no_leader_is_a_503_with_a_leader_field(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    others = [i for i in range(3) if i != leader]
    cluster.stop_node(others[0], kill=True)
    cluster.stop_node(others[1], kill=True)
    with http(cluster, leader) as client:
        response = client.post(
            "/v1/execute", json={"name": "set", "args": {"k": 1}, "timeout_s": 1.5}
        )
    assert response.status_code == 503
    body = response.json()
    assert "error" in body and "leader" in body


def test_peers_without_the_tag_get_403_on_command_and_monitor_ports(cluster: LocalCluster) -> None:
    stranger = outsider(cluster)
    with http(cluster, 0, source=stranger) as client:
        response = client.post("/v1/execute", json={"name": "get", "args": {"key": "k"}})
        assert response.status_code == 403
        assert "not authorized" in response.json()["error"]
        monitor = client.get(f"http://{cluster.monitor_address(0)}/v1/status")
        assert monitor.status_code == 403


def _listening(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            host_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(host_hex)
            if len(raw) == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_every_port_listens_only_on_the_nodes_own_address(cluster: LocalCluster) -> None:
    for port in (cluster.ports.raft, cluster.ports.command, cluster.ports.monitor):
        listening = _listening(port)
        assert "0.0.0.0" not in listening and "::" not in listening, (port, listening)
        assert set(cluster.addresses) <= listening


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.path}",))


def _send_frame(target: tuple[str, int], source: str, frame: bytes) -> bytes:
    with socket.create_connection(target, timeout=3, source_address=(source, 0)) as s:
        s.sendall(frame)
        s.settimeout(2)
        try:
            return s.recv(100)
        except (TimeoutError, ConnectionResetError):
            return b""


def test_a_pickle_frame_from_anyone_executes_nothing(cluster: LocalCluster, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload = zlib.compress(pickle.dumps(_Canary(str(canary))))
    # the frame is live: unpickled anywhere, it would run
    proof = tmp_path / "proof"
    pickle.loads(zlib.decompress(zlib.compress(pickle.dumps(_Canary(str(proof))))))
    assert proof.exists()
    frame = struct.pack("i", len(payload)) + payload
    target = (cluster.addresses[1], cluster.ports.raft)
    # from an address that is not a tagged peer: closed at accept
    _send_frame(target, outsider(cluster), frame)
    # from a tagged peer's address but without the cluster password: dropped, not unpickled
    _send_frame(target, cluster.addresses[2], frame)
    time.sleep(0.5)
    assert not canary.exists()
    assert cluster.execute(1, "set", {"still": "alive"}).error is None
