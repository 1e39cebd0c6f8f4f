"""The deterministic simulator: thousands of seeded runs pass, runs replay exactly, and every
planted bug is caught."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.planted_bugs import PLANTED, CommitsOldTerms
from tsconsensus.kv import KeyValueMachine
from tsconsensus.raft import Message, MessageType, RaftCore
from tsconsensus.testing import (
    SimOptions,
    Simulation,
    Violation,
    check_determinism,
    run_seeds,
    shrink,
)
from tsconsensus.types import JSON, Command

SEEDS_3 = int(os.environ.get("TSC_SIM_SEEDS", "2000"))
SEEDS_5 = SEEDS_3 // 8


def _first_failure(args: tuple[list[int], SimOptions]) -> str | None:
    seeds, options = args
    result = run_seeds(seeds, options)
    if result is None:
        return None
    return shrink(result, max_runs=60).report()


def _run_in_parallel(seeds: range, options: SimOptions) -> None:
    chunks = [(list(seeds[i::2]), options) for i in range(2)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        failures = [r for r in pool.map(_first_failure, chunks) if r is not None]
    assert not failures, failures[0]


@pytest.mark.heavy
def test_thousands_of_seeded_schedules_keep_raft_safe_and_live_3_nodes() -> None:
    _run_in_parallel(range(SEEDS_3), SimOptions(nodes=3))


def test_seeded_schedules_5_nodes_with_a_slow_disk() -> None:
    _run_in_parallel(range(10_000, 10_000 + SEEDS_5), SimOptions(nodes=5, persist_ms=(0, 8)))


@pytest.mark.soak
def test_soak_many_more_schedules() -> None:
    _run_in_parallel(range(100_000, 130_000), SimOptions(nodes=3))
    _run_in_parallel(range(200_000, 205_000), SimOptions(nodes=5, faults=12))
    _run_in_parallel(
        range(300_000, 305_000), SimOptions(nodes=3, drop=0.2, duplicate=0.1, persist_ms=(0, 10))
    )


def test_a_seed_replays_exactly() -> None:
    first = Simulation(42, SimOptions(nodes=5)).run()
    again = Simulation(42, SimOptions(nodes=5)).run()
    assert first.trace == again.trace and first.stats == again.stats
    assert first.stats["elections"] >= 1 and first.stats["applied"] > 50
    other = Simulation(43, SimOptions(nodes=5)).run()
    assert other.trace != first.trace


def test_runs_exercise_what_they_claim() -> None:
    """Across a few dozen seeds the faults, snapshots, reads and membership changes happen."""
    totals: dict[str, int] = {}
    traces = []
    for seed in range(40):
        result = Simulation(seed).run()
        assert result.ok, result.report()
        traces.extend(result.trace)
        for k, v in result.stats.items():
            totals[k] = totals.get(k, 0) + v
    text = "\n".join(traces)
    for what in (
        "crash-all",
        "wipe",
        "partition",
        "pause",
        "rumor",
        "installs snapshot",
        "committed at",
    ):
        assert what in text, what
    assert totals["snapshots"] > 0 and totals["reads"] > 100 and totals["refused"] > 0
    assert totals["elections"] > 40


PLANTED_SEARCH: dict[str, tuple[SimOptions, range]] = {
    "truncates-on-every-append": (SimOptions(), range(0, 40)),
    "votes-before-persisting": (SimOptions(), range(990, 1020)),
    "acknowledges-before-persisting": (SimOptions(), range(360, 390)),
    "reads-locally": (SimOptions(), range(0, 10)),
    "forgets-entries-on-restart": (SimOptions(), range(0, 10)),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_SEARCH))
def test_planted_bug_is_caught(bug: str) -> None:
    # seeds where each bug shows (found by searching); the search must still find it here
    options, seeds = PLANTED_SEARCH[bug]
    result = run_seeds(seeds, options, core_factory=PLANTED[bug])
    assert result is not None, f"the simulator missed the planted bug {bug!r}"
    small = shrink(result, max_runs=6, core_factory=PLANTED[bug])
    assert not small.ok and len(small.schedule) <= len(result.schedule)
    report = small.report()
    assert f"seed {result.seed}: VIOLATION" in report and "schedule:" in report


def test_failing_run_is_shrunk_to_the_faults_that_matter() -> None:
    bug = PLANTED["forgets-entries-on-restart"]
    result = run_seeds(range(10), SimOptions(faults=10), core_factory=bug)
    assert result is not None
    small = shrink(result, core_factory=bug)
    assert not small.ok and 1 <= len(small.schedule) < len(result.schedule)
    # every fault left is needed: without any one of them the run passes
    for i in range(len(small.schedule)):
        fewer = small.schedule[:i] + small.schedule[i + 1 :]
        assert Simulation(small.seed, small.options, fewer, core_factory=bug).run().ok
    assert "VIOLATION" in small.report() and str(small.schedule[0]) in small.report()


def test_user_state_machine_checked_for_determinism() -> None:
    def kv_commands(rng: random.Random, n: int) -> Command:
        key = f"k{rng.randrange(4)}"
        kind = rng.choice(["set", "get", "cas", "delete", "keys", "bogus"])
        if kind == "set":
            return Command("set", {key: n})
        if kind == "cas":
            return Command("cas", {"key": key, "expected": rng.choice([None, n - 1]), "value": n})
        if kind == "keys":
            return Command("keys", {})
        return Command(kind, {"key": key})

    report = check_determinism(KeyValueMachine, kv_commands, seeds=range(6))
    assert report.ok, report.explain()
    assert report.commands_applied > 300


class _Clocky:
    """Deterministic-looking, but its results depend on which replica runs it."""

    instances = 0

    def __init__(self) -> None:
        _Clocky.instances += 1
        self.me = _Clocky.instances
        self.total = 0

    def apply(self, command: Command) -> JSON:
        self.total += 1
        return {"total": self.total, "replica": self.me}

    def snapshot(self) -> bytes:
        return json.dumps(self.total).encode()

    def restore(self, data: bytes) -> None:
        self.total = json.loads(data)


class _LossySnapshot:
    """Deterministic apply, but restore(snapshot()) loses part of the state."""

    def __init__(self) -> None:
        self.items: list[int] = []

    def apply(self, command: Command) -> JSON:
        self.items.append(1)
        return len(self.items)

    def snapshot(self) -> bytes:
        return json.dumps(self.items[: max(0, len(self.items) - 1)]).encode()

    def restore(self, data: bytes) -> None:
        self.items = json.loads(data)


@pytest.mark.parametrize("machine", [_Clocky, _LossySnapshot])
def test_nondeterministic_state_machine_is_reported(machine: type) -> None:
    report = check_determinism(machine, lambda rng, n: Command("x", n), seeds=range(10))
    assert not report.ok
    assert "not deterministic" in report.explain()
    assert report.failure is not None and report.failure.violation is not None
    assert report.failure.violation.kind == "state-machine safety"


def _figure_8(core_class: type) -> None:
    """Raft paper, figure 8: an entry of an old term on a majority is not safe to commit.

    S1 leads term 2 and gets index 2 to S2 only; S5 leads term 3 and writes its own index 2
    alone; S1 leads term 4 and copies its old index 2 to S3 (a majority), while its own term-4
    entry reaches S2 only. A core that commits index 2 now has applied an entry that S5,
    elected next, overwrites."""
    from tests.raft_net import Net
    from tsconsensus.raft import MessageType as MT
    from tsconsensus.testing.sim_checks import SafetyChecker

    net = Net(5, checker=SafetyChecker(), core_class=core_class, max_batch_bytes=1)

    def hold_appends_to(*targets: int) -> object:
        return lambda m: m.type is MT.APPEND and m.to in targets and m.entries

    net.core(1).step(_timeout_now(net, 1))
    net.settle(hold=hold_appends_to(3, 4, 5))  # index 2 (term 2) reaches S2 only
    net.queue.clear()
    net.crash(1)
    net.core(5).step(_timeout_now(net, 5))
    net.settle(hold=hold_appends_to(1, 2, 3, 4))  # S5's index 2 (term 3) stays on S5
    net.queue.clear()
    net.crash(5)
    net.restart(1)
    net.core(1).step(_timeout_now(net, 1))

    def only_index_2_to_s3(m: object) -> bool:
        assert isinstance(m, Message)
        if m.type is not MT.APPEND or not m.entries:
            return False
        if m.to == 2:
            return False
        if m.to != 3:
            return True
        # S3 may see anything it will reject, and index 2; never the term-4 entry
        return net.core(3).log.last_index >= 2 and m.entries[-1].index >= 3

    net.settle(hold=only_index_2_to_s3)  # S1-S3 hold index 2 (term 2); term 4 only S1, S2
    net.queue.clear()
    net.crash(1)
    net.restart(5)
    net.core(5).step(_timeout_now(net, 5))
    net.settle()


def _timeout_now(net: object, member: int) -> Message:
    from tests.raft_net import Net

    assert isinstance(net, Net)
    term = max(n.core.term for i, n in net.nodes.items() if i not in net.down)
    return Message(MessageType.TIMEOUT_NOW, to=member, frm=2, term=term)


def test_figure_8_is_safe_and_the_old_term_commit_bug_is_caught() -> None:
    _figure_8(RaftCore)  # the real core: S5 overwrites index 2, which was never committed
    with pytest.raises(Violation, match="overwrites committed entry 2"):
        _figure_8(CommitsOldTerms)
