"""Human-readable and JSON renderings of a check result."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..history import Operation, operation_to_dict
from .checker import CheckResult, Verdict
from .window import Window

_CELL = 48
"""Widest args or result cell; longer JSON is cut with an ellipsis so rows stay one line."""


def format_result(result: CheckResult) -> str:
    """The verdict, a line per key, and each failing window as a table."""
    lines = [
        f"verdict: {result.verdict.value} ({len(result.keys)} key(s), "
        f"{result.operations} operation(s), {result.elapsed_s:.2f} s)"
    ]
    if result.verdict is Verdict.TIMEOUT:
        lines.append("the search ran out of time before an answer: this is not a pass")
    rows = [
        [k.key, k.verdict.value, str(k.operations), str(k.unknown), f"{k.elapsed_s:.3f} s"]
        for k in result.keys
    ]
    if rows:
        lines.append("")
        lines.extend(_table(["key", "verdict", "ops", "unknown", "time"], rows))
    for key in result.keys:
        if key.verdict is Verdict.VIOLATION:
            lines.append("")
            if key.window is None:
                lines.append(f"key {key.key!r}: not linearizable (no time left to find a window)")
            else:
                lines.append(format_window(key.window))
    return "\n".join(lines)


def format_window(window: Window) -> str:
    """A failing window as a table (start, end, client, op, args, result), culprit marked."""
    lines = [
        f"key {window.key!r}: these {len(window.operations)} operation(s) cannot be linearized",
        f"  culprit (the first result nothing explains): {window.culprit.describe()}",
        "  "
        + (
            "fails from any starting value of the key"
            if window.independent_of_past
            else "judged from the start of the history (key absent)"
        )
        + ("" if window.minimal else "; not minimal: the window search ran out of time"),
    ]
    when = _clock([*window.operations, *window.unknown])
    rows = [_row(op, when, culprit=op is window.culprit) for op in window.operations]
    lines.extend(_table(["", "start", "end", "client", "op", "args", "result"], rows))
    if window.unknown:
        lines.append("  with these writes of unknown outcome allowed to take effect or not:")
        rows = [_row(op, when, culprit=False, pending=True) for op in window.unknown]
        lines.extend(_table(["", "start", "end", "client", "op", "args", "result"], rows))
    return "\n".join(lines)


def _row(
    op: Operation, when: Callable[[float], str], *, culprit: bool, pending: bool = False
) -> list[str]:
    if op.unknown:
        outcome = "? (unknown)"
        # an unknown outcome may land after the client gave up: its end bounds nothing
        end = "-" if op.end is None else f"gave up {when(op.end)}"
    else:
        outcome = (
            f"? (returned {_json(op.result)} after the culprit)" if pending else _json(op.result)
        )
        end = when(op.end) if op.end is not None else "-"
    return [
        "*" if culprit else "",
        when(op.start),
        end,
        str(op.client),
        op.op,
        _json(op.args),
        outcome,
    ]


def _clock(ops: Sequence[Operation]) -> Callable[[float], str]:
    """One format for every time in a table: integers when the clock gave integers."""
    times = [t for op in ops for t in (op.start, op.end) if t is not None]
    if all(isinstance(t, int) or float(t).is_integer() for t in times):
        return lambda t: str(int(t))
    return lambda t: f"{t:.6f}"


def _json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def result_to_dict(result: CheckResult) -> dict[str, Any]:
    """The result as JSON-ready data (operations in the history file's record form)."""
    return {
        "verdict": result.verdict.value,
        "operations": result.operations,
        "elapsed_s": result.elapsed_s,
        "keys": [
            {
                "key": k.key,
                "verdict": k.verdict.value,
                "operations": k.operations,
                "unknown": k.unknown,
                "elapsed_s": k.elapsed_s,
                "window": None if k.window is None else _window_dict(k.window),
            }
            for k in result.keys
        ],
    }


def _window_dict(window: Window) -> dict[str, Any]:
    return {
        "culprit": operation_to_dict(window.culprit),
        "independent_of_past": window.independent_of_past,
        "minimal": window.minimal,
        "operations": [operation_to_dict(op) for op in window.operations],
        "unknown": [operation_to_dict(op) for op in window.unknown],
    }
