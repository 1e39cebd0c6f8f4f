"""Load without faults: a healthy cluster under 64 concurrent clients never holds an election.
The five-minute run is ``-m soak``; the default suite runs a short one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tsconsensus.testing import LocalCluster

from .helpers import warnings_logged

Make = Callable[..., LocalCluster]


def _hammer(cluster: LocalCluster, seconds: float, clients: int) -> tuple[int, int]:
    """``clients`` threads send sets round-robin to the nodes; (acknowledged, failed)."""
    stop = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def client(n: int) -> None:
        i = n % cluster.size
        transport = httpx.HTTPTransport(local_address=cluster.addresses[i])
        with httpx.Client(transport=transport, timeout=10) as http:
            url = f"http://{cluster.command_address(i)}/v1/execute"
            k = 0
            while time.monotonic() < stop:
                body = {"name": "set", "args": {f"c{n}-{k % 50}": k}}
                ok = http.post(url, json=body).status_code == 200
                with lock:
                    counts[0 if ok else 1] += 1
                k += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return counts[0], counts[1]


def _no_election_under_load(make_cluster: Make, seconds: float) -> None:
    cluster = make_cluster(3, raft_overrides={})  # the default timing, as users run it
    leader = cluster.wait_for_leader()
    term = cluster.status(leader)["term"]
    done, failed = _hammer(cluster, seconds, clients=64)
    assert failed == 0 and done > 100 * seconds, (done, failed)
    statuses = [cluster.status(i) for i in range(3)]
    assert {s["term"] for s in statuses} == {term}, statuses
    assert cluster.wait_for_leader() == leader
    worst = max(s.get("leader_gap_max_s", 0.0) for s in statuses)
    print(f"{done} commands in {seconds:g}s from 64 clients; longest leader silence {worst}s")
    # the default minimum election timeout: no follower came close
    assert worst < 0.6, (
        f"a follower heard nothing for {worst}s; logged:\n{warnings_logged(cluster)}"
    )


@pytest.mark.heavy
def test_a_short_burst_of_64_clients_causes_no_election(make_cluster: Make) -> None:
    _no_election_under_load(make_cluster, float(os.environ.get("TSC_LOAD_SECONDS", "20")))


@pytest.mark.soak
@pytest.mark.timeout(600)  # five minutes of load, plus start and checks
def test_five_minutes_of_64_clients_cause_no_election(make_cluster: Make) -> None:
    _no_election_under_load(make_cluster, 300.0)
