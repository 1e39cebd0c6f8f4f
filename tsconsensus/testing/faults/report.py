"""The verdict of a fault run and its summary.

:func:`judge` turns what a run saw into one verdict: the history checked for linearizability
(final reads after healing are in it, so a lost acknowledged write shows up as a read that no
order explains), plus the problems the run itself found (replicas that differ, a node that did
not come back, a process left behind). Exit codes: 0 pass; 1 a violation or any problem;
2 the run could not be made, or the checker ran out of time (which is never a pass).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..history import Operation
from ..linearizability import CheckResult, UnsupportedOperationError, Verdict, check_history
from ..linearizability.report import format_window
from .clients import OPS, Outcome

EXIT_PASS = 0
EXIT_VIOLATION = 1
EXIT_COULD_NOT_RUN = 2
_SHOWN_KEYS = 3
"""Failing keys whose window the summary shows (the history file has them all)."""


class RunVerdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNDECIDED = "UNDECIDED"
    """The checker ran out of time: nothing was shown wrong, nothing shown right."""
    COULD_NOT_RUN = "COULD NOT RUN"


@dataclass(frozen=True)
class Judgement:
    """The verdict and why. ``problems`` are failures besides linearizability."""

    verdict: RunVerdict
    check: CheckResult | None
    problems: tuple[str, ...] = ()
    could_not_run: str | None = None

    @property
    def exit_code(self) -> int:
        if self.verdict is RunVerdict.PASS:
            return EXIT_PASS
        if self.verdict is RunVerdict.FAIL:
            return EXIT_VIOLATION
        return EXIT_COULD_NOT_RUN


def judge(
    operations: Sequence[Operation],
    problems: Sequence[str] = (),
    *,
    could_not_run: str | None = None,
    check_timeout_s: float = 120.0,
) -> Judgement:
    """Check ``operations`` (the whole history, final reads included) and weigh ``problems``.

    A violation, or any problem, fails the run; a history the checker cannot judge (an
    operation with a malformed result) fails it too, since the nodes sent that result. A
    checker timeout with nothing else wrong is ``UNDECIDED`` (exit 2), never a pass.
    """
    if could_not_run is not None:
        return Judgement(RunVerdict.COULD_NOT_RUN, None, tuple(problems), could_not_run)
    found = list(problems)
    check: CheckResult | None = None
    try:
        check = check_history(operations, timeout_s=check_timeout_s)
    except UnsupportedOperationError as exc:
        found.append(f"the history cannot be checked: {exc}")
    if found or (check is not None and check.verdict is Verdict.VIOLATION):
        return Judgement(RunVerdict.FAIL, check, tuple(found))
    assert check is not None
    if check.verdict is Verdict.TIMEOUT:
        return Judgement(RunVerdict.UNDECIDED, check, ())
    return Judgement(RunVerdict.PASS, check, ())


@dataclass
class RunReport:
    """Everything a run prints, and the judgement. ``replicas`` maps node name to
    ``(applied index, sha256 of its snapshot)``; ``terms`` is (first, last, {term: leader})."""

    seed: int
    command: str
    nodes: int
    duration_s: float
    nemeses: tuple[str, ...]
    judgement: Judgement
    counts: Counter[tuple[str, Outcome]] = field(default_factory=Counter)
    cas_applied: int = 0
    keys: int = 0
    clients: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    partition_shapes: Counter[str] = field(default_factory=Counter)
    terms: tuple[int | None, int, dict[int, str]] = (None, 0, {})
    replicas: dict[str, tuple[int, str]] = field(default_factory=dict)
    pids_started: int = 0
    leftover_pids: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)
    directory: Path | None = None
    history_path: Path | None = None
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return self.judgement.exit_code


def format_report(report: RunReport) -> str:
    """The summary a run prints: setup, operations by op and outcome, faults, elections,
    replicas, processes, the checker's verdict (with failing windows) and the run's verdict."""
    j = report.judgement
    lines = [
        f"fault run: seed {report.seed}, {report.nodes} nodes" + f", {report.duration_s:g} s, "
        f"nemesis {','.join(report.nemeses) or 'none'}",
        f"reproduce: {report.command}",
    ]
    lines += [f"note: {note}" for note in report.notes]
    if j.could_not_run is not None:
        lines.append(f"could not run: {j.could_not_run}")
    if report.counts:
        lines.append(
            f"operations ({report.clients} clients, {report.keys} keys in all; "
            f"{report.cas_applied} cas applied):"
        )
        outcomes = list(Outcome)
        header = ["op", *[o.value for o in outcomes], "total"]
        rows = []
        for op in [*OPS, "total"]:
            cells = [
                sum(
                    n
                    for (o, out), n in report.counts.items()
                    if out is outcome and op in (o, "total")
                )
                for outcome in outcomes
            ]
            rows.append([op, *map(str, cells), str(sum(cells))])
        lines += _table(header, rows)
    shapes = ", ".join(f"{k} {v}" for k, v in sorted(report.partition_shapes.items()))
    faults = ", ".join(
        f"{k} {v}" + (f" ({shapes})" if k == "partition" and shapes else "")
        for k, v in sorted(report.faults.items())
    )
    lines.append(f"faults: {faults or 'none'}")
    first, last, leaders = report.terms
    if first is not None:
        seen = [f"t{t}:{name}" for t, name in sorted(leaders.items())]
        if len(seen) > 12:
            seen = [*seen[:6], f"... ({len(seen) - 12} more)", *seen[-6:]]
        lines.append(
            f"elections: terms {first} to {last}; {len(leaders)} leaders seen: "
            + (" ".join(seen) or "none")
        )
    if report.replicas:
        states = {state for _, state in report.replicas.values()}
        verdict = "all equal" if len(states) == 1 else "DIFFER"
        listed = ", ".join(
            f"{name}@{index} {digest[:12]}"
            for name, (index, digest) in sorted(report.replicas.items())
        )
        lines.append(f"replicas: {listed} ({verdict})")
    left = ", ".join(map(str, report.leftover_pids)) or "none left"
    lines.append(f"processes: {report.pids_started} started, {left}")
    if j.check is not None:
        lines += _check_lines(j.check)
    for problem in j.problems:
        lines.append(f"PROBLEM: {problem}")
    if report.history_path is not None:
        lines.append(f"history: {report.history_path}")
    if report.directory is not None:
        lines.append(f"cluster files: {report.directory}")
    lines.append(f"verdict: {j.verdict.value} (exit {j.exit_code}, {report.elapsed_s:.0f} s)")
    return "\n".join(lines)


def _check_lines(check: CheckResult) -> list[str]:
    unknown = sum(k.unknown for k in check.keys)
    lines = [
        f"linearizability: {check.verdict.value} ({len(check.keys)} keys, {check.operations} "
        f"operations of which {unknown} unknown, checked in {check.elapsed_s:.1f} s)"
    ]
    failing = [key for key in check.keys if key.verdict is not Verdict.OK]
    for key in failing[:_SHOWN_KEYS]:
        if key.verdict is Verdict.TIMEOUT:
            lines.append(f"key {key.key!r}: out of time ({key.operations} operations): not a pass")
        elif key.verdict is Verdict.VIOLATION:
            lines.append(
                format_window(key.window)
                if key.window is not None
                else f"key {key.key!r}: not linearizable (no time left to find a window)"
            )
    if len(failing) > _SHOWN_KEYS:
        more = [key.key for key in failing[_SHOWN_KEYS:]]
        lines.append(f"... and {len(more)} more key(s) failing: {', '.join(more[:20])}")
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.rjust(w) if c else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
