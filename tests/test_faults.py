"""Faults while clients work: nodes paused (SIGSTOP), killed (SIGKILL) and restarted.

Clients increment one counter with compare-and-set, each retrying its request with the same
request id until it gets a definite answer. If the cluster is linearizable and exactly-once,
the successful increments saw every value from 0 upwards exactly once, and the counter ends at
their number. The short run is in the default suite; ``pytest -m soak`` runs the long one.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from tsconsensus import TsconsensusError
from tsconsensus.testing import LocalCluster

from .helpers import assert_all_equal, converged_hashes

Make = Callable[..., LocalCluster]


def _client(
    cluster: LocalCluster,
    node: int,
    stop: threading.Event,
    wins: list[int],
    errors: list[str],
    lock: threading.Lock,
) -> None:
    rng = random.Random(node)
    while not stop.is_set():
        target = rng.randrange(cluster.size)
        try:
            with cluster.client(target, timeout=10) as client:
                current = client.execute("get", {"key": "counter"}, timeout=5).result or 0
                request_id = uuid.uuid4().hex
                deadline = time.monotonic() + 60
                while True:  # the same request id until the outcome is known
                    try:
                        outcome = client.execute(
                            "cas",
                            {"key": "counter", "expected": current or None, "value": current + 1},
                            request_id=request_id,
                            timeout=5,
                        )
                        break
                    except TsconsensusError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            if outcome.error is not None:
                with lock:
                    errors.append(outcome.error)
            elif outcome.result["ok"]:  # type: ignore[index]
                with lock:
                    wins.append(current + 1)
        except TsconsensusError:
            time.sleep(0.05)  # that node is down or paused: try another


def _faults(cluster: LocalCluster, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(0.5, 1.5)):
        victim = rng.randrange(cluster.size)
        if rng.random() < 0.5:
            cluster.signal_node(victim, signal.SIGSTOP)
            stop.wait(rng.uniform(0.3, 1.2))
            cluster.signal_node(victim, signal.SIGCONT)
        else:
            cluster.stop_node(victim, kill=True)
            stop.wait(rng.uniform(0.2, 1.0))
            cluster.start_node(victim)
            cluster.wait_ready(timeout=30, among=[victim])


@pytest.mark.parametrize(
    "seconds", [pytest.param(8, id="short"), pytest.param(180, marks=pytest.mark.soak, id="soak")]
)
def test_counter_stays_exact_under_pauses_and_kills(make_cluster: Make, seconds: int) -> None:
    cluster = make_cluster(3)
    stop = threading.Event()
    wins: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    clients = [
        threading.Thread(target=_client, args=(cluster, n, stop, wins, errors, lock))
        for n in range(4)
    ]
    faults = threading.Thread(target=_faults, args=(cluster, stop, seconds))
    for t in [*clients, faults]:
        t.start()
    time.sleep(seconds)
    stop.set()
    faults.join(60)
    for t in clients:
        t.join(90)
    for i in range(cluster.size):  # leave every node running and resumed
        if cluster.running(i):
            cluster.signal_node(i, signal.SIGCONT)
        else:
            cluster.start_node(i)
    cluster.wait_ready(timeout=30)
    print(f"{len(wins)} increments under faults")
    assert not errors, errors[:3]
    assert wins, "no increment got through"
    final = cluster.execute(0, "get", {"key": "counter"}).result
    assert sorted(wins) == list(range(1, len(wins) + 1)), "an increment was lost or doubled"
    assert final == len(wins)
    assert_all_equal(converged_hashes(cluster, range(cluster.size), timeout=30))
