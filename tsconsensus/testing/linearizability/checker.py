"""Judging a whole history: split per key, search each key, find a window where one fails."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..history import Operation
from .model import ABSENT, compile_operations
from .search import is_linearizable
from .window import Window, find_window


class Verdict(str, enum.Enum):
    """What the checker concluded. Only ``OK`` is a pass: ``TIMEOUT`` proves nothing."""

    OK = "ok"
    VIOLATION = "violation"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class KeyResult:
    """One key's verdict.

    ``operations`` counts the operations judged for the key (``get`` operations with an unknown
    outcome are not: they constrain nothing), ``unknown`` those among them with an unknown
    outcome. ``window`` is set for a violation, unless the window budget was spent on other keys.
    """

    key: str
    verdict: Verdict
    operations: int
    unknown: int
    elapsed_s: float
    window: Window | None = None


@dataclass(frozen=True)
class CheckResult:
    """The verdict on a history, and per key.

    ``verdict`` is ``VIOLATION`` when any key is not linearizable (a definite answer even if
    other keys ran out of time), else ``TIMEOUT`` when any key ran out of time, else ``OK``.
    """

    verdict: Verdict
    keys: tuple[KeyResult, ...]
    operations: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True only for a history shown linearizable; a timeout is not a pass."""
        return self.verdict is Verdict.OK

    @property
    def windows(self) -> tuple[Window, ...]:
        """The failing windows found, one per violating key that got one."""
        return tuple(k.window for k in self.keys if k.window is not None)


def check_history(
    operations: Iterable[Operation],
    *,
    timeout_s: float = 60.0,
    window_timeout_s: float = 30.0,
) -> CheckResult:
    """Check a key-value history for linearizability.

    ``operations``: the records of :mod:`tsconsensus.testing.history`, in any order. Only
    single-key operations of the built-in machine are accepted: ``get``, ``set`` of one key,
    ``cas``, ``delete``; each key starts absent. Operations that certainly did not take effect
    (rejected requests, error results) must be left out by the caller; those with an unknown
    outcome (``unknown=True``) may take effect at any point after their start, or never.

    ``timeout_s`` bounds the search over all keys; a key it cuts short gets ``TIMEOUT``.
    ``window_timeout_s`` bounds the search for failing windows, after the verdict; when it runs
    out the windows found so far are reported as they are (still failing, maybe not minimal).

    Raises :class:`~tsconsensus.testing.linearizability.UnsupportedOperationError` for an
    operation it cannot judge (multi-key ``set``, ``keys``, malformed arguments or results).
    """
    began = time.monotonic()
    operations = list(operations)
    by_key = compile_operations(operations)
    deadline = began + timeout_s
    judged: list[tuple[str, Verdict, float]] = []
    for key in sorted(by_key):
        key_began = time.monotonic()
        answer = is_linearizable(by_key[key], ABSENT, deadline)
        verdict = Verdict.TIMEOUT if answer is None else Verdict.OK if answer else Verdict.VIOLATION
        judged.append((key, verdict, time.monotonic() - key_began))

    window_deadline = time.monotonic() + window_timeout_s
    results = []
    for key, verdict, elapsed in judged:
        ops = by_key[key]
        window = None
        if verdict is Verdict.VIOLATION and time.monotonic() < window_deadline:
            window = find_window(key, ops, window_deadline)
        results.append(
            KeyResult(
                key=key,
                verdict=verdict,
                operations=len(ops),
                unknown=sum(1 for op in ops if not op.known),
                elapsed_s=elapsed,
                window=window,
            )
        )
    verdicts = {r.verdict for r in results}
    overall = (
        Verdict.VIOLATION
        if Verdict.VIOLATION in verdicts
        else Verdict.TIMEOUT
        if Verdict.TIMEOUT in verdicts
        else Verdict.OK
    )
    return CheckResult(
        verdict=overall,
        keys=tuple(results),
        operations=len(operations),
        elapsed_s=time.monotonic() - began,
    )
