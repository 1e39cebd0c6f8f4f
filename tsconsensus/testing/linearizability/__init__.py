"""A linearizability checker for histories of the built-in key-value machine.

Feed it what clients saw (:class:`~tsconsensus.testing.history.Operation` records, or a history
file) and it says whether some order of the operations, each taking effect at one instant between
its call and its return, explains every result. Single-key operations only (``get``, ``set`` of
one key, ``cas``, ``delete``): the history is split per key, which is sound only for those.

    result = check_history(operations, timeout_s=60)
    if not result.ok:
        print(format_result(result))   # the verdict and the shortest failing window per key

``result.verdict`` is ``ok``, ``violation`` or ``timeout``; a timeout is a failure to prove, never
a pass. From a shell: ``python -m tsconsensus.testing.linearizability HISTORY.jsonl`` (exit 0
linearizable, 1 violation, 2 timeout or bad input).
"""

from __future__ import annotations

from .checker import CheckResult, KeyResult, Verdict, check_history
from .model import UnsupportedOperationError
from .report import format_result, format_window, result_to_dict
from .window import Window

__all__ = [
    "CheckResult",
    "KeyResult",
    "UnsupportedOperationError",
    "Verdict",
    "Window",
    "check_history",
    "format_result",
    "format_window",
    "result_to_dict",
]
