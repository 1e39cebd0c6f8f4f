"""Hostile input against real node processes (issue 10, item 4): each case was found by probing
a running cluster, and each must leave the cluster serving and its state unchanged."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import socket
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tsconsensus.testing import LocalCluster
from tsconsensus_cli import exit_codes

from .cli import run_cli
from .helpers import assert_all_equal, converged_hashes, http

Make = Callable[..., LocalCluster]


def _deep(depth: int) -> bytes:
    return b'{"name": "set", "args": {"k": ' + b"[" * depth + b"]" * depth + b"}}"


def test_deep_json_is_a_400_on_every_endpoint_without_a_traceback(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    before = cluster.status(1)["applied_index"]
    with http(cluster, 1) as client:
        for depth in (101, 979, 5000, 100_000):
            for path in (
                "/v1/execute",
                "/v1/join",
                "/v1/members/remove",
                "/v1/leader/transfer",
                "/v1/snapshot/restore",
            ):
                body = _deep(depth) if path == "/v1/execute" else b"[" * depth + b"]" * depth
                response = client.post(path, content=body)
                assert response.status_code == 400, (path, depth, response.text[:100])
                assert "nested too deeply" in response.json()["error"]
        # as deep as allowed still works: the bound is the documented one, not lower
        ok = client.post("/v1/execute", content=_deep(97))
        assert ok.status_code == 200 and ok.json()["error"] is None
    assert cluster.status(1)["applied_index"] > before
    for i in range(3):
        assert "Traceback" not in cluster.log_path(i).read_text()


def test_join_and_remove_ids_are_validated(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    members = sorted(m["id"] for m in cluster.status(0)["members"])
    me = cluster.addresses[1]
    bad_ids = [
        f"{me}:99999",
        f"{me}:abc",
        f"{me}:",
        f"{me}:4_5",
        f"{me}:+45",
        f"{me}:0",
        f"[{me}]:6270",
        me,
        "",
        "x" * 10_000,
    ]
    with http(cluster, 0, source=me) as client:
        for bad in bad_ids:
            for path in ("/v1/join", "/v1/members/remove"):
                response = client.post(path, json={"id": bad})
                assert response.status_code == 400, (path, bad[:40], response.text[:200])
                assert "invalid node address" in response.json()["error"]
        for body in ({"id": 5}, {"id": None}, {}, [], "x"):
            assert client.post("/v1/join", json=body).status_code == 400
        # a valid id for someone else is still refused: a node may only add itself
        other = client.post("/v1/join", json={"id": f"{cluster.addresses[2]}:7000"})
        assert other.status_code == 403
    assert sorted(m["id"] for m in cluster.status(0)["members"]) == members


def test_removing_a_non_member_says_so_and_exits_1(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    stranger = f"{ipaddress.ip_address(cluster.addresses[0]) + 50}:{cluster.ports.raft}"
    members = sorted(m["id"] for m in cluster.status(0)["members"])
    with http(cluster, 1) as client:
        response = client.post("/v1/members/remove", json={"id": stranger})
    assert response.status_code == 409
    assert "is not a member" in response.json()["error"]
    assert sorted(response.json()["members"]) == members
    config = str(cluster.config_path(0))
    result = run_cli("members", "remove", stranger, "--config", config)
    assert result.code == exit_codes.FAILED
    assert "is not a member" in result.stderr and "removed" not in result.stdout
    assert result.stderr.strip().count("\n") == 0
    malformed = run_cli("members", "remove", f"{cluster.addresses[1]}:99999", "--config", config)
    assert malformed.code == exit_codes.USAGE and "invalid node address" in malformed.stderr
    assert sorted(m["id"] for m in cluster.status(0)["members"]) == members


def test_tsc_restore_through_execute_is_just_an_unknown_command(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    cluster.execute(0, "set", {"keep": "me"})
    empty = b"{}"
    wipe = {"data": base64.b64encode(empty).decode(), "sha256": hashlib.sha256(empty).hexdigest()}
    with http(cluster, 2) as client:
        response = client.post("/v1/execute", json={"name": "tsc.restore", "args": wipe})
        assert response.status_code == 200
        assert response.json()["error"].startswith("unknown command 'tsc.restore'")
        assert cluster.execute(1, "get", {"key": "keep"}).result == "me"
        # the operator endpoint checks its body before anything reaches the log
        for bad in (
            {"data": "not base64!", "sha256": wipe["sha256"]},
            {"data": wipe["data"], "sha256": "0" * 64},
            {"data": wipe["data"]},
            {"data": wipe["data"], "sha256": wipe["sha256"], "extra": 1},
        ):
            assert client.post("/v1/snapshot/restore", json=bad).status_code == 400
        assert cluster.execute(1, "get", {"key": "keep"}).result == "me"
        # and does restore, on every node at the same index
        restored = client.post("/v1/snapshot/restore", json=wipe)
        assert restored.status_code == 200, restored.text
        assert restored.json()["error"] is None
        assert restored.json()["result"] == {"restored_bytes": 2}
    assert cluster.execute(0, "get", {"key": "keep"}).result is None
    assert_all_equal(converged_hashes(cluster, [0, 1, 2]))


def test_hostile_command_names_cannot_break_or_bloat_metrics(make_cluster: Make) -> None:
    cluster = make_cluster(1, command_overrides={"max_body_bytes": 1_100_000})
    with http(cluster, 0) as client:
        # a lone surrogate: valid JSON escapes, not valid UTF-8 once decoded
        lone = client.post("/v1/execute", content=b'{"name": "\\ud800y", "args": {}}')
        assert lone.status_code == 200 and "unknown command" in lone.json()["error"]
        for i in range(10):
            name = f"n{i}" + "x" * 1_000_000
            big = client.post("/v1/execute", json={"name": name, "args": {}})
            assert big.status_code == 200, big.text[:200]
    transport = httpx.HTTPTransport(local_address=cluster.addresses[0])
    with httpx.Client(transport=transport) as monitor:
        for _ in range(2):  # and it keeps answering: not broken "until restart"
            page = monitor.get(f"http://{cluster.monitor_address(0)}/metrics")
            assert page.status_code == 200
            assert len(page.content) < 32_000, len(page.content)
            names = {
                s.labels.get("name")
                for f in text_string_to_metric_families(page.text)
                for s in f.samples
                if s.name == "tsc_commands_total"
            }
            assert "\\ud800y" in names
            assert sum(1 for n in names if n and n.startswith("n")) == 10


def test_idle_connections_from_a_non_member_are_refused_at_accept(make_cluster: Make) -> None:
    cluster = make_cluster(1)
    stranger = str(ipaddress.ip_address(cluster.addresses[0]) + 200)
    target = (cluster.addresses[0], cluster.ports.command)
    held = []
    try:
        for _ in range(300):  # they send nothing: nothing to wait for but the accept
            held.append(socket.create_connection(target, timeout=5, source_address=(stranger, 0)))
        for s in held:
            answer = b""
            while chunk := s.recv(4096):  # the node closes each one: recv ends
                answer += chunk
            status = int(answer.split(b" ", 2)[1])
            assert status in (403, 503), answer[:100]
            assert "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])
    finally:
        for s in held:
            s.close()
    assert cluster.execute(0, "set", {"after": "flood"}).error is None
