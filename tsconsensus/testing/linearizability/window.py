"""The shortest failing window of a key whose history is not linearizable.

Three steps, each keeping a sub-history that is itself not linearizable:

1. The shortest failing prefix: the history cut just after the return of its k-th returning
   operation, for the smallest k that fails (binary search: a prefix of a linearizable history is
   linearizable). Operations still running at the cut, and those whose outcome is unknown, stay
   as "may take effect or not". The operation whose return ends that prefix is the culprit: the
   first whose result nothing can explain.
2. Whether the violation needs the history's beginning: if the prefix fails from any starting
   value of the key, so will the window, which can then be read on its own ("independent of the
   past"). Otherwise it is judged from the absent key the history started with, which is what
   catches a read of a value never written or a ``delete`` that found a key nobody created.
3. Shrinking: drop operations with a known outcome, in halves then one at a time (delta
   debugging), while what is left still fails; the culprit always stays. Unknown-outcome
   operations stay in every probe, since dropping one can only make a violation look worse than
   it is: a window is never blamed on a write that might have happened.

A culprit that saw a value no operation on the key ever writes is its own window, and the
clearest one: shrinking could otherwise keep some write it contradicts instead.

The whole computation has a deadline; past it the window found so far is returned, marked not
minimal. It is still a failing sub-history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..history import Operation
from .model import ABSENT, ANYTHING, KeyOp, Kind
from .search import is_linearizable
from .tokens import PRESENT, targets


@dataclass(frozen=True)
class Window:
    """A small part of one key's history that is not linearizable by itself.

    ``operations`` (known outcomes, culprit included, by start time) together with the
    unknown-outcome operations that preceded the culprit's return cannot be linearized; from the
    key's initial absent state, or from any state when ``independent_of_past``. ``unknown`` lists
    those unknown-outcome operations that write a value (or remove the key) that the window
    observes: shown because the reader would ask about them. An operation still running when the
    culprit returned counts as unknown even if it returned later. ``minimal`` means no single
    operation of ``operations`` can be dropped (the shrinker finished within its deadline).
    """

    key: str
    operations: tuple[Operation, ...]
    unknown: tuple[Operation, ...]
    culprit: Operation
    independent_of_past: bool
    minimal: bool


def find_window(key: str, ops: Sequence[KeyOp], deadline: float) -> Window:
    """The shortest failing window of ``ops`` (one key's operations, known not linearizable)."""
    returns = sorted((op for op in ops if op.known), key=lambda op: (op.end, op.index))
    lo, hi = 0, len(returns)
    minimal = True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        verdict = is_linearizable(_prefix(ops, returns[mid - 1]), ABSENT, deadline)
        if verdict is None:
            minimal = False
            break
        if verdict:
            lo = mid
        else:
            hi = mid
    culprit = returns[hi - 1]
    prefix = _prefix(ops, culprit)
    context = [op for op in prefix if not op.known]
    suspects = [op for op in prefix if op.known and op is not culprit]
    independent = False
    if _from_nowhere(culprit, ops):
        suspects = []
        minimal = True
    elif minimal:
        independent = is_linearizable(prefix, ANYTHING, deadline) is False
        initial = ANYTHING if independent else ABSENT
        suspects, minimal = _shrink(suspects, culprit, context, initial, deadline)
    chosen = sorted([*suspects, culprit], key=lambda op: (op.start, op.index))
    return Window(
        key=key,
        operations=tuple(op.source for op in chosen),
        unknown=tuple(op.source for op in _relevant(context, chosen)),
        culprit=culprit.source,
        independent_of_past=independent,
        minimal=minimal,
    )


def _from_nowhere(culprit: KeyOp, ops: Sequence[KeyOp]) -> bool:
    """Whether the culprit's result shows a value that no operation on the key ever writes."""
    written = {op.value for op in ops if op.kind in (Kind.SET, Kind.CAS)}
    wanted = targets(culprit)
    return bool(wanted) and all(
        value not in written and value not in (ABSENT, "null", PRESENT) for value in wanted
    )


def _prefix(ops: Sequence[KeyOp], last: KeyOp) -> list[KeyOp]:
    """The history up to ``last``'s return; what is still running then may take effect or not."""
    cut = (last.end, last.index)
    prefix: list[KeyOp] = []
    for op in ops:
        # a call at the instant of the cut sorts before the return, as in the search
        if op.start > last.end:
            continue
        if op.known and (op.end, op.index) <= cut:
            prefix.append(op)
        elif op.kind is not Kind.GET:
            prefix.append(op.pending() if op.known else op)
    return prefix


def _shrink(
    suspects: list[KeyOp],
    culprit: KeyOp,
    context: list[KeyOp],
    initial: str,
    deadline: float,
) -> tuple[list[KeyOp], bool]:
    """Drop suspects while the rest (with the culprit and the context) still fails.

    Returns what is left and whether it is minimal (false when the deadline cut the work short).
    """
    size = max(len(suspects) // 2, 1)
    while suspects:
        removed = False
        position = 0
        while position < len(suspects):
            trial = suspects[:position] + suspects[position + size :]
            verdict = is_linearizable([*trial, culprit, *context], initial, deadline)
            if verdict is None:
                return suspects, False
            if not verdict:
                suspects = trial
                removed = True
            else:
                position += size
        if size > 1:
            size //= 2
        elif not removed:
            # a whole pass of single drops changed nothing: every suspect is needed
            break
    return suspects, True


def _relevant(context: list[KeyOp], window: list[KeyOp]) -> list[KeyOp]:
    """The unknown-outcome operations that write a state the window observes, in time."""
    last_end = max(op.end for op in window)
    observed = {value for op in window for value in targets(op)}
    relevant = [
        op
        for op in context
        if op.start <= last_end and (ABSENT if op.kind is Kind.DELETE else op.value) in observed
    ]
    return sorted(relevant, key=lambda op: (op.start, op.index))
