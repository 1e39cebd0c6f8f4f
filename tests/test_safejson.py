"""Bounded JSON decoding (pure unit): never a RecursionError, always InvalidJSONError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsconsensus import MAX_JSON_DEPTH, Command, InvalidCommandError, InvalidJSONError
from tsconsensus._applier import encode_entry
from tsconsensus.safejson import (
    dumps_canonical,
    dumps_compact,
    dumps_strict,
    loads,
    nesting_exceeds,
)


def nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 979, 5000, 200_000])
def test_too_deep_is_an_invalid_json_error(depth: int) -> None:
    with pytest.raises(InvalidJSONError, match="nested too deeply"):
        loads(nested(depth))
    with pytest.raises(InvalidJSONError, match="nested too deeply"):
        loads(("{" + '"a":') * depth + "1" + "}" * depth)


def test_up_to_the_limit_decodes() -> None:
    assert loads(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    # brackets inside strings are not nesting
    assert loads(json.dumps({"s": "[" * 5000})) == {"s": "[" * 5000}


@pytest.mark.parametrize("text", [b"\xff\xfe\x00", b"{", b"", b"[1,]", b'{"a": NaN', b"\x00"])
def test_malformed_is_an_invalid_json_error(text: bytes) -> None:
    with pytest.raises(InvalidJSONError, match="not valid JSON"):
        loads(text, what="the body")


def test_nesting_exceeds_is_iterative() -> None:
    value: object = 0
    for _ in range(100_000):  # far beyond the recursion limit
        value = [value]
    assert nesting_exceeds(value, MAX_JSON_DEPTH)
    assert not nesting_exceeds([[1], {"a": [2]}], 3)
    assert nesting_exceeds([[1], {"a": [[2]]}], 3)


def test_the_library_refuses_args_the_raft_thread_could_not_decode() -> None:
    for depth in (MAX_JSON_DEPTH + 1, 900, 5000):
        args: object = 0
        for _ in range(depth):
            args = [args]
        with pytest.raises(InvalidCommandError, match="nested deeper"):
            encode_entry("r", Command("set", {"k": args}))  # type: ignore[arg-type]
    encode_entry("r", Command("set", json.loads(nested(MAX_JSON_DEPTH - 1))))


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON_VALUES)
def test_the_prebuilt_encoders_give_what_json_dumps_gives(value: object) -> None:
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"))
    assert dumps_canonical(value) == json.dumps(value, separators=(",", ":"), sort_keys=True)
    try:
        expected = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        with pytest.raises(ValueError):
            dumps_strict(value)
    else:
        assert dumps_strict(value) == expected


def test_the_strict_encoder_refuses_what_is_not_json() -> None:
    for value in (float("nan"), [float("inf")], {"a": -float("inf")}):
        with pytest.raises(ValueError):
            dumps_strict(value)
    assert dumps_canonical({"b": 1, "a": [2, {"d": 3, "c": 4}]}) == '{"a":[2,{"c":4,"d":3}],"b":1}'
