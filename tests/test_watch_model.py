"""The dashboard's arithmetic and event finding (``tsc status --watch``), on made-up polls."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tsconsensus_cli.watch_model import Watch, counters, quantile

A, B, C, D = "a" * 16, "b" * 16, "c" * 16, "d" * 16


def node(
    node_id: str,
    *,
    leader: bool = False,
    commit: int = 0,
    snapshot: int = 0,
    commands: float = 0.0,
    fast: float = 0.0,
    slow: float = 0.0,
) -> dict[str, Any]:
    """A reachable member whose /metrics counted ``fast`` commands under 5 ms and ``slow``
    between 50 and 100 ms."""
    metrics = {
        'tsc_commands_total{name="set"}': commands,
        'tsc_execute_latency_seconds_bucket{le="0.005"}': fast,
        'tsc_execute_latency_seconds_bucket{le="0.05"}': fast,
        'tsc_execute_latency_seconds_bucket{le="0.1"}': fast + slow,
        'tsc_execute_latency_seconds_bucket{le="+Inf"}': fast + slow,
        "tsc_raft_term": 3.0,
    }
    return {
        "id": node_id,
        "address": f"127.0.0.{ord(node_id[0]) - 96}",
        "reachable": True,
        "state": "leader" if leader else "follower",
        "leader": leader,
        "term": 3,
        "commit_index": commit,
        "applied_index": commit,
        "snapshot_index": snapshot,
        "metrics": metrics,
    }


def down(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "address": "127.0.0.9", "reachable": False, "error": "refused"}


def view(leader: str | None, *nodes: dict[str, Any], term: int = 3) -> dict[str, Any]:
    return {
        "leader": leader,
        "leaders": [leader] if leader else [],
        "term": term,
        "has_quorum": True,
        "healthy": leader is not None,
        "nodes": list(nodes),
    }


def test_counters_sum_every_name_and_read_the_buckets() -> None:
    total, buckets = counters(
        {
            'tsc_commands_total{name="set"}': 3,
            'tsc_commands_total{name="a b"}': 4,
            "tsc_commands_failed_total": 9,
            'tsc_execute_latency_seconds_bucket{le="0.5"}': 6,
            'tsc_execute_latency_seconds_bucket{le="+Inf"}': 7,
        }
    )
    assert total == 7 and buckets == {0.5: 6, math.inf: 7}


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    assert quantile(0.99, {}) is None and quantile(0.99, {1.0: 0, math.inf: 0}) is None
    assert quantile(0.5, {0.1: 50, 0.2: 100, math.inf: 100}) == pytest.approx(0.1)
    assert quantile(0.99, {0.1: 0, 0.2: 100, math.inf: 100}) == pytest.approx(0.199)
    assert quantile(0.99, {5.0: 1, math.inf: 100}) == 5.0  # past the last bucket: its bound


def test_rates_come_from_deltas_over_the_window_and_survive_a_counter_reset() -> None:
    watch = Watch(window_s=5.0)
    watch.feed(view(A, node(A, leader=True, commit=10, commands=100, fast=100)), 0.0, 0.0)
    assert watch.rates().commands_per_s is None  # one poll: nothing to compare yet
    watch.feed(view(A, node(A, leader=True, commit=30, commands=200, fast=199, slow=1)), 1.0, 1.0)
    rates = watch.rates()
    assert rates.commands_per_s == pytest.approx(100.0)
    assert rates.commits_per_s == pytest.approx(20.0)
    assert rates.p99_s == pytest.approx(0.005)  # 99 of the 100 new ones were fast
    # the node restarted: its counters start from zero again, and count as new
    watch.feed(view(A, node(A, leader=True, commit=40, commands=50, slow=50)), 2.0, 2.0)
    assert watch.rates().commands_per_s == pytest.approx(75.0)
    assert 0.05 < (watch.rates().p99_s or 0) <= 0.1
    # once the window has passed, only the newest step counts
    watch.feed(view(A, node(A, leader=True, commit=40, commands=50, slow=50)), 7.5, 7.5)
    assert watch.rates().commands_per_s == 0.0 and watch.rates().p99_s is None
    assert list(watch.commit_history) == pytest.approx([20.0, 10.0, 0.0])


def test_a_lower_commit_from_a_lagging_survivor_is_no_negative_rate() -> None:
    watch = Watch()
    watch.feed(view(A, node(A, leader=True, commit=100), node(B, commit=90)), 0.0, 0.0)
    watch.feed(view(None, down(A), node(B, commit=95)), 1.0, 1.0)
    watch.feed(view(B, down(A), node(B, leader=True, commit=130)), 2.0, 2.0)
    assert list(watch.commit_history) == [0.0, 30.0]


def test_events_name_elections_joins_removals_snapshots_and_silent_members() -> None:
    watch = Watch()
    first = watch.feed(view(A, node(A, leader=True), node(B), node(C)), 0.0, 100.0)
    assert [e.text for e in first] == ["watching 3 members; leader aaaaaaaa, term 3"]
    assert watch.leader_for(4.0) == (4.0, False)  # led at least since the watch began
    lost = watch.feed(view(None, down(A), node(B), node(C)), 1.0, 101.0)
    assert [(e.kind, e.text) for e in lost] == [
        ("no-leader", "no leader (term 3)"),
        ("unreachable", "aaaaaaaa does not answer"),
    ]
    assert watch.leader_for(1.5) is None
    won = watch.feed(view(B, down(A), node(B, leader=True), node(C), term=4), 2.0, 102.0)
    assert [e.text for e in won] == ["election: bbbbbbbb leads, term 4 (was aaaaaaaa)"]
    assert watch.leader_for(5.0) == (3.0, True)
    changed = watch.feed(view(B, node(B, leader=True, snapshot=500), node(D)), 3.0, 103.0)
    assert sorted(e.text for e in changed) == [
        "joined: dddddddd (127.0.0.4)",
        "removed: aaaaaaaa",
        "removed: cccccccc",
        "snapshot: bbbbbbbb at index 500",
    ]
    assert [e.at for e in changed] == [103.0] * 4
    assert len(watch.events) == 1 + 2 + 1 + 4


def test_no_answer_is_one_event_until_a_member_answers_again() -> None:
    watch = Watch()
    watch.feed(view(A, node(A, leader=True)), 0.0, 0.0)
    assert [e.kind for e in watch.failed("refused", 1.0, 1.0)] == ["no-answer"]
    assert watch.failed("refused", 2.0, 2.0) == []
    assert watch.to_json([], 2.0, 2.0)["stale"] is True
    watch.feed(view(A, node(A, leader=True)), 3.0, 3.0)
    assert watch.error is None and watch.to_json([], 3.0, 3.0)["stale"] is False


def test_json_has_the_view_the_rates_and_the_new_events_but_no_raw_metrics() -> None:
    watch = Watch()
    events = watch.feed(view(A, node(A, leader=True, commands=1)), 0.0, 10.0)
    data = watch.to_json(events, 0.5, 10.5)
    assert data["leader"] == A and data["time"] == 10.5 and data["leader_for_s"] == 0.5
    assert "metrics" not in data["nodes"][0]
    assert data["rates"] == {
        "window_s": 5.0,
        "commands_per_s": None,
        "p99_latency_s": None,
        "commits_per_s": None,
    }
    assert data["events"] == [{"at": 10.0, "kind": "watching", "text": events[0].text}]
