"""Exactly-once and reads on a real cluster: a request id names one command, a retry returns
the first outcome, reads go through ReadIndex and leave nothing in the log."""

from __future__ import annotations

from collections.abc import Callable

from tsconsensus.testing import LocalCluster

from .helpers import http

Make = Callable[..., LocalCluster]


def test_a_request_id_reused_for_another_command_is_refused_with_409(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(3) if i != leader)
    with http(cluster, follower) as client:
        first = client.post(
            "/v1/execute", json={"name": "set", "args": {"k": 1}, "request_id": "once"}
        )
        assert first.status_code == 200
        again = client.post(
            "/v1/execute", json={"name": "set", "args": {"k": 1}, "request_id": "once"}
        )
        assert again.status_code == 200 and again.json() == first.json()
        other = client.post(
            "/v1/execute", json={"name": "delete", "args": {"key": "k"}, "request_id": "once"}
        )
    assert other.status_code == 409
    body = other.json()
    assert body["reason"] == "reused" and body["request_id"] == "once"
    assert "different command" in body["error"]
    assert cluster.execute(leader, "get", {"key": "k"}).result == 1  # the delete never ran


def test_reads_are_linearizable_and_leave_nothing_in_the_log(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    followers = [i for i in range(3) if i != leader]
    for n in range(20):
        # a write acknowledged through one follower is seen at once by a read on the other
        assert cluster.execute(followers[n % 2], "set", {"k": n}).error is None
        assert cluster.execute(followers[(n + 1) % 2], "get", {"key": "k"}).result == n
    commit = cluster.status(leader)["commit_index"]
    for i in range(3):
        for _ in range(10):
            assert cluster.execute(i, "get", {"key": "k"}).result == 19
        assert cluster.execute(i, "keys", {}).result == ["k"]
    assert cluster.status(leader)["commit_index"] == commit  # 33 reads, no entry
