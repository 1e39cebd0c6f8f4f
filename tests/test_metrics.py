"""The metrics page with hostile command names (pure unit; the cluster test is in
test_hostile_input.py)."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from tsconsensus import NodeStatus, RaftState
from tsconsensus.client import parse_metrics
from tsconsensus.metrics import MAX_LABEL_CHARS, MAX_NAMES, Metrics, label_value


def _status() -> NodeStatus:
    return NodeStatus(
        node_id="127.0.0.1:6270",
        address="127.0.0.1",
        state=RaftState.LEADER,
        leader="127.0.0.1:6270",
        term=1,
        commit_index=1,
        applied_index=1,
        has_quorum=True,
        members=(),
    )


def _names(page: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "tsc_commands_total":
                found[sample.labels["name"]] = sample.value
    return found


def test_hostile_names_keep_the_page_small_and_parseable() -> None:
    metrics = Metrics()
    hostile = ["\ud800y", 'quote"back\\slash\nnewline', "é", "x" * 1_000_000, "\x00ctl"]
    for name in hostile:
        metrics.command_done(name, 0.001, failed=True, forwarded=False)
    for i in range(10):
        metrics.command_done(f"{i}" + "m" * 1_000_000, 0.001, failed=False, forwarded=False)
    page = metrics.render(_status())
    assert len(page) < 16_000
    page.encode("utf-8")  # strict: a lone surrogate would raise here
    names = _names(page)
    assert names["\\ud800y"] == 1
    assert names['quote"back\\slash\nnewline'] == 1  # escaped on the page, intact when parsed
    assert names["é"] == 1
    assert all(len(n) <= MAX_LABEL_CHARS for n in names)
    assert len(names) == len(hostile) + 10


def test_distinct_names_are_capped_and_the_rest_counted_as_other() -> None:
    metrics = Metrics()
    for i in range(MAX_NAMES + 50):
        metrics.command_done(f"name{i}", 0.001, failed=False, forwarded=False)
    metrics.command_done("name0", 0.001, failed=False, forwarded=False)  # known: still its own
    names = _names(metrics.render(_status()))
    assert len(names) == MAX_NAMES + 1
    assert names["other"] == 50 and names["name0"] == 2


def test_label_value_cuts_long_names() -> None:
    assert label_value("a" * 10) == "a" * 10
    assert label_value("a" * 100) == "a" * (MAX_LABEL_CHARS - 3) + "..."


def test_the_client_reads_the_page_back_sample_by_sample() -> None:
    metrics = Metrics()
    metrics.command_done("a b", 0.003, failed=False, forwarded=False)
    metrics.command_done('odd "name"', 0.2, failed=True, forwarded=True)
    page = metrics.render(dataclasses.replace(_status(), snapshot_index=7))
    samples = parse_metrics(page + "# a comment\nnot a sample line\n")
    assert samples["tsc_raft_snapshot_index"] == 7
    assert samples['tsc_commands_total{name="a b"}'] == 1
    assert samples['tsc_commands_failed_total{name="odd \\"name\\""}'] == 1
    assert samples['tsc_execute_latency_seconds_bucket{le="0.005"}'] == 1
    assert samples['tsc_execute_latency_seconds_bucket{le="+Inf"}'] == 2
    assert samples["tsc_commands_forwarded_total"] == 1
    assert "not a sample" not in " ".join(samples)
