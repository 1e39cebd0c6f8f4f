from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tsconsensus.testing import LocalCluster

# A suite started in the background by a shell (`pytest ... &`) inherits SIGINT ignored, and so
# would every process it starts: a `tsc status --watch` that a test interrupts would never stop.
# With a handler installed here, the processes the tests start get the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Fast but not twitchy: tests run on a shared 2-core machine.
FAST_RAFT = {
    "heartbeat_interval_s": 0.05,
    "election_timeout_min_s": 0.3,
    "election_timeout_max_s": 0.6,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Soak runs measure timing under load (no election for five minutes, the fault runner's
    # throughput): with pytest-xdist they must not run beside each other. Neither may the
    # short runs of the default suite that load the machine hard or assert timing under load
    # (marked "heavy"): in a full run on 2026-12-04 a follower of the 64-client run stood
    # still for 0.7 s, starved by whatever ran beside it.
    for item in items:
        if item.get_closest_marker("soak") or item.get_closest_marker("heavy"):
            item.add_marker(pytest.mark.xdist_group("soak"))


def unique_loopback_base() -> str:
    """A 127.a.b.1 base no other test in this run uses, so ports never collide."""
    return f"127.{random.randint(2, 250)}.{random.randint(0, 250)}.1"


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Build (and always stop, by PID) local clusters of real node processes."""
    made: list[LocalCluster] = []

    def make(nodes: int = 3, start: bool = True, **kwargs: Any) -> LocalCluster:
        kwargs.setdefault("raft_overrides", FAST_RAFT)
        cluster = LocalCluster(
            tmp_path / f"cluster{len(made)}",
            nodes=nodes,
            base_address=unique_loopback_base(),
            **kwargs,
        )
        made.append(cluster)
        if start:
            cluster.start(wait=True, timeout=30)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def make_emulated(make_cluster: Callable[..., LocalCluster]) -> Callable[..., LocalCluster]:
    """Clusters whose nodes use the localapi backend, each against its own emulator."""

    def make(nodes: int = 3, start: bool = True, **kwargs: Any) -> LocalCluster:
        return make_cluster(nodes, start=start, tailnet="emulated", **kwargs)

    return make
