from __future__ import annotations

import pytest

from tsconsensus import Command, KeyValueMachine
from tsconsensus.kv import json_equal


def run(machine: KeyValueMachine, name: str, args: object = None) -> object:
    return machine.apply(Command(name, args))  # type: ignore[arg-type]


def test_set_returns_previous_values_and_sets_atomically() -> None:
    kv = KeyValueMachine()
    assert run(kv, "set", {"a": 1, "b": [1, 2]}) == {"a": None, "b": None}
    assert run(kv, "set", {"a": 2, "c": {"x": True}}) == {"a": 1, "c": None}
    assert run(kv, "get", {"key": "a"}) == 2
    assert run(kv, "get", {"key": "b"}) == [1, 2]
    assert run(kv, "get", {"key": "missing"}) is None


def test_delete_reports_whether_the_key_existed() -> None:
    kv = KeyValueMachine()
    run(kv, "set", {"a": None})
    assert run(kv, "delete", {"key": "a"}) is True
    assert run(kv, "delete", {"key": "a"}) is False


def test_cas() -> None:
    kv = KeyValueMachine()
    assert run(kv, "cas", {"key": "k", "expected": None, "value": 1}) == {"ok": True, "value": 1}
    assert run(kv, "cas", {"key": "k", "expected": None, "value": 2}) == {"ok": False, "value": 1}
    assert run(kv, "cas", {"key": "k", "expected": 1, "value": 3}) == {"ok": True, "value": 3}
    # true is not 1 in JSON, whatever Python's == says
    assert run(kv, "cas", {"key": "k", "expected": True, "value": 4}) == {"ok": False, "value": 3}
    # a key holding null is present: expected null (absent) does not match it
    run(kv, "set", {"n": None})
    assert run(kv, "cas", {"key": "n", "expected": None, "value": 1}) == {
        "ok": False,
        "value": None,
    }


def test_keys_sorted_with_prefix() -> None:
    kv = KeyValueMachine()
    run(kv, "set", {"b/2": 1, "a": 1, "b/1": 1})
    assert run(kv, "keys", {}) == ["a", "b/1", "b/2"]
    assert run(kv, "keys", None) == ["a", "b/1", "b/2"]
    assert run(kv, "keys", {"prefix": "b/"}) == ["b/1", "b/2"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("nope", {}),
        ("set", []),
        ("set", {}),
        ("get", {}),
        ("get", {"key": 1}),
        ("delete", "k"),
        ("cas", {"key": "k"}),
        ("keys", {"prefix": 1}),
        ("keys", [1]),
    ],
)
def test_bad_commands_raise_value_error_and_change_nothing(name: str, args: object) -> None:
    kv = KeyValueMachine()
    run(kv, "set", {"a": 1})
    before = kv.snapshot()
    with pytest.raises(ValueError):
        run(kv, name, args)
    assert kv.snapshot() == before


def test_snapshot_restore_round_trip() -> None:
    kv = KeyValueMachine()
    run(kv, "set", {"a": 1, "b": {"c": [None, 1.5, "x"]}})
    other = KeyValueMachine()
    other.restore(kv.snapshot())
    assert other.snapshot() == kv.snapshot()
    assert run(other, "get", {"key": "b"}) == {"c": [None, 1.5, "x"]}


def test_json_equal() -> None:
    assert json_equal({"a": [1, 2]}, {"a": [1, 2]})
    assert not json_equal(True, 1)
    assert not json_equal([0], [False])
    assert json_equal(1, 1.0)
