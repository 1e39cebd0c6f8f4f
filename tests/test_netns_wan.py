"""The README's timing profile for tailnets that span continents, run over a 300 ms round
trip: three userspace-mode hosts in network namespaces whose tailscaled emulators delay every
connection by 150 ms each way (a delay line: throughput kept, time in flight added)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tsconsensus import NodeClient

from .helpers import readme_timing_profile
from .netns import Hosts, netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))

TAG = "tag:db"
ONE_WAY_S = 0.15


def _run_profile(tmp_path: Path, seconds: float) -> None:
    profile = readme_timing_profile().raft
    raft = {
        "heartbeat_interval_s": profile.heartbeat_interval_s,
        "election_timeout_min_s": profile.election_timeout_min_s,
        "election_timeout_max_s": profile.election_timeout_max_s,
    }
    with Hosts(tmp_path, 3, TAG, raft, userspace=True, latency_s=ONE_WAY_S) as hosts:
        for k in range(3):
            hosts.start(k, bootstrap_expect=3)
        leader = hosts.wait_leader([0, 1, 2], timeout=90)
        follower = next(k for k in range(3) if k != leader)
        before = hosts.status(leader)
        assert before is not None
        took: list[float] = []
        with NodeClient(f"unix:{hosts.admin_socket(follower)}", timeout=30) as client:
            end = time.monotonic() + seconds
            n = 0
            while time.monotonic() < end:
                started = time.monotonic()
                result = client.execute("set", {f"k{n % 10}": n}, timeout=30)
                took.append(time.monotonic() - started)
                assert result.error is None, result
                n += 1
        after = hosts.status(leader)
        assert after is not None
        # the delay is real: a write on a follower crosses to the leader and back, and the
        # leader waits for a follower (two round trips at least)
        assert min(took) >= 3 * ONE_WAY_S, took
        # and the profile rides it out: the same leader, the same term, nothing refused
        assert after["state"] == "leader" and after["term"] == before["term"], (before, after)
        assert len(took) >= seconds / 2, f"only {len(took)} writes in {seconds}s: {took}"


def test_the_continental_profile_keeps_its_leader_over_a_300_ms_round_trip(
    tmp_path: Path,
) -> None:
    _run_profile(tmp_path, seconds=10)


@pytest.mark.soak
def test_the_continental_profile_keeps_its_leader_for_two_minutes(tmp_path: Path) -> None:
    _run_profile(tmp_path, seconds=120)
