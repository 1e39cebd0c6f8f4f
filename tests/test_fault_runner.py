"""The fault runner (``python -m tsconsensus.testing.faults``): a short run under kills, pauses
and partitions passes; its verdict fails on a history with a stale read and on a cluster that
loses acknowledged writes; the long run of every nemesis on five nodes is ``-m soak``
(``bash scripts/test.sh -m soak -k fault_runner``)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tsconsensus.testing import Operation, read_history
from tsconsensus.testing.faults import (
    NEMESES,
    ClientSettings,
    NemesisSettings,
    Outcome,
    RunOptions,
    RunReport,
    RunVerdict,
    format_report,
    judge,
    partition_links,
    run,
)
from tsconsensus.testing.faults.clients import Workload
from tsconsensus.testing.netns import nftables_available

from .histories import get, pathological, put

QUICK = NemesisSettings(quiet_s=(0.5, 1.5), hold_s=(0.5, 2.0), recover_timeout_s=30.0)


def _assert_passed(report: RunReport) -> None:
    summary = format_report(report)
    print(summary)
    assert report.exit_code == 0, summary
    check = report.judgement.check
    assert check is not None and check.ok
    assert report.leftover_pids == ()
    assert len(report.replicas) == report.nodes
    assert len({state for _, state in report.replicas.values()}) == 1
    ok = sum(n for (_, outcome), n in report.counts.items() if outcome is Outcome.OK)
    assert ok > 500, summary  # the clients got real work through, not just errors


@pytest.mark.heavy
def test_short_run_under_kills_pauses_and_a_partition_passes(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    report = run(
        RunOptions(
            nodes=3,
            duration_s=25,
            seed=20261202,
            nemeses=("kill", "kill-leader", "pause", "partition"),
            nemesis=QUICK,
            directory=tmp_path / "run",
            history=history,
        )
    )
    _assert_passed(report)
    assert report.faults["kill"] + report.faults["kill-leader"] >= 2
    assert report.faults["pause"] >= 1
    if nftables_available() is None:
        assert report.faults["partition"] >= 1
    else:
        assert any("no partitions" in note for note in report.notes)
    saved = read_history(history)
    assert report.judgement.check is not None
    assert len(saved) == report.judgement.check.operations
    assert any(op.client == "final" for op in saved), "the final reads are in the history"


def test_a_cluster_that_loses_acknowledged_writes_fails_the_run(tmp_path: Path) -> None:
    report = run(
        RunOptions(
            nodes=3,
            duration_s=6,
            seed=1,
            nemeses=(),
            directory=tmp_path / "run",
            state_machine="tests.fault_machines:LossyKeyValue",
        )
    )
    print(format_report(report))
    assert report.judgement.verdict is RunVerdict.FAIL
    assert report.exit_code == 1
    assert report.judgement.check is not None and report.judgement.check.windows
    assert (tmp_path / "run" / "history.jsonl").exists(), "a failing run keeps its history"


def test_replicas_that_differ_fail_the_run(tmp_path: Path) -> None:
    report = run(
        RunOptions(
            nodes=3,
            duration_s=3,
            seed=2,
            nemeses=(),
            directory=tmp_path / "run",
            state_machine="tests.fault_machines:DivergentKeyValue",
        )
    )
    summary = format_report(report)
    print(summary)
    assert report.judgement.check is not None and report.judgement.check.ok
    assert report.exit_code == 1, summary
    assert any("replicas differ" in problem for problem in report.judgement.problems)
    assert len(list((tmp_path / "run" / "snapshots").iterdir())) == 3


def test_verdict_fails_on_a_stale_read_and_on_problems() -> None:
    good = [
        put("c1", "k", 1, 0.0, 1.0, None),
        put("c2", "k", 2, 2.0, 3.0, 1),
        get("c1", "k", 4.0, 5.0, 2),
    ]
    assert judge(good).verdict is RunVerdict.PASS
    assert judge(good).exit_code == 0

    stale = [*good[:2], get("c1", "k", 4.0, 5.0, 1)]  # 2 was acknowledged before this read
    verdict = judge(stale)
    assert verdict.verdict is RunVerdict.FAIL and verdict.exit_code == 1
    report = RunReport(seed=1, command="x", nodes=3, duration_s=1, nemeses=(), judgement=verdict)
    assert "cannot be linearized" in format_report(report)

    assert judge(good, ["node2 did not come back"]).exit_code == 1
    assert judge(good, could_not_run="no namespace").exit_code == 2
    multi_key = [Operation("c1", "set", {"a": 1, "b": 2}, 0.0, 1.0, {"a": None, "b": None})]
    assert judge(multi_key).exit_code == 1, "a history the checker cannot judge is no pass"


def test_a_checker_out_of_time_is_undecided_never_a_pass() -> None:
    verdict = judge(pathological(), check_timeout_s=0.3)
    assert verdict.verdict is RunVerdict.UNDECIDED
    assert verdict.exit_code == 2


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("shape", ["isolate-leader", "split", "bridge"])
def test_partition_shapes(nodes: int, shape: str) -> None:
    for seed in range(20):
        links, sides = partition_links(shape, range(nodes), 0, random.Random(seed))
        cut = {frozenset(link) for link in links}
        assert sorted(i for side in sides for i in side) == list(range(nodes))
        if shape == "bridge":
            bridge = sides[2][0]
            assert all(bridge not in link for link in cut), "the bridge sees everyone"
            assert len(sides[0]) + 1 > nodes // 2 and len(sides[1]) + 1 > nodes // 2
        else:
            minority, majority = sides
            assert len(minority) == (nodes - 1) // 2 and len(majority) > nodes // 2
            assert cut == {frozenset((a, b)) for a in minority for b in majority}
            if shape == "isolate-leader":
                assert 0 in minority


def test_workload_moves_to_fresh_keys_and_never_repeats_a_value() -> None:
    workload = Workload(keys=3, ops_per_key=10)
    rng = random.Random(0)
    per_key = Counter(workload.key(rng) for _ in range(300))
    assert max(per_key.values()) <= 10
    assert len(workload.keys_used()) == len(per_key) >= 30
    values = [workload.value() for _ in range(100)]
    assert len(set(values)) == 100


def test_command_line_help_and_bad_options() -> None:
    command = [sys.executable, "-m", "tsconsensus.testing.faults"]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for kind in NEMESES:
        assert kind in shown.stdout
    assert "TSC_PLANTED_BUG" in shown.stdout and "exit codes" in shown.stdout
    bad = subprocess.run(
        [*command, "--nemesis", "meteor"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "meteor" in bad.stderr


@pytest.mark.soak
@pytest.mark.timeout(1200)
def test_long_run_of_every_nemesis_on_five_nodes(tmp_path: Path) -> None:
    """The README's reliability run: ``python -m tsconsensus.testing.faults --nodes 5
    --duration 300 --clients 10 --nemesis all --power-loss --seed 7``."""
    report = run(
        RunOptions(
            nodes=5,
            duration_s=300,
            seed=7,
            clients=10,
            nemeses=tuple(NEMESES),
            power_loss=True,
            directory=tmp_path / "run",
            client=ClientSettings(),
        )
    )
    _assert_passed(report)
    for kind in NEMESES:
        if kind != "partition" or nftables_available() is None:
            assert report.faults[kind] >= 1, kind


def _planted(tmp_path: Path, bug: str, seconds: float, seed: int, nemeses: tuple[str, ...]) -> None:
    report = run(
        RunOptions(
            nodes=3,
            duration_s=seconds,
            seed=seed,
            clients=10,
            nemeses=nemeses,
            directory=tmp_path / "run",
            plant=bug,
        )
    )
    summary = format_report(report)
    print(summary)
    assert report.judgement.verdict is RunVerdict.FAIL, f"the runner missed {bug}:\n{summary}"
    assert report.exit_code == 1


@pytest.mark.heavy
def test_planted_local_reads_are_caught(tmp_path: Path) -> None:
    _planted(tmp_path, "local-reads", 30, 3, ("pause", "partition"))


@pytest.mark.soak
def test_planted_forgotten_request_ids_are_caught(tmp_path: Path) -> None:
    _planted(tmp_path, "forget-request-ids", 60, 4, ("kill-leader", "partition"))
