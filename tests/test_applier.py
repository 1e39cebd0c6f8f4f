"""The applier: exactly-once by request id over log time, reads that keep nothing, errors as
data, snapshots that carry what it remembers."""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from collections.abc import Callable

import pytest

from tsconsensus import Command, InvalidCommandError, KeyValueMachine
from tsconsensus._applier import (
    REMEMBERED_ID_BYTES,
    LogApplier,
    check_command,
    command_hash,
    encode_entry,
    encode_restore_entry,
    join_entries,
    split_snapshot,
)
from tsconsensus._outcomes import Refusal
from tsconsensus.testing import RecordingStateMachine


def entry(rid: str, name: str, args: object = None, t0: float = 0.0) -> bytes:
    return encode_entry(rid, Command(name, args), t0)  # type: ignore[arg-type]


def apply(applier: LogApplier, index: int, time: float, *commands: bytes) -> list[object]:
    return [o for _, _, o in applier.apply_entry(join_entries(list(commands)), index, time)]


def test_a_request_id_is_applied_once_and_its_first_outcome_returned() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine)
    (first,) = apply(applier, 5, 1.0, entry("r1", "x"))
    (again,) = apply(applier, 9, 2.0, entry("r1", "x"))
    assert first == again
    assert again.index == 5 and again.result == 1  # type: ignore[attr-defined]
    assert machine.applied == [("x", None)]


def test_ids_are_forgotten_after_the_window_of_log_time_never_by_count() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine, window_s=60.0)
    apply(applier, 1, 1000.0, entry("a", "x"))
    for n in range(2, 5000):  # a burst far beyond any count-based cap: "a" stays remembered
        apply(applier, n, 1000.0 + n / 1000, entry(f"burst{n}", "y"))
    apply(applier, 5000, 1059.0, entry("a", "x"))
    assert machine.applied.count(("x", None)) == 1
    # log time never runs backwards, whatever an entry says
    apply(applier, 5001, 900.0, entry("a", "x"))
    assert applier.log_time == 1059.0 and machine.applied.count(("x", None)) == 1
    apply(applier, 5002, 1061.0, entry("a", "x"))  # forgotten after 60 s: applied as new
    assert machine.applied.count(("x", None)) == 2


def test_a_reused_id_with_a_different_command_is_refused_not_answered() -> None:
    machine = KeyValueMachine()
    applier = LogApplier(machine)
    apply(applier, 1, 1.0, entry("same", "set", {"k": 1}))
    (refused,) = apply(applier, 2, 2.0, entry("same", "delete", {"key": "k"}))
    assert isinstance(refused, Refusal) and refused.kind == "reused"
    assert "different command" in refused.message
    assert machine.apply(Command("get", {"key": "k"})) == 1  # the delete did not happen


def test_a_retry_older_than_the_window_is_refused_as_expired_not_applied_again() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine, window_s=120.0)
    apply(applier, 1, 100.0, entry("r", "x", t0=100.0))
    apply(applier, 2, 300.0, entry("other", "y"))  # "r" is forgotten now
    (late,) = apply(applier, 3, 301.0, entry("r", "x", t0=100.0))  # the node's own retry
    assert isinstance(late, Refusal) and late.kind == "expired"
    assert machine.applied.count(("x", None)) == 1
    # a new command submitted now is fine
    (fresh,) = apply(applier, 4, 302.0, entry("r2", "x", t0=301.0))
    assert not isinstance(fresh, Refusal)


def test_reads_keep_nothing() -> None:
    applier = LogApplier(KeyValueMachine())
    apply(applier, 1, 1.0, entry("w", "set", {"k": "v"}))
    before = applier.remembered
    for n in range(100):
        (got,) = apply(applier, 2 + n, 2.0, entry(f"read{n}", "get", {"key": "k"}))
        assert got.result == "v"  # type: ignore[attr-defined]
    assert applier.remembered == before
    assert applier.read(Command("keys", {}), 7).result == ["k"]


def test_a_raising_apply_is_an_error_result_and_remembered() -> None:
    machine = RecordingStateMachine(fail_on=["boom"])
    applier = LogApplier(machine)
    (outcome,) = apply(applier, 3, 1.0, entry("r", "boom"))
    assert outcome.error == "refusing command 'boom' as asked"  # type: ignore[attr-defined]
    assert apply(applier, 4, 1.0, entry("r", "boom")) == [outcome]
    assert apply(applier, 5, 1.0, entry("s", "fine"))[0].result == 1  # type: ignore[attr-defined]


def test_a_result_that_is_not_json_is_an_error() -> None:
    class Weird(RecordingStateMachine):
        def apply(self, command: Command) -> object:  # type: ignore[override]
            return {1, 2}

    (outcome,) = apply(LogApplier(Weird()), 1, 1.0, entry("r", "x"))
    assert "not JSON serializable" in outcome.error  # type: ignore[attr-defined]


def test_a_batch_is_applied_in_order_at_one_index_with_its_ids() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine)
    pairs = applier.apply_entry(
        join_entries([entry("a", "x"), entry("b", "y"), entry("a", "x")]), 7, 1.0
    )
    assert [rid for rid, _, _ in pairs] == ["a", "b", "a"]
    # each outcome says which command it is for: the same command under the same id
    x, y = command_hash(Command("x")), command_hash(Command("y"))
    assert [h for _, h, _ in pairs] == [x, y, x]
    assert [o.result for _, _, o in pairs] == [1, 2, 1]  # type: ignore[union-attr]
    assert machine.applied == [("x", None), ("y", None)]


def test_corrupt_entries_never_raise() -> None:
    applier = LogApplier(RecordingStateMachine())
    assert applier.apply_entry(b"not json", 1, 1.0) == []
    ((_, _, outcome),) = applier.apply_entry(b'{"c":[{"r":"x"}]}', 2, 1.0)
    assert outcome.error is not None  # type: ignore[union-attr]


def test_snapshot_carries_the_machine_the_remembered_ids_and_log_time() -> None:
    applier = LogApplier(KeyValueMachine())
    apply(applier, 1, 42.0, entry("r1", "set", {"a": 1}))
    data = applier.snapshot()
    header, seen, machine_bytes = split_snapshot(data)
    assert json.loads(machine_bytes) == {"a": 1}
    assert json.loads(seen[0])[0] == "r1" and header["log_time"] == 42.0
    other = LogApplier(KeyValueMachine())
    other.restore(data)
    # the restored node still knows r1 (and its command): a retry is not applied again...
    (again,) = apply(other, 9, 43.0, entry("r1", "set", {"a": 1}))
    assert again.index == 1  # type: ignore[attr-defined]
    # ...and the same id with another command is refused there too
    (refused,) = apply(other, 10, 43.0, entry("r1", "set", {"a": 2}))
    assert isinstance(refused, Refusal)
    assert other.read(Command("get", {"key": "a"}), 10).result == 1


def test_foreign_snapshot_is_refused() -> None:
    with pytest.raises(ValueError):
        LogApplier(KeyValueMachine()).restore(b"\x80\x04pickle")


@pytest.mark.parametrize(
    "check",
    [lambda c: encode_entry("r", c), check_command],
    ids=["encode_entry (writes)", "check_command (reads)"],
)
def test_commands_that_are_not_json_are_refused_before_they_go_anywhere(
    check: Callable[[Command], object],
) -> None:
    deep: list[object] = []
    for _ in range(150):
        deep = [deep]
    for bad in (
        Command("set", {"a": float("nan")}),
        Command("set", {"a": object()}),  # type: ignore[dict-item]
        Command("", {}),
        Command("get", {"key": deep}),  # type: ignore[dict-item]
    ):
        with pytest.raises(InvalidCommandError):
            check(bad)
    check(Command("get", {"key": "k"}))  # and a good one passes


def test_forget_at_once_is_a_planted_bug_that_applies_retries_twice() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine, forget_at_once=True)
    apply(applier, 1, 1.0, entry("r", "x"))
    apply(applier, 2, 1.0, entry("r", "x"))
    assert machine.applied == [("x", None), ("x", None)]


def test_tsc_restore_is_an_ordinary_name_and_restores_need_their_own_entry_kind() -> None:
    staged = {hashlib.sha256(b"{}").hexdigest(): b"{}"}
    machine = KeyValueMachine()
    applier = LogApplier(machine, fetch_staged=lambda sha: staged[sha])
    apply(applier, 1, 1.0, entry("a", "set", {"k": 1}))
    wipe = {"data": base64.b64encode(b"{}").decode(), "sha256": hashlib.sha256(b"{}").hexdigest()}
    (outcome,) = apply(applier, 2, 1.0, entry("b", "tsc.restore", wipe))
    assert outcome.error.startswith("unknown command 'tsc.restore'")  # type: ignore[attr-defined]
    assert machine.apply(Command("get", {"key": "k"})) == 1
    digest = hashlib.sha256(b"{}").hexdigest()
    (restored,) = apply(applier, 3, 1.0, encode_restore_entry("c", digest, 2))
    assert restored.result == {"restored_bytes": 2}  # type: ignore[attr-defined]
    assert machine.apply(Command("get", {"key": "k"})) is None
    (missing,) = apply(applier, 4, 1.0, encode_restore_entry("d", "0" * 64, 2))
    assert missing.error is not None  # type: ignore[attr-defined]
    (unknown,) = apply(applier, 5, 1.0, b'{"r":"e","k":"format-disk","a":null}')
    assert "unknown entry kind" in unknown.error  # type: ignore[attr-defined]


def test_what_one_remembered_id_costs() -> None:
    applier = LogApplier(KeyValueMachine())
    commands = [entry(f"{n:032x}", "set", {f"k{n % 100}": n}) for n in range(20_000)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for n, c in enumerate(commands):
        apply(applier, n + 1, 1.0, c)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    per_id = used / 20_000
    assert applier.remembered == 20_000
    assert per_id <= REMEMBERED_ID_BYTES, f"{per_id:.0f} bytes per remembered id"
