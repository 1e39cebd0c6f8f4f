"""Check that a user's state machine is deterministic, by running it under the simulator.

Every simulated node applies the same committed log to its own instance of the machine, takes
snapshots, installs other nodes' snapshots and restarts from its own; the simulator demands the
same outcome at every index on every node and the same snapshot bytes at every index. A machine
that reads the clock, draws random numbers, depends on iteration order that differs between
instances, or whose ``restore(snapshot())`` is not the same state, fails with the first index
where two replicas disagree.

    from tsconsensus.testing import check_determinism
    report = check_determinism(MyMachine, lambda rng, n: Command("add", {"x": rng.randrange(9)}))
    assert report.ok, report.explain()

Limitation: every replica runs in one process, so an order that depends on the process's hash
seed (iterating a ``set`` of strings) is the same on all of them and passes unnoticed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..types import Command, StateMachine
from .sim_apps import MachineApp, encode_command
from .sim_result import SimResult
from .sim_schedule import SimOptions
from .simulator import Simulation

CommandSource = Callable[[random.Random, int], Command]


@dataclass
class DeterminismReport:
    """The outcome of :func:`check_determinism`: ``ok``, or the first failing run."""

    seeds_run: int
    commands_applied: int
    failure: SimResult | None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def explain(self) -> str:
        if self.failure is None:
            return (
                f"deterministic across {self.seeds_run} simulated runs "
                f"({self.commands_applied} entries applied)"
            )
        v = self.failure.violation
        return (
            f"not deterministic (seed {self.failure.seed}): {v}\n"
            f"replay with Simulation(seed={self.failure.seed}, ...)"
        )


def check_determinism(
    factory: Callable[[], StateMachine],
    commands: CommandSource,
    *,
    seeds: Iterable[int] = range(10),
    nodes: int = 3,
    options: SimOptions | None = None,
) -> DeterminismReport:
    """Run ``factory``'s machine on every node of simulated clusters fed by ``commands``.

    ``commands(rng, n)`` returns the n-th command (draw any randomness from ``rng``, so runs
    replay). Faults (crashes, partitions, lost storage) are on, so snapshots are taken,
    installed and restored. Never raises for a machine's misbehaviour: it is in the report.
    """
    opts = options or SimOptions(nodes=nodes, core={"snapshot_entries": 25})

    def payload(rng: random.Random, n: int) -> bytes:
        return encode_command(commands(rng, n))

    applied, run = 0, 0
    for seed in seeds:
        run += 1
        result = Simulation(
            seed, opts, app_factory=lambda: MachineApp(factory), payload=payload
        ).run()
        applied += result.stats["applied"]
        if result.violation is not None and result.violation.kind == "state-machine safety":
            return DeterminismReport(run, applied, result)
        if result.violation is not None:
            raise AssertionError(f"the simulator found a Raft violation: {result.report()}")
    return DeterminismReport(run, applied, None)
