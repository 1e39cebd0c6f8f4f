from __future__ import annotations

import json

import pytest

from tsconsensus import Command, InvalidCommandError, KeyValueMachine
from tsconsensus._applier import LogApplier, encode_entry, join_entries, split_snapshot
from tsconsensus.testing import RecordingStateMachine


def entry(rid: str, name: str, args: object = None) -> bytes:
    return encode_entry(rid, Command(name, args))  # type: ignore[arg-type]


def test_a_request_id_is_applied_once_and_its_first_outcome_returned() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine)
    first = applier.apply(entry("r1", "x"), index=5)
    again = applier.apply(entry("r1", "x"), index=9)
    assert first == again
    assert again.index == 5 and again.result == 1
    assert machine.applied == [("x", None)]


def test_the_window_forgets_the_oldest_ids_first() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine, max_entries=2)
    for i, rid in enumerate(["a", "b", "c"]):
        applier.apply(entry(rid, "x"), index=i)
    applier.apply(entry("c", "x"), index=10)  # remembered
    assert len(machine.applied) == 3
    applier.apply(entry("a", "x"), index=11)  # forgotten: applied again
    assert len(machine.applied) == 4


def test_a_raising_apply_is_an_error_result_and_remembered() -> None:
    machine = RecordingStateMachine(fail_on=["boom"])
    applier = LogApplier(machine)
    outcome = applier.apply(entry("r", "boom"), index=3)
    assert outcome.error == "refusing command 'boom' as asked"
    assert outcome.result is None and outcome.index == 3
    assert applier.apply(entry("r", "boom"), index=4) == outcome
    assert applier.apply(entry("s", "fine"), index=5).result == 1


def test_a_result_that_is_not_json_is_an_error() -> None:
    class Weird(RecordingStateMachine):
        def apply(self, command: Command) -> object:  # type: ignore[override]
            return {1, 2}

    outcome = LogApplier(Weird()).apply(entry("r", "x"), index=1)
    assert outcome.error is not None and "not JSON serializable" in outcome.error


def test_a_batch_is_applied_in_order_at_one_index() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine)
    results = applier.apply_batch(
        join_entries([entry("a", "x"), entry("b", "y"), entry("a", "x")], 100.0), 7
    )
    assert [r.result for r in results] == [1, 2, 1]
    assert {r.index for r in results} == {7}
    assert machine.applied == [("x", None), ("y", None)]


def test_corrupt_entries_never_raise() -> None:
    applier = LogApplier(RecordingStateMachine())
    assert applier.apply_batch(b"not json", 1) == []
    assert applier.apply(b'{"r": "x"}', 2).error is not None


def test_snapshot_carries_the_machine_and_the_remembered_ids() -> None:
    applier = LogApplier(KeyValueMachine())
    applier.apply(entry("r1", "set", {"a": 1}), 1)
    data = applier.snapshot()
    header, machine_bytes = split_snapshot(data)
    assert json.loads(machine_bytes) == {"a": 1}
    assert header["seen"][0][0] == "r1"
    other = LogApplier(KeyValueMachine())
    other.restore(data)
    # the restored node still knows r1: a retry is not applied again
    assert other.apply(entry("r1", "set", {"a": 2}), 9).index == 1
    assert other.apply(entry("g", "get", {"key": "a"}), 10).result == 1


def test_foreign_snapshot_is_refused() -> None:
    with pytest.raises(ValueError):
        LogApplier(KeyValueMachine()).restore(b"\x80\x04pickle")


def test_encode_rejects_non_json_args() -> None:
    with pytest.raises(InvalidCommandError):
        encode_entry("r", Command("set", {"a": float("nan")}))
    with pytest.raises(InvalidCommandError):
        encode_entry("r", Command("set", {"a": object()}))  # type: ignore[dict-item]
    with pytest.raises(InvalidCommandError):
        encode_entry("r", Command("", {}))


def test_ids_are_forgotten_after_the_window_of_log_time() -> None:
    machine = RecordingStateMachine()
    applier = LogApplier(machine, window_s=60.0)
    applier.apply_batch(join_entries([entry("a", "x")], 1000.0), 1)
    # a stamp from a node whose clock is behind does not move log time back
    applier.apply_batch(join_entries([entry("a", "x")], 900.0), 2)
    assert len(machine.applied) == 1
    applier.apply_batch(join_entries([entry("b", "x")], 1059.0), 3)
    applier.apply_batch(join_entries([entry("a", "x")], 1059.5), 4)
    assert len(machine.applied) == 2  # "a" still remembered at 59.5 s
    applier.apply_batch(join_entries([entry("a", "x")], 1061.0), 5)
    assert len(machine.applied) == 3  # forgotten after 60 s of log time: applied again
    applier.apply_batch(join_entries([entry("b", "x")], 1061.0), 6)
    assert len(machine.applied) == 3  # "b" (stamped 1059) is still remembered


def test_tsc_restore_is_an_ordinary_name_and_restores_need_their_own_entry_kind() -> None:
    import base64
    import hashlib

    from tsconsensus._applier import encode_restore_entry

    machine = KeyValueMachine()
    applier = LogApplier(machine)
    applier.apply(entry("a", "set", {"k": 1}), index=1)
    wipe = {"data": base64.b64encode(b"{}").decode(), "sha256": hashlib.sha256(b"{}").hexdigest()}
    outcome = applier.apply(entry("b", "tsc.restore", wipe), index=2)
    assert outcome.error is not None and outcome.error.startswith("unknown command 'tsc.restore'")
    assert machine.apply(Command("get", {"key": "k"})) == 1
    restored = applier.apply(encode_restore_entry("c", b"{}", hashlib.sha256(b"{}").hexdigest()), 3)
    assert restored.error is None and restored.result == {"restored_bytes": 2}
    assert machine.apply(Command("get", {"key": "k"})) is None
    bad = applier.apply(encode_restore_entry("d", b"{}", "0" * 64), index=4)
    assert bad.error == "restore: the snapshot fails its checksum"
    unknown = applier.apply(b'{"r":"e","k":"format-disk","a":null}', index=5)
    assert unknown.error is not None and "unknown entry kind" in unknown.error
