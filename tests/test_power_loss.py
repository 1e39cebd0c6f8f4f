"""Power loss (issue 8, item 5): in power-loss mode (``TSC_POWER_LOSS=1``: what a node wrote but
did not sync lives only in its process), SIGKILL of every node at once during a burst of writes
from several clients is a power cut of the whole cluster. Every acknowledged write must still
be there after the restart. With the planted bug ``TSC_PLANTED_BUG=ack-before-sync`` (nodes
acknowledge before their writes are durable) the same test must report a loss: it can fail.
The fault runner must fail a run with that bug too."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tsconsensus.errors import TsconsensusError
from tsconsensus.testing import LocalCluster
from tsconsensus.testing.faults import NemesisSettings, RunOptions, RunVerdict, format_report, run

from .helpers import eventually

Make = Callable[..., LocalCluster]
CLIENTS = 4
POWER_LOSS = {"TSC_POWER_LOSS": "1"}
ACK_BEFORE_SYNC = {**POWER_LOSS, "TSC_PLANTED_BUG": "ack-before-sync"}


def _start_all(cluster: LocalCluster, env: dict[str, str]) -> None:
    for i in range(cluster.size):
        cluster.start_node(i, extra_env=env)
    cluster.wait_ready(30)


class Burst:
    """``CLIENTS`` threads, each writing its own keys (``c<client>-<n>``) through its own node,
    one at a time, recording what was acknowledged; an unanswered write is not."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.acknowledged: dict[str, int] = {}
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(CLIENTS)
        ]

    def _client(self, c: int) -> None:
        node = c % self.cluster.size
        n = 0
        with self.cluster.client(node, timeout=5.0) as client:
            while not self.stop.is_set():
                key = f"c{c}-{n}"
                try:
                    client.execute("set", {key: n}, timeout=3.0)
                except TsconsensusError:
                    continue  # no acknowledgement: it may or may not have happened
                with self._lock:
                    self.acknowledged[key] = n
                n += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)


def _kill_every_node_during_a_burst(cluster: LocalCluster, env: dict[str, str]) -> dict[str, int]:
    """Start the cluster, SIGKILL every node at once while clients write, restart them all.
    Returns the acknowledged writes."""
    cluster.write()
    _start_all(cluster, env)
    burst = Burst(cluster)
    for t in burst.threads:
        t.start()
    try:
        eventually(lambda: burst.count() >= 150, 60, what="150 acknowledged writes")
        for i in range(cluster.size):  # as close to at once as signals go
            cluster.signal_node(i, signal.SIGKILL)
    finally:
        burst.stop.set()
        for t in burst.threads:
            t.join(15)
    assert not any(t.is_alive() for t in burst.threads), "a client did not stop"
    for i in range(cluster.size):
        cluster.stop_node(i, kill=True)  # reaps it and forgets its PID
    with burst._lock:
        acknowledged = dict(burst.acknowledged)
    _start_all(cluster, env)
    return acknowledged


def _lost(cluster: LocalCluster, acknowledged: dict[str, int]) -> list[str]:
    """The acknowledged keys the restarted cluster does not hold with their value, read through
    the cluster (linearizable reads, spread over the nodes)."""
    lost = []
    clients = [cluster.client(i, timeout=10.0) for i in range(cluster.size)]
    try:
        for k, (key, value) in enumerate(sorted(acknowledged.items())):
            if clients[k % len(clients)].execute("get", {"key": key}, timeout=10).result != value:
                lost.append(key)
    finally:
        for c in clients:
            c.close()
    return lost


def test_killing_every_node_at_once_loses_no_acknowledged_write(make_cluster: Make) -> None:
    cluster = make_cluster(3, start=False)
    acknowledged = _kill_every_node_during_a_burst(cluster, POWER_LOSS)
    assert len(acknowledged) >= 150
    lost = _lost(cluster, acknowledged)
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged writes lost: {lost[:10]}"


def test_acknowledging_before_sync_is_caught_as_a_loss(make_cluster: Make) -> None:
    cluster = make_cluster(3, start=False)
    acknowledged = _kill_every_node_during_a_burst(cluster, ACK_BEFORE_SYNC)
    lost = _lost(cluster, acknowledged)
    print(f"the planted bug lost {len(lost)} of {len(acknowledged)} acknowledged writes")
    assert lost, "a node that acknowledges before syncing lost nothing: the test cannot fail"


@pytest.mark.timeout(400)
def test_the_fault_runner_fails_a_run_with_ack_before_sync(tmp_path: Path) -> None:
    report = run(
        RunOptions(
            nodes=3,
            duration_s=12,
            seed=8,
            clients=4,
            nemeses=("kill-all",),
            power_loss=True,
            plant="ack-before-sync",
            nemesis=NemesisSettings(quiet_s=(2.0, 3.0), hold_s=(0.5, 1.0)),
            directory=tmp_path / "run",
        )
    )
    summary = format_report(report)
    print(summary)
    assert report.faults["kill-all"] >= 1, summary
    assert report.judgement.verdict is RunVerdict.FAIL, summary
    assert report.exit_code == 1, summary
