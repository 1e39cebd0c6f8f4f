"""The Go package's tests, ported in intent: real node processes using the localapi backend,
each against its own tailscaled emulator, on loopback addresses."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tsconsensus import PortsConfig
from tsconsensus.testing import LocalCluster

from .helpers import assert_all_equal, converged_hashes, http

Make = Callable[..., LocalCluster]


def test_start_one_tagged_node_bootstraps_and_stops(make_emulated: Make) -> None:
    cluster = make_emulated(1)
    assert cluster.wait_for_leader() == 0
    assert cluster.execute(0, "set", {"solo": True}).error is None
    cluster.stop_node(0)
    assert not cluster.running(0)


def test_apply_reaches_every_node(make_emulated: Make) -> None:
    cluster = make_emulated(3, cluster_overrides={"bootstrap_expect": 3})
    outcome = cluster.execute(2, "set", {"applied": "everywhere"})
    assert outcome.error is None
    assert_all_equal(converged_hashes(cluster, range(3)))
    assert [cluster.execute(i, "get", {"key": "applied"}).result for i in range(3)] == [
        "everywhere"
    ] * 3


def test_non_default_ports_and_execute_from_every_node(make_emulated: Make) -> None:
    ports = PortsConfig(raft=17001, command=17002, monitor=17003)
    cluster = make_emulated(3, ports=ports)
    for i in range(3):
        assert cluster.execute(i, "set", {f"from{i}": i}).error is None
    assert cluster.execute(0, "keys", {}).result == ["from0", "from1", "from2"]
    with cluster.client(1) as client:  # its peers are told to dial its Raft port there
        assert client.request("GET", "/v1/identity")["raft_address"].endswith(":17001")


def test_follower_failover(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(3) if i != leader)
    cluster.stop_node(follower)
    others = [i for i in range(3) if i != follower]
    for n in range(10):
        assert cluster.execute(others[n % 2], "set", {f"while_down{n}": n}).error is None
    cluster.start_node(follower)
    cluster.wait_ready(among=[follower])
    # it came back with the configuration it recorded, without bootstrapping again
    assert "restarting with recorded members" in cluster.log_path(follower).read_text()
    assert cluster.execute(follower, "get", {"key": "while_down9"}).result == 9
    assert_all_equal(converged_hashes(cluster, range(3)))


def test_rejoin_is_harmless_and_a_fourth_tagged_node_joins(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    node3 = cluster.join_body(2)
    with http(cluster, 0, source=cluster.addresses[2]) as client:
        first = client.post("/v1/join", json=node3)
        again = client.post("/v1/join", json=node3)
    assert first.status_code == again.status_code == 200
    assert first.json()["members"] == again.json()["members"]
    fourth = cluster.add_node()
    cluster.start_node(fourth)
    cluster.wait_ready(among=[fourth])
    for i in range(4):
        assert cluster.execute(i, "set", {f"n{i}": i}).error is None
    members = [m["id"] for m in cluster.status(0)["members"]]
    assert len(members) == 4
    assert_all_equal(converged_hashes(cluster, range(4)))


def _closed_at_once(target: tuple[str, int], source: str) -> bool:
    with socket.create_connection(target, timeout=3, source_address=(source, 0)) as s:
        s.settimeout(2)
        try:
            return s.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True


def test_only_tagged_peers_can_dial_the_raft_port(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    untagged = cluster.add_node(tags=[])  # on the tailnet, not in the cluster
    target = (cluster.addresses[0], cluster.ports.raft)
    assert _closed_at_once(target, cluster.addresses[untagged])
    # a tagged peer's connection is kept open (it is greeted, or waits for the handshake)
    with socket.create_connection(target, timeout=3, source_address=(cluster.addresses[1], 0)) as s:
        s.settimeout(0.5)
        try:
            assert s.recv(1) != b"", "a tagged peer's connection was closed"
        except TimeoutError:
            pass


def test_only_tagged_peers_can_be_dialed_and_untagging_cuts_a_member_off(
    make_emulated: Make,
) -> None:
    cluster = make_emulated(3)
    leader = cluster.wait_for_leader()
    victim = next(i for i in range(3) if i != leader)
    victim_id = cluster.node_id(victim)
    assert cluster.emulated is not None
    cluster.emulated.set_tags(cluster.hostname(victim), [])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        members = {m["id"]: m for m in cluster.status(leader)["members"]}
        if not members[victim_id]["connected"]:
            break
        time.sleep(0.2)
    assert not members[victim_id]["connected"], "the untagged member is still connected"
    # the other two still commit
    assert cluster.execute(leader, "set", {"after_untag": 1}).error is None
    # and the untagged node's own ports refuse it nothing (it is not us), but ours refuse it
    with http(cluster, leader, source=cluster.addresses[victim]) as client:
        assert client.post("/v1/execute", json={"name": "keys"}).status_code == 403


def test_only_tagged_peers_can_join(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    outsider = cluster.add_node(tags=[])
    outsider_id = f"{cluster.addresses[outsider]}:{cluster.ports.raft}"
    with http(cluster, 0, source=cluster.addresses[outsider]) as client:
        assert client.post("/v1/join", json={"id": outsider_id}).status_code == 403
    # a tagged member may not add someone else either
    with http(cluster, 0, source=cluster.addresses[1]) as client:
        answer = client.post("/v1/join", json={"id": outsider_id})
    assert answer.status_code == 403 and "only ask to add itself" in answer.json()["error"]
    # and an untagged node's own start fails: it must carry the tag
    cluster.start_node(outsider)
    proc_deadline = time.monotonic() + 15
    while cluster.running(outsider) and time.monotonic() < proc_deadline:
        time.sleep(0.1)
    assert not cluster.running(outsider)
    assert "does not carry the cluster tag" in cluster.log_path(outsider).read_text()
    assert len(cluster.status(0)["members"]) == 3


def test_follow_only_joins_an_existing_leader_and_never_forms_its_own(
    make_emulated: Make,
) -> None:
    lonely = make_emulated(
        1, start=False, cluster_overrides={"follow_only": True, "join_timeout_s": 2.0}
    )
    lonely.start_node(0)
    deadline = time.monotonic() + 20
    while lonely.running(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not lonely.running(0), "a follow-only node with nobody to follow kept running"
    assert "could not join or form a cluster" in lonely.log_path(0).read_text()

    cluster = make_emulated(3)
    follower = cluster.add_node(overrides={"cluster": {"follow_only": True}})
    cluster.start_node(follower)
    cluster.wait_ready(among=[follower])
    assert cluster.status(follower)["leader"] != cluster.status(follower)["node_id"]
    assert cluster.execute(follower, "set", {"via_follower": 1}).error is None
    assert len(cluster.status(0)["members"]) == 4


def test_removing_a_member(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    leader = cluster.wait_for_leader()
    gone = next(i for i in range(3) if i != leader)
    gone_address = f"{cluster.addresses[gone]}:{cluster.ports.raft}"
    gone_id = cluster.node_id(gone)
    cluster.stop_node(gone)
    from .cli import run_cli

    # named by its address, as an operator knows it
    removed = run_cli(
        "members", "remove", gone_address, "--config", str(cluster.config_path(leader))
    )
    assert removed.code == 0, removed.stderr
    assert f"removed {gone_address}" in removed.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = [m["id"] for m in cluster.status(leader)["members"]]
        if gone_id not in ids:
            break
        time.sleep(0.1)
    assert gone_id not in ids and len(ids) == 2
    assert cluster.execute(leader, "set", {"two_left": 1}).error is None


@pytest.mark.parametrize("attempt", range(10))
def test_nodes_started_at_once_form_exactly_one_cluster(make_emulated: Make, attempt: int) -> None:
    cluster = make_emulated(
        3, start=False, cluster_overrides={"bootstrap_expect": 3}, persistent=False
    )
    cluster.write()
    for i in range(3):  # as close to the same moment as three processes get
        cluster.start_node(i)
    cluster.wait_ready(timeout=30)
    statuses = [cluster.status(i) for i in range(3)]
    assert len({s["leader"] for s in statuses}) == 1
    assert sum(s["state"] == "leader" for s in statuses) == 1
    member_sets = {tuple(sorted(m["id"] for m in s["members"])) for s in statuses}
    assert len(member_sets) == 1 and len(next(iter(member_sets))) == 3
    assert cluster.execute(attempt % 3, "set", {"one": attempt}).error is None


def test_peers_endpoint_lists_tagged_nodes_with_member_flags(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    spare = cluster.add_node()  # tagged, online, not started: not a member
    cluster.add_node(tags=["tag:unrelated"])  # not listed at all
    expected = {"node1", "node2", "node3", cluster.hostname(spare)}
    deadline = time.monotonic() + 5  # the node caches tailscaled's status for a second
    while True:
        with cluster.monitor(0) as monitor:
            peers = {p["hostname"]: p for p in monitor.peers()}
        if set(peers) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(peers) == expected
    assert peers["node1"]["self"] and peers["node1"]["member"]
    assert not peers[cluster.hostname(spare)]["member"]
    # any tagged node may ask, member or not
    transport = httpx.HTTPTransport(local_address=cluster.addresses[spare])
    with httpx.Client(transport=transport) as client:
        answer = client.get(f"http://{cluster.monitor_address(0)}/v1/peers")
    assert answer.status_code == 200


def _request_from(source_port_owner: str | None, cluster: LocalCluster, port: int) -> bytes:
    """Send GET /healthz to node 0 from 127.0.0.1, optionally mapped (as tailscaled does in
    userspace-networking mode) to the tailnet node ``source_port_owner``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if source_port_owner is not None:
            assert cluster.emulated is not None
            for emulator in cluster._emulators.values():
                emulator.map_userspace(f"127.0.0.1:{s.getsockname()[1]}", source_port_owner)
        s.settimeout(10)
        s.connect((cluster.addresses[0], port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_userspace_mode_sources_are_resolved_with_whois(make_emulated: Make) -> None:
    cluster = make_emulated(3)
    stranger = cluster.add_node(tags=[])
    monitor = cluster.ports.monitor
    assert _request_from("node2", cluster, monitor).startswith(b"HTTP/1.1 200")
    assert _request_from(cluster.hostname(stranger), cluster, monitor).startswith(b"HTTP/1.1 403")
    assert _request_from(None, cluster, monitor).startswith(b"HTTP/1.1 403")  # a local process


def test_tsc_peers_shows_the_tagged_nodes(make_emulated: Make) -> None:
    from .cli import run_cli

    cluster = make_emulated(3)
    result = run_cli("peers", "--config", str(cluster.config_path(0)), "--json")
    assert result.code == 0, result.stderr
    assert sorted(p["hostname"] for p in json.loads(result.stdout)) == ["node1", "node2", "node3"]
    table = run_cli("peers", "--config", str(cluster.config_path(0)))
    assert "node1 (this node)" in table.stdout
    listed = run_cli("members", "list", "--config", str(cluster.config_path(1)), "--json")
    assert len(json.loads(listed.stdout)) == 3


def test_an_unknown_local_source_is_refused_at_once_on_the_raft_port(make_emulated: Make) -> None:
    # In userspace mode a whois miss may be retried for a moment; the Raft thread must never
    # wait for that (a local process could otherwise stall heartbeats by connecting in a loop).
    cluster = make_emulated(3)
    target = (cluster.addresses[0], cluster.ports.raft)
    for _ in range(5):
        started = time.monotonic()
        assert _closed_at_once(target, "127.0.0.1")
        assert time.monotonic() - started < 0.4
    assert cluster.execute(0, "set", {"unbothered": True}).error is None
