"""A fault runner: a real cluster under faults, its clients' history checked for linearizability.

    report = run(RunOptions(nodes=3, duration_s=30, seed=7))
    print(format_report(report))      # operations, faults, elections, replicas, verdict
    assert report.exit_code == 0

From a shell: ``python -m tsconsensus.testing.faults --help`` (exit 0 pass, 1 violation or
problem, 2 could not run or undecided). The pieces: :mod:`.clients` (the workload and how
answers are recorded), :mod:`.nemesis` (the faults), :mod:`.control` (acting on the cluster),
:mod:`.options` (what to run), :mod:`.runner` (the phases), :mod:`.report` (the verdict and
the summary).
"""

from __future__ import annotations

from .clients import ClientSettings, Outcome
from .nemesis import DEFAULT_NEMESES, NEMESES, NemesisSettings, partition_links
from .options import FAST_RAFT, PLANTED_BUGS, RunOptions
from .report import (
    EXIT_COULD_NOT_RUN,
    EXIT_PASS,
    EXIT_VIOLATION,
    Judgement,
    RunReport,
    RunVerdict,
    format_report,
    judge,
)
from .runner import run

__all__ = [
    "DEFAULT_NEMESES",
    "EXIT_COULD_NOT_RUN",
    "EXIT_PASS",
    "EXIT_VIOLATION",
    "FAST_RAFT",
    "NEMESES",
    "PLANTED_BUGS",
    "ClientSettings",
    "Judgement",
    "NemesisSettings",
    "Outcome",
    "RunOptions",
    "RunReport",
    "RunVerdict",
    "format_report",
    "judge",
    "partition_links",
    "run",
]
