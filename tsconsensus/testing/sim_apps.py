"""What the simulator applies committed entries to, on every simulated node.

An application turns each committed entry into an *outcome digest*; the simulator demands that
every node produce the same digest at the same index, and the same snapshot bytes at the same
index. :class:`HashChain` (the default) chains every entry into one hash, so any divergence in
any earlier entry shows at once. :class:`MachineApp` runs a user's
:class:`~tsconsensus.types.StateMachine`, so the same checks prove that its ``apply`` and
``snapshot`` are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from typing import Protocol

from ..raft.messages import Entry, EntryKind
from ..types import Command, StateMachine

_CHAIN = struct.Struct(">Q32s")


class Application(Protocol):
    """One node's replica. ``applied`` is the last index applied or restored."""

    applied: int

    def apply(self, entry: Entry) -> bytes:
        """Apply a committed entry; a digest of its outcome (equal on every node)."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, index: int) -> None: ...


class HashChain:
    """Hashes every entry (index, term, kind, data) into a running digest."""

    def __init__(self) -> None:
        self.applied = 0
        self._chain = b"\0" * 32

    def apply(self, entry: Entry) -> bytes:
        h = hashlib.sha256(self._chain)
        h.update(struct.pack(">QQB", entry.index, entry.term, entry.kind))
        h.update(entry.data)
        self._chain = h.digest()
        self.applied = entry.index
        return self._chain

    def snapshot(self) -> bytes:
        return _CHAIN.pack(self.applied, self._chain)

    def restore(self, data: bytes, index: int) -> None:
        applied, chain = _CHAIN.unpack(data)
        if applied != index:
            raise ValueError(f"snapshot of index {applied} installed as index {index}")
        self.applied, self._chain = applied, chain


def encode_command(command: Command) -> bytes:
    """The entry data :class:`MachineApp` expects for ``command``."""
    return json.dumps({"n": command.name, "a": command.args}, sort_keys=True).encode()


class MachineApp:
    """Runs a user's state machine on the simulated log. NORMAL entries carry
    :func:`encode_command` JSON; an ``apply`` that raises yields an error outcome, as in a
    real node."""

    def __init__(self, factory: Callable[[], StateMachine]) -> None:
        self._factory = factory
        self.machine = factory()
        self.applied = 0

    def apply(self, entry: Entry) -> bytes:
        self.applied = entry.index
        if entry.kind is not EntryKind.NORMAL:
            return b"-"
        try:
            raw = json.loads(entry.data)
            outcome: object = {"result": self.machine.apply(Command(raw["n"], raw["a"]))}
        except Exception as exc:  # the user's apply may raise anything: that is an outcome
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        return json.dumps(outcome, sort_keys=True, default=repr).encode()

    def snapshot(self) -> bytes:
        return self.machine.snapshot()

    def restore(self, data: bytes, index: int) -> None:
        self.machine = self._factory()
        self.machine.restore(data)
        self.applied = index
