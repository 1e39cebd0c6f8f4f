"""The deterministic envelope around the user's state machine.

Every committed entry goes through :meth:`LogApplier.apply_entry` on every node, in log order,
on the apply thread. It adds, identically everywhere:

- **exactly-once**: a command carries a request id. The first time an id is applied, the
  outcome is remembered with a hash of the command, its index and the entry's *log time*; a
  later entry with the same id returns that outcome without applying anything (a retry after
  a lost answer or a leader change). The same id with a *different* command is refused
  (:class:`Refusal` ``"reused"``), never answered with another command's outcome. Ids are
  forgotten ``window_s`` seconds of log time after they were applied. Log time is stamped by
  the leader on each entry from its own monotonic clock and never runs backwards, so every
  node forgets the same ids at the same entry, whatever its wall clock says. A command also
  carries ``t0``, the log time its node had reached when the command was first submitted; all
  the node's retries carry the same ``t0``, and an id the table no longer holds whose ``t0``
  is older than the window is refused (``"expired"``) rather than applied: a retry that
  outlives the window can never apply a command twice.
- **reads keep nothing**: a command the machine declares read-only (``is_read_only``) is
  applied without being remembered.
- **containment**: whatever the user's ``apply`` raises becomes an error result, never an
  exception that stops the apply thread; a result that is not JSON is an error result.

A command is JSON ``{"r": request id, "n": name, "a": args, "t0": log time, "h": hash}``
(:func:`encode_entry`); an entry is ``{"c": [commands]}`` (:func:`join_entries`), applied in
order, all reported at the entry's index. Operator actions have a kind of their own
(``{"r", "k": kind, "a"}``) that only the node's endpoints build; ``/v1/execute`` cannot.
Snapshots hold the remembered outcomes and the user's own ``snapshot()`` bytes; nothing is
pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._outcomes import Refusal
from .errors import InvalidCommandError
from .safejson import (
    MAX_DEPTH,
    dumps_canonical,
    dumps_compact,
    dumps_strict,
    nesting_exceeds,
    text_may_exceed,
)
from .types import JSON, Command, CommandResult, StateMachine

log = logging.getLogger("tsconsensus.apply")

_SNAPSHOT_MAGIC = b"TSCSNAP3"
RESTORE_KIND = "restore"
"""Entry kind: replace the state machine's state with snapshot bytes carried in the entry."""
_HEADER_LEN = struct.Struct(">Q")
REMEMBERED_ID_BYTES = 400
"""About what one remembered request id costs in memory (id, hash, outcome, bookkeeping), for
a short id and a small result; measured by tests/test_applier.py."""


Outcome = CommandResult | Refusal
_Remembered = tuple[str, bytes | None, str | None, int, float]


def command_hash(command: Command) -> str:
    """What identifies a command's content under its request id (same on every node)."""
    canonical = dumps_canonical([command.name, command.args])
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def encode_entry(request_id: str, command: Command, first_seen: float = 0.0) -> bytes:
    """The log form of ``command``; ``first_seen`` is the submitting node's log time when the
    command was first submitted (kept by every retry). Raises :class:`InvalidCommandError`
    if it is not JSON or nests too deeply."""
    return encode_entry_and_hash(request_id, command, first_seen)[0]


def encode_entry_and_hash(
    request_id: str, command: Command, first_seen: float = 0.0
) -> tuple[bytes, str]:
    """:func:`encode_entry` and the :func:`command_hash` it holds, computed once."""
    _check_name(command)
    envelope = {"r": request_id, "n": command.name, "a": command.args, "t0": first_seen}
    digest = ""
    try:
        digest = envelope["h"] = command_hash(command)
    except (TypeError, ValueError, RecursionError):
        pass  # not JSON: _encode says why
    return _encode(envelope, command.args), digest


def check_command(command: Command) -> None:
    """Raise :class:`InvalidCommandError` where :func:`encode_entry` would, without building
    an entry: for read-only commands, which never enter the log but are held to the same
    rules (a name, JSON args, bounded nesting)."""
    _check_name(command)
    _encode({"a": command.args}, command.args)


def _check_name(command: Command) -> None:
    if not isinstance(command.name, str) or not command.name:
        raise InvalidCommandError("command name must be a non-empty string")


def encode_restore_entry(request_id: str, sha256: str, size: int) -> bytes:
    """The log entry that restores, on every node, the staged backup named by ``sha256``
    (:mod:`tsconsensus.staged_restore`: the bytes themselves never enter the log)."""
    return _encode(
        {"r": request_id, "k": RESTORE_KIND, "a": {"sha256": sha256, "size": size}}, None
    )


def _encode(envelope: dict[str, Any], args: Any) -> bytes:
    too_deep = f"command args are nested deeper than {MAX_DEPTH} levels"
    try:
        encoded = dumps_strict(envelope).encode()
    except RecursionError:
        raise InvalidCommandError(too_deep) from None
    except (TypeError, ValueError) as exc:
        raise InvalidCommandError(f"command args are not JSON: {exc}") from None
    # Every node decodes this on its apply thread: what is accepted must decode there too.
    if text_may_exceed(encoded) and nesting_exceeds(args):
        raise InvalidCommandError(too_deep)
    return encoded


def join_entries(entries: list[bytes]) -> bytes:
    """One log entry carrying several encoded commands, to be applied in this order."""
    return b'{"c":[%s]}' % b",".join(entries)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class LogApplier:
    """Applies committed entries to a :class:`StateMachine`. Apply thread only; never raises.

    ``forget_at_once`` is a test-only planted bug (the fault runner must catch it): ids are
    forgotten as soon as they are applied.
    """

    def __init__(
        self,
        machine: StateMachine,
        *,
        window_s: float = 120.0,
        forget_at_once: bool = False,
        fetch_staged: Callable[[str], bytes] | None = None,
    ) -> None:
        self._machine = machine
        self._fetch_staged = fetch_staged
        self._window_s = window_s
        self._forget_at_once = forget_at_once
        self.log_time = 0.0
        """Log time (seconds) of the last entry applied; readable from any thread."""
        # request id -> (command hash, result as JSON, error, index, log time applied at),
        # oldest first; compact, since a busy cluster remembers every id for a whole window
        self._seen: OrderedDict[str, _Remembered] = OrderedDict()
        probe = getattr(machine, "is_read_only", None)
        self._read_only = probe if callable(probe) else None

    @property
    def machine(self) -> StateMachine:
        return self._machine

    @property
    def remembered(self) -> int:
        return len(self._seen)

    @property
    def quick(self) -> bool:
        """Whether the machine declares ``quick_apply`` (see :class:`StateMachine`)."""
        return getattr(self._machine, "quick_apply", False) is True

    def is_read_only(self, command: Command) -> bool:
        """Whether the machine says ``command`` only reads (then it may skip the log)."""
        if self._read_only is None:
            return False
        try:
            return bool(self._read_only(command))
        except Exception:  # a machine that cannot tell: treat the command as a write
            return False

    def read(self, command: Command, index: int) -> CommandResult:
        """Run a read-only command on the current state (no log, nothing remembered)."""
        return self._run(command, index, restore=False)

    def apply_entry(
        self, entry: bytes, index: int, log_time: float
    ) -> list[tuple[str, str, Outcome]]:
        """Apply every command of an entry stamped with ``log_time`` (seconds); each outcome
        with its request id and its command's hash (:func:`command_hash`; "" for a restore):
        an outcome answers only a caller that submitted that command under that id."""
        self._advance(log_time)
        try:
            commands = json.loads(entry)["c"]
            if not isinstance(commands, list):
                raise ValueError("log entry has no command list")
        except Exception as exc:  # a corrupt entry must not stop the cluster either
            log.error("undecodable log entry at index %d: %s", index, exc)
            return []
        out: list[tuple[str, str, Outcome]] = []
        for item in commands:
            rid = item.get("r") if isinstance(item, dict) else None
            digest = item.get("h") if isinstance(item, dict) else None
            out.append(
                (
                    rid if isinstance(rid, str) else "",
                    digest if isinstance(digest, str) else "",
                    self._apply_one(item, index),
                )
            )
        return out

    def _advance(self, stamp: float) -> None:
        """Move log time forward (never back) and forget ids older than the window."""
        if stamp > self.log_time:
            self.log_time = stamp
        horizon = self.log_time - self._window_s
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if oldest[4] >= horizon:
                break
            seen.popitem(last=False)

    def _apply_one(self, decoded: Any, index: int) -> Outcome:
        try:
            request_id = decoded["r"]
            kind = decoded.get("k")
            if kind not in (None, RESTORE_KIND):
                raise ValueError(f"unknown entry kind {kind!r}")
            command = Command(decoded["n"] if kind is None else "", decoded["a"])
            digest = str(decoded.get("h", ""))
            first_seen = float(decoded.get("t0", 0.0))
        except Exception as exc:
            log.error("malformed command at index %d: %s", index, exc)
            return CommandResult(None, f"malformed command in the log: {exc}", index)
        earlier = self._seen.get(request_id)
        if earlier is not None:
            if earlier[0] != digest:
                return Refusal(
                    "reused",
                    f"request id {request_id!r} was already used for a different command "
                    f"(at index {earlier[3]}); use a new id for a new command",
                )
            result = None if earlier[1] is None else json.loads(earlier[1])
            return CommandResult(result, earlier[2], earlier[3])
        if first_seen and self.log_time - first_seen > self._window_s:
            return Refusal(
                "expired",
                f"request id {request_id!r} expired: its command was first submitted "
                f"{self.log_time - first_seen:.0f}s of log time ago, longer than the "
                f"{self._window_s:g}s for which ids are remembered; it was not applied now, "
                "but an earlier attempt may have been",
            )
        restore = kind == RESTORE_KIND
        if not restore and self.is_read_only(command):
            return self._run(command, index, restore=False)
        outcome, encoded = self._run_encoded(command, index, restore=restore)
        if not self._forget_at_once:
            self._seen[request_id] = (digest, encoded, outcome.error, index, self.log_time)
        return outcome

    def _run(self, command: Command, index: int, *, restore: bool) -> CommandResult:
        return self._run_encoded(command, index, restore=restore)[0]

    def _run_encoded(
        self, command: Command, index: int, *, restore: bool
    ) -> tuple[CommandResult, bytes | None]:
        """The outcome, and its result as JSON (checked here anyway; kept compact)."""
        try:
            if restore:
                result: JSON = self._restore(command.args)
            else:
                result = self._machine.apply(command)
            encoded = dumps_strict(result).encode()
        except Exception as exc:
            return CommandResult(None, _describe(exc), index), None
        return CommandResult(result, None, index), encoded

    def _restore(self, args: JSON) -> JSON:
        """Replace the machine's state with a staged backup, so every node restores the same
        bytes at the same point (``POST /v1/snapshot/restore``)."""
        if not isinstance(args, dict) or not isinstance(args.get("sha256"), str):
            raise ValueError("restore: args must be {'sha256': hex, 'size': bytes}")
        if self._fetch_staged is None:
            raise ValueError("restore: this node cannot fetch staged backups")
        data = self._fetch_staged(args["sha256"])
        if hashlib.sha256(data).hexdigest() != args["sha256"]:
            raise ValueError("restore: the staged backup fails its checksum")
        self._machine.restore(data)
        return {"restored_bytes": len(data)}

    def snapshot(self) -> bytes:
        """Remembered outcomes plus the machine's snapshot, as one byte string. The outcomes
        are encoded one per line, each step short, so heartbeats go on meanwhile."""
        lines = [
            dumps_compact([rid, h, None if r is None else r.decode(), e, i, t])
            for rid, (h, r, e, i, t) in self._seen.items()
        ]
        seen = "\n".join(lines).encode()
        header = dumps_compact(
            {"version": 3, "log_time": self.log_time, "seen": len(lines)}
        ).encode()
        return b"".join(
            [
                _SNAPSHOT_MAGIC,
                _HEADER_LEN.pack(len(header)),
                header,
                _HEADER_LEN.pack(len(seen)),
                seen,
                self._machine.snapshot(),
            ]
        )

    def restore(self, data: bytes) -> None:
        """Replace everything with a :meth:`snapshot`; raises ValueError on foreign bytes."""
        header, seen_lines, machine_bytes = split_snapshot(data)
        seen: OrderedDict[str, _Remembered] = OrderedDict()
        for line in seen_lines:
            rid, digest, result, error, index, stamp = json.loads(line)
            encoded = None if result is None else str(result).encode()
            seen[rid] = (digest, encoded, error, int(index), float(stamp))
        self._machine.restore(machine_bytes)
        self._seen = seen
        self.log_time = float(header["log_time"])


def split_snapshot(data: bytes) -> tuple[dict[str, Any], list[bytes], bytes]:
    """Parse a :meth:`LogApplier.snapshot`: its header, its remembered outcomes (one JSON
    line each) and the machine's own bytes. Raises ValueError on anything else."""
    if not data.startswith(_SNAPSHOT_MAGIC):
        raise ValueError("not a tsconsensus snapshot")
    try:
        start = len(_SNAPSHOT_MAGIC)
        (length,) = _HEADER_LEN.unpack_from(data, start)
        start += _HEADER_LEN.size
        header = json.loads(data[start : start + length])
        start += length
        (length,) = _HEADER_LEN.unpack_from(data, start)
        start += _HEADER_LEN.size
        block = bytes(data[start : start + length])
    except (struct.error, ValueError) as exc:
        raise ValueError(f"truncated tsconsensus snapshot: {exc}") from None
    if not isinstance(header, dict) or header.get("version") != 3:
        raise ValueError("unsupported tsconsensus snapshot version")
    lines = block.split(b"\n") if block else []
    if len(lines) != header.get("seen"):
        raise ValueError("tsconsensus snapshot: remembered outcomes do not match the header")
    return header, lines, data[start + length :]
