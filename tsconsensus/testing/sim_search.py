"""Searching many seeds for a failure, and shrinking a failing run to the faults that matter."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from .sim_result import SimResult
from .sim_schedule import SimOptions
from .simulator import Simulation


def run_seeds(
    seeds: Iterable[int], options: SimOptions | None = None, **kwargs: Any
) -> SimResult | None:
    """Run each seed; the first failing result, or None if all pass."""
    for seed in seeds:
        result = Simulation(seed, options, **kwargs).run()
        if not result.ok:
            return result
    return None


def shrink(result: SimResult, *, max_runs: int = 200, **kwargs: Any) -> SimResult:
    """The failing run with as few faults as still fail (greedy, one fault at a time), each
    fault also shortened where that still fails. ``kwargs`` as for :class:`Simulation`."""
    best, runs = result, 0
    changed = True
    while changed and runs < max_runs:
        changed = False
        for i in range(len(best.schedule)):
            candidates = [best.schedule[:i] + best.schedule[i + 1 :]]
            f = best.schedule[i]
            if f.duration_ms > 20:
                shorter = replace(f, duration_ms=f.duration_ms // 2)
                candidates.append([*best.schedule[:i], shorter, *best.schedule[i + 1 :]])
            for schedule in candidates:
                runs += 1
                trial = Simulation(best.seed, best.options, schedule, **kwargs).run()
                if not trial.ok:
                    best, changed = trial, True
                    break
            if changed or runs >= max_runs:
                break
    return best
