"""The deterministic envelope around the user's state machine.

Every committed log entry goes through :meth:`LogApplier.apply` on every node, in log order, on
the Raft thread. It adds, identically everywhere:
- exactly-once: an entry whose request id was seen before returns the first outcome and is not
  applied again (the last ``dedup_window`` ids are remembered, oldest forgotten first);
- containment: whatever the user's ``apply`` raises becomes an error result, never an
  exception that would stop the Raft thread;
- JSON results: a result that is not JSON becomes an error result.

A command is JSON ``{"r": request_id, "n": name, "a": args}`` (:func:`encode_entry`); a log
entry is a JSON array of commands submitted together (:func:`join_entries`), applied in order
and all reported at the entry's log index.
Snapshots hold the remembered outcomes and the user's own ``snapshot()`` bytes; nothing is
pickled.
"""

from __future__ import annotations

import json
import logging
import struct
from collections import OrderedDict
from typing import Any

from .errors import InvalidCommandError
from .types import JSON, Command, CommandResult, StateMachine

log = logging.getLogger("tsconsensus.apply")

_SNAPSHOT_MAGIC = b"TSCSNAP1"
_HEADER_LEN = struct.Struct(">Q")


def encode_entry(request_id: str, command: Command) -> bytes:
    """The log entry for ``command``; raises :class:`InvalidCommandError` if it is not JSON."""
    if not isinstance(command.name, str) or not command.name:
        raise InvalidCommandError("command name must be a non-empty string")
    try:
        return json.dumps(
            {"r": request_id, "n": command.name, "a": command.args},
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidCommandError(f"command args are not JSON: {exc}") from None


def join_entries(entries: list[bytes]) -> bytes:
    """One log entry carrying several encoded commands, to be applied in this order."""
    return b"[" + b",".join(entries) + b"]"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class LogApplier:
    """Applies committed entries to a :class:`StateMachine`. Raft thread only; never raises."""

    def __init__(self, machine: StateMachine, dedup_window: int) -> None:
        self._machine = machine
        self._window = dedup_window
        self._seen: OrderedDict[str, CommandResult] = OrderedDict()
        self.applied_commands = 0
        self.failed_commands = 0

    @property
    def machine(self) -> StateMachine:
        return self._machine

    def apply_batch(self, entry: bytes, index: int) -> list[CommandResult]:
        """Apply every command of a :func:`join_entries` entry, in order."""
        try:
            decoded = json.loads(entry)
            if not isinstance(decoded, list):
                raise ValueError("log entry is not a JSON array")
        except Exception as exc:  # a corrupt entry must not stop the cluster either
            log.error("undecodable log entry at index %d: %s", index, exc)
            return []
        return [self._apply_decoded(item, index) for item in decoded]

    def apply(self, entry: bytes, index: int) -> CommandResult:
        """Apply one :func:`encode_entry` command."""
        try:
            decoded = json.loads(entry)
        except Exception as exc:
            return CommandResult(None, f"undecodable log entry: {exc}", index)
        return self._apply_decoded(decoded, index)

    def _apply_decoded(self, decoded: Any, index: int) -> CommandResult:
        try:
            request_id = decoded["r"]
            command = Command(decoded["n"], decoded["a"])
        except Exception as exc:
            log.error("malformed command at index %d: %s", index, exc)
            return CommandResult(None, f"malformed command in the log: {exc}", index)
        earlier = self._seen.get(request_id)
        if earlier is not None:
            return earlier
        outcome = self._run(command, index)
        self._remember(request_id, outcome)
        return outcome

    def _run(self, command: Command, index: int) -> CommandResult:
        self.applied_commands += 1
        try:
            result: JSON = self._machine.apply(command)
            json.dumps(result, allow_nan=False)
        except Exception as exc:
            self.failed_commands += 1
            return CommandResult(None, _describe(exc), index)
        return CommandResult(result, None, index)

    def _remember(self, request_id: str, outcome: CommandResult) -> None:
        self._seen[request_id] = outcome
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)

    def snapshot(self) -> bytes:
        """Remembered outcomes plus the machine's snapshot, as one byte string."""
        header = json.dumps(
            {
                "version": 1,
                "seen": [[rid, o.result, o.error, o.index] for rid, o in self._seen.items()],
            },
            separators=(",", ":"),
        ).encode()
        return _SNAPSHOT_MAGIC + _HEADER_LEN.pack(len(header)) + header + self._machine.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace everything with a :meth:`snapshot`; raises ValueError on foreign bytes."""
        header, machine_bytes = split_snapshot(data)
        seen: OrderedDict[str, CommandResult] = OrderedDict()
        for rid, result, error, index in header["seen"]:
            seen[rid] = CommandResult(result, error, index)
        self._machine.restore(machine_bytes)
        self._seen = seen


def split_snapshot(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Parse a :meth:`LogApplier.snapshot` into its header and the machine's own bytes."""
    if not data.startswith(_SNAPSHOT_MAGIC):
        raise ValueError("not a tsconsensus snapshot")
    start = len(_SNAPSHOT_MAGIC)
    (length,) = _HEADER_LEN.unpack_from(data, start)
    start += _HEADER_LEN.size
    header = json.loads(data[start : start + length])
    if not isinstance(header, dict) or header.get("version") != 1:
        raise ValueError("unsupported tsconsensus snapshot version")
    return header, data[start + length :]
