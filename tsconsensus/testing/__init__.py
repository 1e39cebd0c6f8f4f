"""Helpers for trying tsconsensus and testing code built on it, without Tailscale.

- :class:`LocalCluster`: N real node processes on loopback addresses (``tsc dev up``).
- :class:`RecordingStateMachine`: a deterministic machine that records what it applied.
- :class:`LocalAPIEmulator`: a fake tailscaled LocalAPI on a unix socket, whose nodes can be
  tagged, untagged and taken offline while it runs.
- :class:`Operation` and :func:`read_history`/:func:`write_history`: client histories and their
  JSON lines file; :func:`check_history`: the linearizability checker for the key-value machine
  (also ``python -m tsconsensus.testing.linearizability HISTORY.jsonl``).
"""

from __future__ import annotations

from .cluster import LocalCluster, node_command
from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator
from .history import HistoryFormatError, Operation, read_history, write_history
from .linearizability import (
    CheckResult,
    KeyResult,
    UnsupportedOperationError,
    Verdict,
    Window,
    check_history,
    format_result,
    format_window,
)
from .machines import RecordingStateMachine

__all__ = [
    "CheckResult",
    "EmulatedNode",
    "EmulatedTailnet",
    "HistoryFormatError",
    "KeyResult",
    "LocalAPIEmulator",
    "LocalCluster",
    "Operation",
    "RecordingStateMachine",
    "UnsupportedOperationError",
    "Verdict",
    "Window",
    "check_history",
    "format_result",
    "format_window",
    "node_command",
    "read_history",
    "write_history",
]
