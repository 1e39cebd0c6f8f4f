"""Client operation records and the JSON lines history file.

A history is what clients saw: for every operation, who issued it, what it asked, what came back
and when. The linearizability checker (:mod:`tsconsensus.testing.linearizability`) judges one;
the fault runner records one and can save it with :func:`write_history`.

How to record an operation (the checker's soundness depends on it):

- ``start`` is taken just before the request is sent, ``end`` just after its response arrived,
  from one monotonic clock shared by every client of the run (``time.monotonic()`` in one
  process). The true moment the command took effect must lie inside ``[start, end]``.
- A response that carries a result is recorded with ``unknown=False`` and that result.
- An operation whose outcome is not known (timeout, connection lost, a 503) is recorded with
  ``unknown=True`` and no result: it may have taken effect at any time after ``start``, even
  after the client gave up, or never. Its ``end`` (the moment the client gave up) may be kept for
  reading the history; the checker ignores it.
- An operation that certainly did not take effect (a 4xx, an error result from the state
  machine) is left out of the history altogether.

File format (UTF-8, one JSON object per line): an optional header line
``{"format": "tsconsensus.history", "version": 1}``, then one line per operation::

    {"client": "c1", "op": "set", "args": {"k": 1}, "start": 0.5, "end": 0.7,
     "result": {"k": null}, "request_id": "r-17"}
    {"client": "c2", "op": "get", "args": {"key": "k"}, "start": 0.6, "end": null,
     "unknown": true}

``request_id`` is optional; ``result`` is required unless ``"unknown": true`` (where it must be
absent), so a missing result is never mistaken for ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..types import JSON

FORMAT_NAME = "tsconsensus.history"
FORMAT_VERSION = 1

ClientId = str | int


class HistoryFormatError(ValueError):
    """A history record or file that does not follow the format (the message names the line)."""


@dataclass(frozen=True)
class Operation:
    """One client operation as the client saw it.

    ``start``/``end`` are readings of one monotonic clock (floats or integers). ``end`` is
    ``None`` only for an operation with an unknown outcome that never returned. ``result`` is
    meaningful only when ``unknown`` is false; an unknown operation's ``result`` is ``None``.
    """

    client: ClientId
    op: str
    args: JSON
    start: float
    end: float | None
    result: JSON = None
    unknown: bool = False
    request_id: str | None = None

    def __post_init__(self) -> None:
        _check_time("start", self.start)
        if self.end is None:
            if not self.unknown:
                raise ValueError(f"{self.op}: an operation with a known result needs an end time")
        else:
            _check_time("end", self.end)
            if self.end < self.start:
                raise ValueError(f"{self.op}: end {self.end} is before start {self.start}")
        if self.unknown and self.result is not None:
            raise ValueError(f"{self.op}: an operation with an unknown outcome has no result")

    def describe(self) -> str:
        """A short human-readable form, e.g. ``c1 set {"k": 1} -> {"k": null}``."""
        outcome = "?" if self.unknown else _compact(self.result)
        return f"{self.client} {self.op} {_compact(self.args)} -> {outcome}"


def _check_time(name: str, value: object) -> None:
    # bool is an int to Python, never a clock reading; NaN would break every ordering
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def operation_to_dict(operation: Operation) -> dict[str, Any]:
    """The JSON object of one history line."""
    record: dict[str, Any] = {
        "client": operation.client,
        "op": operation.op,
        "args": operation.args,
        "start": operation.start,
        "end": operation.end,
    }
    if operation.unknown:
        record["unknown"] = True
    else:
        record["result"] = operation.result
    if operation.request_id is not None:
        record["request_id"] = operation.request_id
    return record


_FIELDS = frozenset({"client", "op", "args", "start", "end", "result", "unknown", "request_id"})


def operation_from_dict(record: Any) -> Operation:
    """Parse one history line's object; :class:`HistoryFormatError` says what is wrong."""
    if not isinstance(record, dict):
        raise HistoryFormatError(f"an operation must be a JSON object, got {_compact(record)}")
    extra = set(record) - _FIELDS
    if extra:
        raise HistoryFormatError(f"unknown field(s) {sorted(extra)}")
    for name in ("client", "op", "args", "start"):
        if name not in record:
            raise HistoryFormatError(f"missing field {name!r}")
    client = record["client"]
    if isinstance(client, bool) or not isinstance(client, (str, int)):
        raise HistoryFormatError(f"client must be a string or an integer, got {client!r}")
    if not isinstance(record["op"], str):
        raise HistoryFormatError(f"op must be a string, got {record['op']!r}")
    unknown = record.get("unknown", False)
    if not isinstance(unknown, bool):
        raise HistoryFormatError(f"unknown must be true or false, got {unknown!r}")
    if unknown and "result" in record:
        raise HistoryFormatError("an operation with an unknown outcome must not have a result")
    if not unknown and "result" not in record:
        raise HistoryFormatError('missing field "result" (or "unknown": true)')
    request_id = record.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise HistoryFormatError(f"request_id must be a string, got {request_id!r}")
    try:
        return Operation(
            client=client,
            op=record["op"],
            args=record["args"],
            start=record["start"],
            end=record.get("end"),
            result=record.get("result"),
            unknown=unknown,
            request_id=request_id,
        )
    except ValueError as exc:
        raise HistoryFormatError(str(exc)) from None


def header_line() -> str:
    """The first line :func:`write_history` writes."""
    return _compact({"format": FORMAT_NAME, "version": FORMAT_VERSION})


def operation_line(operation: Operation) -> str:
    """One history line (no newline), for callers that append operations as they complete."""
    return _compact(operation_to_dict(operation))


def write_history(destination: str | Path | TextIO, operations: Iterable[Operation]) -> None:
    """Write a history file: the header line, then one line per operation, in the given order."""
    if isinstance(destination, (str, Path)):
        with open(destination, "w", encoding="utf-8") as out:
            _write(out, operations)
    else:
        _write(destination, operations)


def _write(out: TextIO, operations: Iterable[Operation]) -> None:
    out.write(header_line() + "\n")
    for operation in operations:
        out.write(operation_line(operation) + "\n")


def read_history(source: str | Path | TextIO) -> list[Operation]:
    """Read a history file (header optional, blank lines skipped).

    Raises :class:`HistoryFormatError` naming the line for anything malformed, and ``OSError``
    when the file cannot be read.
    """
    try:
        if isinstance(source, (str, Path)):
            with open(source, encoding="utf-8") as stream:
                return list(_parse(stream))
        return list(_parse(source))
    except UnicodeDecodeError as exc:
        raise HistoryFormatError(f"not UTF-8 text ({exc.reason})") from None


def _parse(lines: Iterable[str]) -> Iterator[Operation]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise HistoryFormatError(f"line {number}: not JSON ({exc})") from None
        except RecursionError:
            raise HistoryFormatError(f"line {number}: JSON nested too deeply") from None
        if isinstance(record, dict) and "format" in record:
            if record.get("format") != FORMAT_NAME or record.get("version") != FORMAT_VERSION:
                raise HistoryFormatError(
                    f"line {number}: unsupported history format {_compact(record)}; "
                    f"this reader knows {FORMAT_NAME} version {FORMAT_VERSION}"
                )
            continue
        try:
            yield operation_from_dict(record)
        except HistoryFormatError as exc:
            raise HistoryFormatError(f"line {number}: {exc}") from None
