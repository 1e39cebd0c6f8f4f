"""Properties of the linearizability checker: real executions pass, an invented read fails, and
the search agrees with an exhaustive reference on small histories."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsconsensus.testing import Operation, Verdict, check_history, format_result
from tsconsensus.testing.linearizability.model import ABSENT, ANYTHING, compile_operations
from tsconsensus.testing.linearizability.search import Mode, _Search, is_linearizable

from .histories import done, generated_history, lost, reference


def test_generated_histories_of_thousands_of_operations_pass() -> None:
    ops = generated_history(random.Random(1), n=3000, keys=5, clients=10, unknown_rate=0.02)
    result = check_history(ops, timeout_s=60)
    assert result.verdict is Verdict.OK, format_result(result)
    assert sum(k.operations for k in result.keys) > 2500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 120),
    keys=st.integers(1, 3),
    clients=st.integers(1, 8),
    unknown_rate=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_property_real_executions_are_linearizable_and_invented_reads_are_not(
    seed: int, n: int, keys: int, clients: int, unknown_rate: float
) -> None:
    rng = random.Random(seed)
    ops = generated_history(rng, n, keys, clients, unknown_rate)
    result = check_history(ops, timeout_s=30)
    assert result.verdict is Verdict.OK, format_result(result)

    reads = [i for i, op in enumerate(ops) if op.op == "get" and not op.unknown]
    if not reads:
        return
    i = rng.choice(reads)
    ops[i] = replace(ops[i], result="never written")
    broken = check_history(ops, timeout_s=30, window_timeout_s=30)
    assert broken.verdict is Verdict.VIOLATION
    [window] = broken.windows
    assert window.culprit == ops[i]


# -- the search against an exhaustive reference ----------------------------------------------------

_VALUES = [None, 1, 2]
_STARTS = [ABSENT, None, 1, 2, "other"]  # every initial value that can matter, and absent


@st.composite
def small_histories(draw: st.DrawFn, most: int = 9) -> list[Operation]:
    """A few operations on one key with arbitrary (often impossible) results and clashes."""
    ops = []
    for n in range(draw(st.integers(1, most))):
        start = draw(st.integers(0, 8))
        end = start + draw(st.integers(0, 4))
        name = draw(st.sampled_from(["get", "set", "cas", "delete"]))
        args: Any = {"key": "k"}
        if name == "set":
            args = {"k": draw(st.sampled_from(_VALUES))}
        elif name == "cas":
            args = {
                "key": "k",
                "expected": draw(st.sampled_from(_VALUES)),
                "value": draw(st.sampled_from(_VALUES[1:])),
            }
        if draw(st.integers(0, 2)) == 0:
            ops.append(lost(f"c{n}", name, args, start))
            continue
        result: Any = {
            "get": draw(st.sampled_from(_VALUES)),
            "set": {"k": draw(st.sampled_from(_VALUES))},
            "cas": {"ok": draw(st.booleans()), "value": draw(st.sampled_from(_VALUES))},
            "delete": draw(st.booleans()),
        }[name]
        ops.append(done(f"c{n}", name, args, start, end, result))
    return ops


@settings(max_examples=600, deadline=None)
@given(small_histories())
def test_property_search_agrees_with_the_reference(ops: list[Operation]) -> None:
    [compiled] = compile_operations(ops).values() or [[]]
    expected = reference(ops, ABSENT)
    for mode in Mode:
        answer = _Search(compiled, mode, math.inf).run(ABSENT)
        if mode is Mode.EXACT:
            assert answer is expected
        elif not expected:
            # the looser modes may only err towards "linearizable", and say when they might
            search = _Search(compiled, mode, math.inf)
            assert search.run(ABSENT) is False or search.reused
    assert is_linearizable(compiled, ABSENT) is expected
    assert (check_history(ops).verdict is Verdict.OK) is expected

    # from "anything": exact unless an unknown cas forces an over-approximation
    from_any = is_linearizable(compiled, ANYTHING)
    if any(reference(ops, start) for start in _STARTS):
        assert from_any is True
    elif not any(op.unknown and op.op == "cas" for op in ops):
        assert from_any is False

    if not expected:
        [window] = check_history(ops, window_timeout_s=10).windows
        assert window.culprit in window.operations
        assert not reference(window.operations, ABSENT)
        if window.independent_of_past:
            assert not any(reference(window.operations, start) for start in _STARTS)
