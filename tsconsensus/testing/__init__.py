"""Helpers for trying tsconsensus and testing code built on it, without Tailscale.

- :class:`LocalCluster`: N real node processes on loopback addresses (``tsc dev up``).
- :class:`RecordingStateMachine`: a deterministic machine that records what it applied.
- :class:`LocalAPIEmulator`: a fake tailscaled LocalAPI on a unix socket, whose nodes can be
  tagged, untagged and taken offline while it runs.
- :class:`Simulation`: a deterministic simulator of the Raft engine under faults, checking
  Raft's safety properties after every event; :func:`check_determinism` runs your own state
  machine under it to prove its ``apply`` and ``snapshot`` deterministic.
- :class:`Operation` and :func:`read_history`/:func:`write_history`: client histories and their
  JSON lines file; :func:`check_history`: the linearizability checker for the key-value machine
  (also ``python -m tsconsensus.testing.linearizability HISTORY.jsonl``).
"""

from __future__ import annotations

from .cluster import LocalCluster, node_command
from .determinism import DeterminismReport, check_determinism
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
from .sim_checks import Violation
from .sim_result import SimResult
from .sim_schedule import Fault, SimOptions, random_schedule
from .sim_search import run_seeds, shrink
from .simulator import Simulation

__all__ = [
    "CheckResult",
    "DeterminismReport",
    "EmulatedNode",
    "EmulatedTailnet",
    "Fault",
    "HistoryFormatError",
    "KeyResult",
    "LocalAPIEmulator",
    "LocalCluster",
    "Operation",
    "RecordingStateMachine",
    "SimOptions",
    "SimResult",
    "Simulation",
    "UnsupportedOperationError",
    "Verdict",
    "Violation",
    "Window",
    "check_determinism",
    "check_history",
    "format_result",
    "format_window",
    "node_command",
    "random_schedule",
    "read_history",
    "run_seeds",
    "shrink",
    "write_history",
]
