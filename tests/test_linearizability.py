"""The linearizability checker: known histories, windows, budget, file format, CLI, properties."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsconsensus import Command, KeyValueMachine
from tsconsensus.kv import json_equal
from tsconsensus.testing import (
    HistoryFormatError,
    Operation,
    UnsupportedOperationError,
    Verdict,
    check_history,
    format_result,
    read_history,
    write_history,
)
from tsconsensus.testing.linearizability.__main__ import main
from tsconsensus.testing.linearizability.model import ABSENT, ANYTHING, compile_operations
from tsconsensus.testing.linearizability.search import Mode, _Search, is_linearizable

# -- building histories -------------------------------------------------------------------------


def done(client: str, name: str, args: Any, start: float, end: float, result: Any) -> Operation:
    return Operation(client, name, args, start, end, result)


def lost(client: str, name: str, args: Any, start: float, end: float | None = None) -> Operation:
    """An operation whose outcome the client never learnt (timeout, connection lost)."""
    return Operation(client, name, args, start, end, unknown=True)


def get(c: str, key: str, s: float, e: float, value: Any) -> Operation:
    return done(c, "get", {"key": key}, s, e, value)


def put(c: str, key: str, value: Any, s: float, e: float, previous: Any) -> Operation:
    return done(c, "set", {key: value}, s, e, {key: previous})


def cas(c: str, key: str, old: Any, new: Any, s: float, e: float, ok: bool, now: Any) -> Operation:
    args = {"key": key, "expected": old, "value": new}
    return done(c, "cas", args, s, e, {"ok": ok, "value": now})


def delete(c: str, key: str, s: float, e: float, existed: bool) -> Operation:
    return done(c, "delete", {"key": key}, s, e, existed)


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
    ops = generated_history(random.Random(7), n=1500, keys=3, clients=8)
    target = next(i for i in range(len(ops) - 1, 0, -1) if ops[i].op == "get" and ops[i].result)
    ops[target] = done(
        ops[target].client, "get", ops[target].args, ops[target].start, ops[target].end, "never"
    )
    result = check_history(ops, timeout_s=30, window_timeout_s=30)
    assert result.verdict is Verdict.VIOLATION
    [window] = result.windows
    assert window.culprit == ops[target]
    assert window.minimal and len(window.operations) <= 3


# -- the budget ---------------------------------------------------------------------------------


def pathological(n: int = 22) -> list[Operation]:
    """All concurrent: unknown writes of 1..n, reads of each, and a read nothing explains.

    Any order of the reads is possible, so the search meets 2**n sets of them before it can
    conclude that the last read, of a value written only after it returned, fits in none.
    """
    ops = [lost(f"w{i}", "set", {"k": i}, 0) for i in range(1, n + 1)]
    ops += [get(f"r{i}", "k", 0, 100, i) for i in range(1, n + 1)]
    return [*ops, get("z", "k", 0, 100, "late"), lost("l", "set", {"k": "late"}, 200)]


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


def test_operation_records_are_checked() -> None:
    with pytest.raises(ValueError, match="end time"):
        Operation("a", "get", {"key": "k"}, 0, None)
    with pytest.raises(ValueError, match="before start"):
        Operation("a", "get", {"key": "k"}, 5, 4, 1)
    with pytest.raises(ValueError, match="no result"):
        Operation("a", "get", {"key": "k"}, 0, None, 1, unknown=True)
    with pytest.raises(ValueError, match="number"):
        Operation("a", "get", {"key": "k"}, True, 2, 1)


# -- history files ------------------------------------------------------------------------------


def test_history_file_round_trip(tmp_path: Path) -> None:
    ops = [
        put("a", "k", {"nested": [1, None]}, 0.25, 1.5, None),
        lost(3, "cas", {"key": "k", "expected": None, "value": 2}, 2, 9.0),
        Operation("b", "get", {"key": "k"}, 10, 11, "é", request_id="r-1"),
        lost("c", "delete", {"key": "k"}, 12),
    ]
    path = tmp_path / "h.jsonl"
    write_history(path, ops)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"format": "tsconsensus.history", "version": 1}
    assert json.loads(lines[2]) == {
        "client": 3,
        "op": "cas",
        "args": {"key": "k", "expected": None, "value": 2},
        "start": 2,
        "end": 9.0,
        "unknown": True,
    }
    assert read_history(path) == ops
    buffer = io.StringIO()
    write_history(buffer, ops)
    assert read_history(io.StringIO(buffer.getvalue())) == ops


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1]", "line 2: an operation must be a JSON object"),
        ('{"client": "a", "op": "get", "args": {"key": "k"}, "start": 0, "end": 1}', "result"),
        (
            '{"client": "a", "op": "get", "args": {}, "start": 0, "unknown": true, "result": 1}',
            "must not have a result",
        ),
        ('{"client": "a", "op": "get", "args": {}, "start": "0", "end": 1, "result": 1}', "start"),
        (
            '{"client": "a", "op": "get", "args": {}, "start": 0, "end": 1, "result": 1, "x": 0}',
            "unknown field",
        ),
        ('{"format": "tsconsensus.history", "version": 2}', "unsupported history format"),
    ],
)
def test_malformed_history_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"client": "a", "op": "get", "args": {"key": "k"}, "start": 0, "end": 1, "result": 1}'
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(HistoryFormatError, match=message):
        read_history(path)


def test_a_history_that_is_not_utf8_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"client": "\xff"}\n')
    with pytest.raises(HistoryFormatError, match="UTF-8"):
        read_history(path)


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


# -- generated histories ------------------------------------------------------------------------


def generated_history(
    rng: random.Random,
    n: int,
    keys: int,
    clients: int,
    unknown_rate: float = 0.0,
    unique: bool = False,
) -> list[Operation]:
    """A history of a real sequential execution, given concurrency windows around it.

    Operation i takes effect at instant i on a real :class:`KeyValueMachine`; its client called
    it at some time after that client's previous return and got the answer before the client's
    next call, so every interval contains its linearization point. Some outcomes are made
    unknown; some unknown operations never took effect at all. Values written are small integers
    (many repeats), or with ``unique`` each write's own number, as a fault runner would choose.
    """
    written: dict[str, list[int]] = {}
    plans: list[tuple[int, str, Any]] = []  # (client, op, args), operation i at instant i
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        name = rng.choice(["get", "get", "set", "cas", "delete"])
        value = i if unique else rng.randrange(4)
        if name in ("set", "cas"):
            written.setdefault(key, []).append(value)
        expected = rng.choice([None, *written.get(key, [0, 1, 2, 3])[-3:]])
        args: Any = {
            "get": {"key": key},
            "delete": {"key": key},
            "set": {key: value},
            "cas": {"key": key, "expected": expected, "value": value},
        }[name]
        plans.append((rng.randrange(clients), name, args))
    times: list[tuple[float, float]] = [(0.0, 0.0)] * n
    last: dict[int, tuple[int, float]] = {}  # client -> (its previous instant, its return)
    for i, (client, _, _) in enumerate(plans):
        previous, free = last.get(client, (-1, -1.0))
        if previous >= 0:
            # the previous op returns before this one is called, both around their instants
            end = previous + rng.random() * (i - previous)
            times[previous] = (times[previous][0], end)
            free = end
        times[i] = (i - rng.random() * (i - free), i + 3 * rng.random())
        last[client] = (i, times[i][0])
    machine = KeyValueMachine()
    history = []
    for (client_number, name, args), (start, end) in zip(plans, times, strict=True):
        client = f"c{client_number}"
        if rng.random() < unknown_rate / 3:  # never took effect
            history.append(lost(client, name, args, start))
            continue
        result = machine.apply(Command(name, args))
        if rng.random() < unknown_rate:
            history.append(lost(client, name, args, start, end))
        else:
            history.append(done(client, name, args, start, end, result))
    rng.shuffle(history)
    return history


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
    ops[i] = done(ops[i].client, "get", ops[i].args, ops[i].start, ops[i].end, "never written")
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


def reference(ops: Sequence[Operation], initial: Any) -> bool:
    """Linearizability by exhaustive search over (operations taken, key state), on the real machine.

    An operation may go next once every operation that returned before its call has gone; one
    with an unknown outcome may also never go. ``initial`` is the key's starting value, or
    ``ABSENT``. Exponential, and obviously right.
    """
    must_follow = [
        sum(
            1 << j
            for j, b in enumerate(ops)
            if not b.unknown and b.end is not None and b.end < a.start
        )
        for a in ops
    ]
    known = sum(1 << i for i, op in enumerate(ops) if not op.unknown)
    start = b"{}" if initial is ABSENT else json.dumps({"k": initial}).encode()
    seen: set[tuple[int, bytes]] = set()
    todo = [(0, start)]
    while todo:
        taken, snapshot = todo.pop()
        if taken & known == known:
            return True
        for i, op in enumerate(ops):
            if taken >> i & 1 or must_follow[i] & ~taken:
                continue
            machine = KeyValueMachine()
            machine.restore(snapshot)
            result = machine.apply(Command(op.op, op.args))
            if not op.unknown and not json_equal(result, op.result):
                continue
            after = (taken | 1 << i, machine.snapshot())
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return False


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
