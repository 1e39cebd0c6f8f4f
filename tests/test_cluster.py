"""The core contract, end to end: real node processes, real sockets, loopback addresses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from tsconsensus.testing import LocalCluster

from .helpers import RECORDING, assert_all_equal, converged_hashes, eventually

Make = Callable[..., LocalCluster]


def test_a_set_sent_to_a_follower_is_applied_on_every_node(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(3) if i != leader)
    outcome = cluster.execute(follower, "set", {"k": 1, "other": [1, "two"]})
    assert outcome.error is None
    assert outcome.result == {"k": None, "other": None}
    assert outcome.index > 0
    reads = [cluster.execute(i, "get", {"key": "other"}) for i in range(3)]
    assert [r.result for r in reads] == [[1, "two"]] * 3
    assert_all_equal(converged_hashes(cluster, range(3)))


def test_killing_the_leader_elects_another_and_it_catches_up_on_restart(make_cluster: Make) -> None:
    cluster = make_cluster(3)
    for n in range(20):
        assert cluster.execute(n % 3, "set", {f"before{n}": n}).error is None
    old = cluster.wait_for_leader()
    cluster.stop_node(old, kill=True)  # SIGKILL: no goodbye
    survivors = [i for i in range(3) if i != old]
    new = cluster.wait_for_leader(timeout=15, among=survivors)
    assert new != old
    for n, i in enumerate(survivors * 5):
        assert cluster.execute(i, "set", {f"after{n}": n}).error is None
    cluster.start_node(old)
    cluster.wait_ready(timeout=30, among=[old])
    assert cluster.execute(old, "get", {"key": "after9"}).result == 9
    assert cluster.execute(old, "get", {"key": "before19"}).result == 19
    assert_all_equal(converged_hashes(cluster, range(3)))


def test_a_killed_leader_is_replaced_without_waiting_out_the_election_timeout(
    make_cluster: Make,
) -> None:
    # The survivors see the leader's connections close and its port refuse a new one: they
    # campaign at once instead of after 3 to 4 s of silence (a leader cut off by the network,
    # with no refusal to see, still costs the whole timeout; the netns tests cover that).
    slow = {"heartbeat_interval_s": 0.1, "election_timeout_min_s": 3.0}
    cluster = make_cluster(3, raft_overrides={**slow, "election_timeout_max_s": 4.0})
    old = cluster.wait_for_leader()
    assert cluster.execute(old, "set", {"before": 1}).error is None
    survivors = [i for i in range(3) if i != old]
    killed_at = time.monotonic()
    cluster.stop_node(old, kill=True)
    new = cluster.wait_for_leader(timeout=10, among=survivors)
    took = time.monotonic() - killed_at
    assert took < 2.0, f"a new leader after {took:.2f} s: the election timeout was waited out"
    assert cluster.execute(new, "set", {"after": 1}).error is None
    assert cluster.execute(survivors[0], "get", {"key": "before"}).result == 1


def test_concurrent_callers_every_command_applied_exactly_once(make_cluster: Make) -> None:
    cluster = make_cluster(3, state_machine=RECORDING)
    callers, per_caller = 8, 125
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller(c: int) -> None:
        try:
            with cluster.client(c % 3, timeout=30) as client:
                for i in range(per_caller):
                    outcome = client.execute("x", {"c": c, "i": i})
                    assert outcome.error is None, outcome
                    assert isinstance(outcome.result, int)
                    with lock:
                        results.append(outcome.result)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    total = callers * per_caller
    # Each apply returns the machine's new length: 1..1000, each exactly once.
    assert sorted(results) == list(range(1, total + 1))
    hashes = converged_hashes(cluster, range(3))
    assert_all_equal(hashes)
    with cluster.monitor(0) as m:
        _, data = m.snapshot()
    applied = json.loads(data)
    assert len(applied) == total
    assert {(a["c"], a["i"]) for _, a in applied} == {
        (c, i) for c in range(callers) for i in range(per_caller)
    }


def test_a_raising_apply_returns_the_error_and_the_cluster_goes_on(make_cluster: Make) -> None:
    cluster = make_cluster(3, state_machine=RECORDING)
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(3) if i != leader)
    failed = cluster.execute(follower, "fail", {"why": "test"})
    assert failed.error == "refusing command 'fail' as asked"
    assert failed.result is None
    for i in range(3):
        ok = cluster.execute(i, "fine", {"n": i})
        assert ok.error is None and ok.result == i + 1
    assert_all_equal(converged_hashes(cluster, range(3)))


def test_a_retried_request_id_returns_the_first_outcome_and_applies_once(
    make_cluster: Make,
) -> None:
    cluster = make_cluster(3, state_machine=RECORDING)
    first = cluster.execute(0, "x", {"n": 1}, request_id="req-1")
    again = cluster.execute(1, "x", {"n": 1}, request_id="req-1")
    assert again == first
    leader = cluster.wait_for_leader()
    cluster.stop_node(leader, kill=True)
    survivors = [i for i in range(3) if i != leader]
    cluster.wait_for_leader(timeout=15, among=survivors)
    after = cluster.execute(survivors[0], "x", {"n": 1}, request_id="req-1")
    assert after == first
    other = cluster.execute(survivors[1], "x", {"n": 2}, request_id="req-2")
    assert other.result == first.result + 1  # "x" was applied once, then req-2

    def applied_on_survivor() -> list[object] | None:
        # it may learn req-2's commit a moment after req-2's caller did (from the next
        # append, or a commit notice that waits a few ms for one)
        with cluster.monitor(survivors[0]) as m:
            _, data = m.snapshot()
        applied: list[object] = json.loads(data)
        return applied if len(applied) >= 2 else None

    applied = eventually(applied_on_survivor, 10, what="req-2 applied on the other survivor")
    assert applied == [["x", {"n": 1}], ["x", {"n": 2}]]


def test_log_compaction_snapshots_and_a_node_that_missed_it_installs_the_snapshot(
    make_cluster: Make,
) -> None:
    from .conftest import FAST_RAFT

    cluster = make_cluster(3, raft_overrides={**FAST_RAFT, "compaction_min_entries": 40})
    leader = cluster.wait_for_leader()
    lagging = next(i for i in range(3) if i != leader)
    cluster.stop_node(lagging, kill=True)
    up = [i for i in range(3) if i != lagging]
    for n in range(300):
        assert cluster.execute(up[n % 2], "set", {f"k{n % 50}": n}).error is None
    for i in up:  # each survivor has written a snapshot (either engine's layout)
        state = cluster.directory / f"node{i + 1}"
        snapshots = [*state.glob("raft.snapshot"), *state.glob("snapshots/*")]
        assert any(p.stat().st_size > 0 for p in snapshots), sorted(state.rglob("*"))
    # the survivors' logs were compacted past what the lagging node has: it must be sent the
    # snapshot (through StateMachine.snapshot/restore) to catch up
    cluster.start_node(lagging)
    cluster.wait_ready(timeout=30, among=[lagging])
    assert cluster.execute(lagging, "get", {"key": "k49"}).result == 299
    assert_all_equal(converged_hashes(cluster, range(3)))
    # and a node restarted from its own snapshot + journal comes back with the same state
    cluster.stop_node(up[0], kill=True)
    cluster.start_node(up[0])
    cluster.wait_ready(timeout=30, among=[up[0]])
    assert_all_equal(converged_hashes(cluster, range(3)))
