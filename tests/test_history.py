"""Operation records and the JSON lines history file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tsconsensus.testing import HistoryFormatError, Operation, read_history, write_history

from .histories import lost, put


def test_operation_records_are_checked() -> None:
    with pytest.raises(ValueError, match="end time"):
        Operation("a", "get", {"key": "k"}, 0, None)
    with pytest.raises(ValueError, match="before start"):
        Operation("a", "get", {"key": "k"}, 5, 4, 1)
    with pytest.raises(ValueError, match="no result"):
        Operation("a", "get", {"key": "k"}, 0, None, 1, unknown=True)
    with pytest.raises(ValueError, match="number"):
        Operation("a", "get", {"key": "k"}, True, 2, 1)


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
