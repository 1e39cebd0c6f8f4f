"""The deterministic envelope around the user's state machine.

Every committed log entry goes through :meth:`LogApplier.apply` on every node, in log order, on
the Raft thread. It adds, identically everywhere:
- exactly-once: an entry whose request id was seen before returns the first outcome and is not
  applied again. Ids are remembered for ``window_s`` seconds of *log time* (the submitting
  node's clock, stamped into each entry and never allowed to run backwards, so every node
  forgets the same ids at the same entry), and at most ``max_entries`` of them;
- containment: whatever the user's ``apply`` raises becomes an error result, never an
  exception that would stop the Raft thread;
- JSON results: a result that is not JSON becomes an error result.

A command is JSON ``{"r": request_id, "n": name, "a": args}`` (:func:`encode_entry`); a log
entry is ``{"t": stamp, "c": [commands]}``, commands submitted together (:func:`join_entries`),
applied in order and all reported at the entry's log index.
Operator actions travel as commands of their own kind, ``{"r": ..., "k": kind, "a": ...}``,
which only the node's own endpoints build (:func:`encode_restore_entry` for ``POST
/v1/snapshot/restore``): every command name, ``tsc.restore`` included, belongs to the user's
state machine, and nothing sent to ``/v1/execute`` can produce a ``"k"`` field.
Snapshots hold the remembered outcomes and the user's own ``snapshot()`` bytes; nothing is
pickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import struct
from collections import OrderedDict
from typing import Any

from .errors import InvalidCommandError
from .safejson import MAX_DEPTH, nesting_exceeds, text_may_exceed
from .types import JSON, Command, CommandResult, StateMachine

log = logging.getLogger("tsconsensus.apply")

_SNAPSHOT_MAGIC = b"TSCSNAP1"
RESTORE_KIND = "restore"
"""Entry kind: replace the state machine's state with snapshot bytes carried in the entry."""
_HEADER_LEN = struct.Struct(">Q")


def encode_entry(request_id: str, command: Command) -> bytes:
    """The log entry for ``command``; raises :class:`InvalidCommandError` if it is not JSON."""
    if not isinstance(command.name, str) or not command.name:
        raise InvalidCommandError("command name must be a non-empty string")
    return _encode({"r": request_id, "n": command.name, "a": command.args}, command.args)


def encode_restore_entry(request_id: str, data: bytes, sha256: str) -> bytes:
    """The log entry that restores ``data`` (checked against ``sha256``) on every node."""
    args = {"data": base64.b64encode(data).decode("ascii"), "sha256": sha256}
    return _encode({"r": request_id, "k": RESTORE_KIND, "a": args}, None)


def _encode(envelope: dict[str, Any], args: Any) -> bytes:
    too_deep = f"command args are nested deeper than {MAX_DEPTH} levels"
    try:
        encoded = json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise InvalidCommandError(too_deep) from None
    except (TypeError, ValueError) as exc:
        raise InvalidCommandError(f"command args are not JSON: {exc}") from None
    # Every node decodes this on its Raft thread: what is accepted must decode there too.
    if text_may_exceed(encoded) and nesting_exceeds(args):
        raise InvalidCommandError(too_deep)
    return encoded


def join_entries(entries: list[bytes], stamp: float) -> bytes:
    """One log entry carrying several encoded commands, to be applied in this order.

    ``stamp`` is the submitting node's wall-clock time; it only decides when request ids are
    forgotten.
    """
    return b'{"t":%.3f,"c":[%s]}' % (stamp, b",".join(entries))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class LogApplier:
    """Applies committed entries to a :class:`StateMachine`. Raft thread only; never raises."""

    def __init__(
        self, machine: StateMachine, *, window_s: float = 120.0, max_entries: int = 100_000
    ) -> None:
        self._machine = machine
        self._window_s = window_s
        self._max_entries = max_entries
        self._log_time = 0.0
        # request id -> (outcome, log time it was first applied at), oldest first
        self._seen: OrderedDict[str, tuple[CommandResult, float]] = OrderedDict()

    @property
    def machine(self) -> StateMachine:
        return self._machine

    def apply_batch(self, entry: bytes, index: int) -> list[CommandResult]:
        """Apply every command of a :func:`join_entries` entry, in order."""
        try:
            decoded = json.loads(entry)
            commands = decoded["c"]
            stamp = float(decoded["t"])
            if not isinstance(commands, list):
                raise ValueError("log entry has no command list")
        except Exception as exc:  # a corrupt entry must not stop the cluster either
            log.error("undecodable log entry at index %d: %s", index, exc)
            return []
        self._advance(stamp)
        return [self._apply_decoded(item, index) for item in commands]

    def apply_logged(
        self, entry: bytes, index: int, log_time: float
    ) -> list[tuple[str, CommandResult]]:
        """Apply every command of an entry of the new engine, whose log time (seconds) the
        leader stamped on the entry itself; each outcome with its request id."""
        try:
            commands = json.loads(entry)["c"]
            if not isinstance(commands, list):
                raise ValueError("log entry has no command list")
        except Exception as exc:  # a corrupt entry must not stop the cluster either
            log.error("undecodable log entry at index %d: %s", index, exc)
            return []
        self._advance(log_time)
        out = []
        for item in commands:
            outcome = self._apply_decoded(item, index)
            rid = item.get("r") if isinstance(item, dict) else None
            out.append((rid if isinstance(rid, str) else "", outcome))
        return out

    def _advance(self, stamp: float) -> None:
        """Move log time forward (never back) and forget ids older than the window."""
        if stamp > self._log_time:
            self._log_time = stamp
        horizon = self._log_time - self._window_s
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if oldest[1] >= horizon:
                break
            seen.popitem(last=False)

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
            kind = decoded.get("k")
            command = Command(decoded["n"] if kind is None else "", decoded["a"])
            if kind not in (None, RESTORE_KIND):
                raise ValueError(f"unknown entry kind {kind!r}")
        except Exception as exc:
            log.error("malformed command at index %d: %s", index, exc)
            return CommandResult(None, f"malformed command in the log: {exc}", index)
        earlier = self._seen.get(request_id)
        if earlier is not None:
            return earlier[0]
        outcome = self._run(command, index, restore=kind == RESTORE_KIND)
        self._remember(request_id, outcome)
        return outcome

    def _run(self, command: Command, index: int, *, restore: bool) -> CommandResult:
        try:
            if restore:
                result: JSON = self._restore(command.args)
            else:
                result = self._machine.apply(command)
            json.dumps(result, allow_nan=False)
        except Exception as exc:
            return CommandResult(None, _describe(exc), index)
        return CommandResult(result, None, index)

    def _restore(self, args: JSON) -> JSON:
        """Replace the machine's state with a snapshot carried in the log, so every node
        restores the same bytes at the same point (``POST /v1/snapshot/restore``)."""
        if not isinstance(args, dict) or not isinstance(args.get("data"), str):
            raise ValueError("restore: args must be {'data': base64, 'sha256': hex}")
        data = base64.b64decode(args["data"], validate=True)
        if hashlib.sha256(data).hexdigest() != args.get("sha256"):
            raise ValueError("restore: the snapshot fails its checksum")
        self._machine.restore(data)
        return {"restored_bytes": len(data)}

    def _remember(self, request_id: str, outcome: CommandResult) -> None:
        self._seen[request_id] = (outcome, self._log_time)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def snapshot(self) -> bytes:
        """Remembered outcomes plus the machine's snapshot, as one byte string."""
        header = json.dumps(
            {
                "version": 1,
                "log_time": self._log_time,
                "seen": [
                    [rid, o.result, o.error, o.index, t] for rid, (o, t) in self._seen.items()
                ],
            },
            separators=(",", ":"),
        ).encode()
        return _SNAPSHOT_MAGIC + _HEADER_LEN.pack(len(header)) + header + self._machine.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace everything with a :meth:`snapshot`; raises ValueError on foreign bytes."""
        header, machine_bytes = split_snapshot(data)
        seen: OrderedDict[str, tuple[CommandResult, float]] = OrderedDict()
        for rid, result, error, index, stamp in header["seen"]:
            seen[rid] = (CommandResult(result, error, index), stamp)
        self._machine.restore(machine_bytes)
        self._seen = seen
        self._log_time = float(header["log_time"])


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
