"""The built-in key-value machine, one key at a time, as a model for the linearizability search.

A model state is one string: :data:`ABSENT`, the canonical JSON of the key's value, or one of
two symbolic states used to judge a window cut out of the middle of a history:
:data:`ANYTHING` (nothing known about the key) and :data:`NULLISH` (absent or holding ``null``,
which ``get`` cannot tell apart). Strings hash cheaply and compare by JSON equality once
canonical, which is what the search's cache needs.

Only single-key operations are modelled; :func:`compile_operations` refuses the rest, because
splitting a history per key is sound only when no operation touches two keys.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..history import Operation

ABSENT = ""
"""The key does not exist (the empty string is never canonical JSON)."""
ANYTHING = "*"
"""Any state at all: the start of a window cut from the middle of a history."""
NULLISH = "?"
"""Absent, or present holding ``null``."""
_NULL = "null"


class UnsupportedOperationError(ValueError):
    """An operation the checker cannot judge (multi-key ``set``, ``keys``, malformed records)."""


def canonical(value: Any) -> str:
    """Canonical JSON text: equal strings exactly when the values are equal as JSON.

    Matches :func:`tsconsensus.kv.json_equal`: ``1`` and ``1.0`` are one number, ``true`` is not
    ``1``, object key order does not matter.
    """
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    return value


class Kind(enum.IntEnum):
    GET = 0
    SET = 1
    DELETE = 2
    CAS = 3


@dataclass(frozen=True)
class KeyOp:
    """One operation compiled for the search on its key's sub-history.

    ``end`` is infinite when the outcome is unknown. Canonical strings: ``value`` (what ``set``
    and ``cas`` write), ``expected`` (``cas``; :data:`ABSENT` for null), ``observed`` (what the
    result says the key held: ``get``'s result, ``set``'s previous value, ``cas``'s current value
    after a failure; ``""`` when not applicable). ``flag`` is ``delete``'s result or ``cas``'s ok.
    """

    index: int
    source: Operation
    kind: Kind
    known: bool
    start: float
    end: float
    value: str = ""
    expected: str = ABSENT
    observed: str = ""
    flag: bool = False

    def pending(self) -> KeyOp:
        """The same operation with its outcome unknown (still running at a history cut)."""
        return replace(self, known=False, end=math.inf)


def step(state: str, op: KeyOp) -> str | None:
    """The state after ``op`` from ``state``, or ``None`` when ``op``'s result rules it out.

    ``op`` has a known outcome: operations with an unknown one never go through the model one
    at a time (the search treats them as tokens, see :mod:`.tokens`).
    """
    assert op.known
    kind = op.kind
    if kind is Kind.GET:
        return _observe(state, op.observed)
    if kind is Kind.SET:
        return None if _observe(state, op.observed) is None else op.value
    if kind is Kind.DELETE:
        if state in (ANYTHING, NULLISH) or (state != ABSENT) == op.flag:
            return ABSENT
        return None
    return _cas(state, op)


def _observe(state: str, seen: str) -> str | None:
    """The state once a result has shown the key's value to be ``seen`` (null: absent or null)."""
    if state == ANYTHING:
        return NULLISH if seen == _NULL else seen
    if seen == _NULL:
        return state if state in (ABSENT, _NULL, NULLISH) else None
    return state if state == seen else None


def _cas(state: str, op: KeyOp) -> str | None:
    if op.flag and op.observed != op.value:
        return None  # a successful cas reports the value it wrote
    if state == ANYTHING:
        if op.flag:
            return op.value
        if op.expected == ABSENT:
            # a failed cas on "absent" saw the key present, even when it held null
            return op.observed
        return None if op.observed == op.expected else _observe(state, op.observed)
    if state == NULLISH:
        if op.expected != ABSENT:
            # expected is a present value other than null (null means absent): it cannot match
            return None if op.flag or op.observed != _NULL else state
        # expected absent: it matched if and only if the key was absent rather than null
        if op.flag:
            return op.value
        return _NULL if op.observed == _NULL else None
    matches = state == op.expected
    if op.flag:
        return op.value if matches else None
    if matches:
        return None
    return state if _observe(state, op.observed) is not None else None


def compile_operations(operations: Iterable[Operation]) -> dict[str, list[KeyOp]]:
    """Validate ``operations`` and split them per key, in input order.

    ``get`` operations with an unknown outcome are dropped: they change nothing and constrain
    nothing. Raises :class:`UnsupportedOperationError` naming the first record it cannot judge.
    """
    by_key: dict[str, list[KeyOp]] = {}
    for index, operation in enumerate(operations):
        try:
            key, op = _compile(index, operation)
        except UnsupportedOperationError as exc:
            raise UnsupportedOperationError(
                f"operation {index} ({operation.describe()}): {exc}"
            ) from None
        except RecursionError:
            raise UnsupportedOperationError(
                f"operation {index}: a value nested too deeply to compare"
            ) from None
        if op.kind is Kind.GET and not op.known:
            continue
        by_key.setdefault(key, []).append(op)
    return by_key


def _compile(index: int, operation: Operation) -> tuple[str, KeyOp]:
    args = operation.args
    known = not operation.unknown
    end = math.inf if operation.unknown or operation.end is None else float(operation.end)
    base = KeyOp(index, operation, Kind.GET, known, float(operation.start), end)
    result = operation.result
    name = operation.op
    if name == "set":
        if not isinstance(args, dict) or len(args) != 1:
            raise UnsupportedOperationError(
                "only a set of exactly one key can be checked (the history is split per key)"
            )
        ((key, value),) = args.items()
        observed = ""
        if known:
            if not isinstance(result, dict) or set(result) != {key}:
                raise UnsupportedOperationError(f"set's result must be {{{key!r}: previous}}")
            observed = canonical(result[key])
        return key, replace(base, kind=Kind.SET, value=canonical(value), observed=observed)
    if name == "keys":
        raise UnsupportedOperationError(
            "keys reads every key at once, which a per-key check cannot judge"
        )
    if name not in ("get", "delete", "cas"):
        raise UnsupportedOperationError("unknown operation (known: get, set, cas, delete)")
    if not isinstance(args, dict) or not isinstance(args.get("key"), str):
        raise UnsupportedOperationError(f'{name} needs args {{"key": string, ...}}')
    key = args["key"]
    if name == "get":
        return key, replace(base, kind=Kind.GET, observed=canonical(result) if known else "")
    if name == "delete":
        if known and not isinstance(result, bool):
            raise UnsupportedOperationError("delete's result must be true or false")
        return key, replace(base, kind=Kind.DELETE, flag=bool(result))
    if "value" not in args:
        raise UnsupportedOperationError('cas needs args {"key", "expected", "value"}')
    expected = args.get("expected")
    op = replace(
        base,
        kind=Kind.CAS,
        value=canonical(args["value"]),
        expected=ABSENT if expected is None else canonical(expected),
    )
    if known:
        if (
            not isinstance(result, dict)
            or set(result) != {"ok", "value"}
            or not isinstance(result["ok"], bool)
        ):
            raise UnsupportedOperationError('cas\'s result must be {"ok": bool, "value": ...}')
        op = replace(op, flag=result["ok"], observed=canonical(result["value"]))
    return key, op
