"""The linearizability checker on known histories: verdicts, windows, budget, refusals, CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tsconsensus.testing import (
    Operation,
    UnsupportedOperationError,
    Verdict,
    check_history,
    format_result,
    write_history,
)
from tsconsensus.testing.linearizability.__main__ import main

from .histories import cas, delete, done, generated_history, get, lost, pathological, put


def args_of(op: Operation) -> dict[str, Any]:
    assert isinstance(op.args, dict)
    return op.args


def verdict(ops: Sequence[Operation]) -> Verdict:
    return check_history(ops, timeout_s=10).verdict


# -- known-good histories -----------------------------------------------------------------------


def test_a_sequential_history_is_linearizable() -> None:
    ops = [
        put("a", "k", 1, 0, 1, None),
        get("b", "k", 2, 3, 1),
        cas("a", "k", 1, 2, 4, 5, True, 2),
        cas("b", "k", 1, 3, 6, 7, False, 2),
        delete("a", "k", 8, 9, True),
        get("b", "k", 10, 11, None),
        delete("a", "k", 12, 13, False),
        cas("b", "k", None, "x", 14, 15, True, "x"),
    ]
    result = check_history(ops)
    assert result.ok and result.verdict is Verdict.OK
    assert [(k.key, k.operations, k.unknown) for k in result.keys] == [("k", 8, 0)]
    assert result.windows == ()


@pytest.mark.parametrize("seen", [[1, 1], [None, 1], [None, None]])
def test_a_read_overlapping_a_write_may_see_either_value(seen: list[Any]) -> None:
    ops = [
        put("w", "k", 1, 0, 10, None),
        get("r", "k", 1, 4, seen[0]),
        get("s", "k", 5, 9, seen[1]),
    ]
    assert verdict(ops) is Verdict.OK


def test_concurrent_writes_take_effect_in_either_order() -> None:
    # b's set landed first (a saw it as previous), although a was called first
    ops = [
        put("a", "k", 1, 0, 10, 2),
        put("b", "k", 2, 1, 5, None),
        get("c", "k", 11, 12, 1),
    ]
    assert verdict(ops) is Verdict.OK


def test_cas_success_and_failure_under_concurrency() -> None:
    # two clients race to create the key: one wins, the other sees the winner's value
    ops = [
        cas("a", "k", None, "a", 0, 5, False, "b"),
        cas("b", "k", None, "b", 1, 4, True, "b"),
        cas("a", "k", "b", "a2", 6, 7, True, "a2"),
        get("c", "k", 8, 9, "a2"),
    ]
    assert verdict(ops) is Verdict.OK


def test_an_unknown_write_may_take_effect_long_after_its_client_gave_up() -> None:
    ops = [
        lost("a", "set", {"k": 7}, 0, 1),
        get("b", "k", 2, 3, None),
        get("b", "k", 4, 5, None),
        get("b", "k", 100, 101, 7),
        get("b", "k", 102, 103, 7),
    ]
    result = check_history(ops)
    assert result.ok
    assert result.keys[0].unknown == 1


def test_an_unknown_write_may_never_take_effect() -> None:
    ops = [
        put("a", "k", 1, 0, 1, None),
        lost("b", "set", {"k": 2}, 2),
        lost("b", "cas", {"key": "k", "expected": 1, "value": 3}, 3),
        lost("b", "delete", {"key": "k"}, 4),
        get("c", "k", 10, 11, 1),
        get("c", "k", 12, 13, 1),
    ]
    assert verdict(ops) is Verdict.OK


def test_unknown_reads_are_not_judged() -> None:
    ops = [put("a", "k", 1, 0, 1, None), lost("b", "get", {"key": "k"}, 2)]
    result = check_history(ops)
    assert result.ok and result.keys[0].operations == 1


def test_null_is_a_value_distinct_from_absent() -> None:
    ops = [
        put("a", "k", None, 0, 1, None),
        get("a", "k", 2, 3, None),
        delete("a", "k", 4, 5, True),
        cas("a", "k", None, 1, 6, 7, True, 1),
    ]
    assert verdict(ops) is Verdict.OK
    # a present null does not match cas's "expected absent", and delete says it existed
    assert verdict([*ops[:2], cas("b", "k", None, 1, 4, 5, True, 1)]) is Verdict.VIOLATION


def test_json_equality_for_values() -> None:
    ops = [
        put("a", "k", {"x": [1, 2.0], "y": True}, 0, 1, None),
        get("b", "k", 2, 3, {"y": True, "x": [1.0, 2]}),
    ]
    assert verdict(ops) is Verdict.OK
    assert verdict([ops[0], get("b", "k", 2, 3, {"x": [1, 2], "y": 1})]) is Verdict.VIOLATION


def test_keys_are_independent() -> None:
    ops = [put("a", "x", 1, 0, 1, None), put("a", "y", 1, 0, 1, None), get("b", "x", 2, 3, 1)]
    result = check_history(ops)
    assert result.ok and [k.key for k in result.keys] == ["x", "y"]


# -- known-bad histories and their windows ------------------------------------------------------


def window_of(ops: Sequence[Operation], key: str = "k") -> tuple[list[Operation], Operation]:
    result = check_history(ops, timeout_s=10, window_timeout_s=10)
    assert result.verdict is Verdict.VIOLATION and not result.ok
    [bad] = [k for k in result.keys if k.verdict is Verdict.VIOLATION]
    assert bad.key == key and bad.window is not None
    assert bad.window.minimal
    assert bad.window.culprit in bad.window.operations
    # the window is a history that fails on its own
    assert verdict(bad.window.operations) is Verdict.VIOLATION
    return list(bad.window.operations), bad.window.culprit


def test_stale_read() -> None:
    noise = [put(f"n{i}", "other", i, i, i + 0.5, i - 1 if i else None) for i in range(20)]
    ops = [
        *noise,
        put("a", "k", 1, 0, 1, None),
        put("a", "k", 2, 2, 3, 1),
        get("b", "k", 4, 5, 2),
        get("c", "k", 6, 7, 1),
    ]
    window, culprit = window_of(ops)
    assert culprit == ops[-1]
    # the acknowledged newer write and the read that missed it; the stale value's own write is
    # not needed to prove it, and the read that did see the new value is not needed either
    assert window == [ops[-3], ops[-1]] or window == [ops[-2], ops[-1]]
    result = check_history(ops)
    assert result.windows[0].independent_of_past


def test_lost_write() -> None:
    ops = [
        put("a", "k", 1, 0, 1, None),
        get("b", "k", 2, 3, 1),
        put("a", "k", 2, 4, 5, 1),  # acknowledged...
        get("b", "k", 6, 7, 1),  # ...but never visible
        get("b", "k", 8, 9, 1),
    ]
    window, culprit = window_of(ops)
    assert culprit == ops[3]
    assert window == [ops[2], ops[3]]


def test_double_applied_cas() -> None:
    ops = [
        put("a", "k", 0, 0, 1, None),
        cas("a", "k", 0, 1, 2, 3, True, 1),
        cas("b", "k", 0, 1, 4, 5, True, 1),  # the same cas, applied a second time
        get("c", "k", 6, 7, 1),
    ]
    window, culprit = window_of(ops)
    assert culprit == ops[2]
    assert window == [ops[1], ops[2]]


def test_read_of_a_value_never_written() -> None:
    ops = [*(put("a", "k", i, i, i + 0.5, i - 1 if i else None) for i in range(10))]
    ops.append(get("b", "k", 3, 20, 42))
    window, culprit = window_of(ops)
    assert window == [culprit] == [ops[-1]]
    assert not check_history(ops).windows[0].independent_of_past


def test_delete_that_found_an_absent_key() -> None:
    ops = [
        put("a", "j", 1, 0, 1, None),
        get("b", "k", 2, 3, None),
        delete("c", "k", 4, 5, True),
    ]
    window, culprit = window_of(ops)
    assert window == [culprit] == [ops[-1]]


def test_an_unknown_write_takes_effect_at_most_once() -> None:
    # the lost set of 5 explains the first read, but not a second 5 after the key moved on
    ops = [
        lost("a", "set", {"k": 5}, 0),
        get("b", "k", 1, 2, 5),
        put("c", "k", 6, 3, 4, 5),
        get("b", "k", 5, 6, 5),
    ]
    window, culprit = window_of(ops)
    assert culprit == ops[3]
    assert window == [ops[2], ops[3]]
    assert verdict(ops[:3]) is Verdict.OK


def test_unknown_writes_of_the_same_value_each_take_effect_once() -> None:
    first = [lost("a", "set", {"k": 5}, 0), lost("a2", "set", {"k": 5}, 0)]
    reads = [get("b", "k", 1, 2, 5), put("c", "k", 6, 3, 4, 5), get("b", "k", 5, 6, 5)]
    assert verdict([*first, *reads]) is Verdict.OK  # two writes of 5: one each side of the 6
    assert verdict([first[0], *reads]) is Verdict.VIOLATION


def test_a_delete_that_found_the_key_may_be_explained_by_an_unknown_write() -> None:
    ops = [lost("a", "set", {"k": 1}, 0), delete("b", "k", 1, 2, True), get("c", "k", 3, 4, None)]
    assert verdict(ops) is Verdict.OK
    assert verdict([*ops, delete("d", "k", 5, 6, True)]) is Verdict.VIOLATION


def test_a_long_chain_of_unknown_cas_operations() -> None:
    # a counter bumped by cas whose every answer was lost: each read may be explained by a chain
    # of all the bumps before it, each taking effect once
    n = 1500
    bumps = [
        lost(f"c{i}", "cas", {"key": "k", "expected": i, "value": i + 1}, 2 + i) for i in range(n)
    ]
    reads = [get("r", "k", n + 5 + i, n + 6 + i, v) for i, v in enumerate([n // 3, n // 2, n])]
    ops = [put("a", "k", 0, 0, 1, None), *bumps, *reads]
    assert verdict(ops) is Verdict.OK
    assert verdict([*ops, get("r", "k", n + 10, n + 11, n // 2)]) is Verdict.VIOLATION


def test_a_value_nobody_wrote_is_found_without_searching() -> None:
    # the concurrent reads alone would take the search 2**22 steps
    ops = [*pathological()[:-2], get("z", "k", 0, 100, "nobody wrote this")]
    result = check_history(ops, timeout_s=5)
    assert result.verdict is Verdict.VIOLATION
    assert result.windows[0].operations == (ops[-1],)


def test_violation_despite_unknown_writes_is_shown_with_the_ones_that_matter() -> None:
    ops = [
        lost("x", "set", {"k": 1}, 0),  # may explain a read of 1...
        lost("y", "set", {"k": 9}, 0),  # ...this one nothing anyone read
        get("a", "k", 1, 2, 1),
        get("a", "k", 3, 4, None),  # ...but not the key vanishing again
    ]
    result = check_history(ops, window_timeout_s=10)
    assert result.verdict is Verdict.VIOLATION
    window = result.windows[0]
    assert window.culprit == ops[3]
    assert list(window.operations) == [ops[2], ops[3]]
    assert list(window.unknown) == [ops[0]]
    text = format_result(result)
    assert "? (unknown)" in text and "culprit" in text


def test_window_table_is_readable() -> None:
    ops = [put("alice", "k", 1, 0.5, 1.25, None), get("bob", "k", 2.0, 3.0, None)]
    text = format_result(check_history(ops))
    assert "verdict: violation" in text
    lines = text.splitlines()
    header = next(line for line in lines if "start" in line and "client" in line)
    assert header.split() == ["start", "end", "client", "op", "args", "result"]
    culprit_row = next(line for line in lines if line.lstrip().startswith("*"))
    assert culprit_row.split()[:5] == ["*", "2.000000", "3.000000", "bob", "get"]
    assert "alice" in text and '{"k":null}' in text


def test_only_the_failing_key_is_blamed() -> None:
    ops = [put("a", "x", 1, 0, 1, None), get("a", "x", 2, 3, 1), get("b", "y", 0, 1, 5)]
    result = check_history(ops)
    assert [(k.key, k.verdict) for k in result.keys] == [
        ("x", Verdict.OK),
        ("y", Verdict.VIOLATION),
    ]


def test_a_window_is_small_in_a_long_history() -> None:
    ops = sorted(
        generated_history(random.Random(7), n=1500, keys=3, clients=8, unique=True),
        key=lambda op: op.start,
    )
    # a late read made stale: it returns a value that an acknowledged set overwrote long before
    reader = next(i for i in range(len(ops) - 1, 0, -1) if ops[i].op == "get")
    key = args_of(ops[reader])["key"]
    old = [
        op for op in ops[: reader - 100] if op.op == "set" and key in args_of(op) and not op.unknown
    ][-2]
    ops[reader] = replace(ops[reader], result=args_of(old)[key])
    result = check_history(ops, timeout_s=30, window_timeout_s=30)
    assert result.verdict is Verdict.VIOLATION
    [window] = result.windows
    assert window.culprit == ops[reader]
    assert window.minimal and window.independent_of_past
    assert 2 <= len(window.operations) <= 4, format_result(result)
    assert window.operations[-1] == ops[reader]
    assert all(op.start > old.start for op in window.operations)  # a later write, not the old one


# -- the budget ---------------------------------------------------------------------------------


def test_running_out_of_time_is_a_timeout_not_a_pass() -> None:
    result = check_history(pathological(), timeout_s=0.3)
    assert result.verdict is Verdict.TIMEOUT
    assert not result.ok
    assert result.elapsed_s < 5
    assert "not a pass" in format_result(result)


def test_a_violation_elsewhere_outranks_a_timeout() -> None:
    ops = [*pathological(), get("b", "other", 0, 1, 1)]
    result = check_history(ops, timeout_s=0.3)
    assert result.verdict is Verdict.VIOLATION
    assert {k.key: k.verdict for k in result.keys} == {
        "k": Verdict.TIMEOUT,
        "other": Verdict.VIOLATION,
    }


# -- what the checker refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (done("a", "set", {"x": 1, "y": 2}, 0, 1, {"x": None, "y": None}), "exactly one key"),
        (done("a", "keys", {}, 0, 1, []), "keys reads every key"),
        (done("a", "incr", {"key": "k"}, 0, 1, 1), "unknown operation"),
        (done("a", "get", {"k": "k"}, 0, 1, 1), '"key": string'),
        (done("a", "set", {"k": 1}, 0, 1, None), "set's result"),
        (done("a", "delete", {"key": "k"}, 0, 1, 1), "true or false"),
        (done("a", "cas", {"key": "k", "value": 1}, 0, 1, True), "cas's result"),
    ],
)
def test_unsupported_operations_are_refused(operation: Operation, message: str) -> None:
    with pytest.raises(UnsupportedOperationError, match=message):
        check_history([put("a", "k", 1, 0, 1, None), operation])


# -- the command line ---------------------------------------------------------------------------


def run_cli(tmp_path: Path, ops: Sequence[Operation], *extra: str) -> int:
    path = tmp_path / "history.jsonl"
    write_history(path, ops)
    return main([str(path), *extra])


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [put("a", "k", 1, 0, 1, None), get("b", "k", 2, 3, 1)]
    assert run_cli(tmp_path, good) == 0
    assert "verdict: ok" in capsys.readouterr().out

    bad = [put("a", "k", 1, 0, 1, None), get("b", "k", 2, 3, 2)]
    assert run_cli(tmp_path, bad) == 1
    out = capsys.readouterr().out
    assert "verdict: violation" in out and "culprit" in out

    assert run_cli(tmp_path, pathological(), "--timeout", "0.2") == 2
    assert "verdict: timeout" in capsys.readouterr().out

    assert run_cli(tmp_path, [done("a", "keys", {}, 0, 1, [])]) == 2
    assert "keys reads every key" in capsys.readouterr().err

    (tmp_path / "junk.jsonl").write_text("nope\n")
    assert main([str(tmp_path / "junk.jsonl")]) == 2
    assert "line 1: not JSON" in capsys.readouterr().err

    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err

    assert run_cli(tmp_path, bad, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "violation"
    assert report["keys"][0]["window"]["culprit"]["result"] == 2


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tsconsensus.testing.linearizability"]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "exit codes" in shown.stdout and "--timeout" in shown.stdout
    path = tmp_path / "h.jsonl"
    write_history(path, [put("a", "k", 1, 0, 1, None), get("b", "k", 2, 3, None)])
    ran = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1, ran.stderr
    assert "verdict: violation" in ran.stdout
    assert ran.stderr == ""
