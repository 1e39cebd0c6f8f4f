"""Helpers for trying tsconsensus and testing code built on it, without Tailscale.

- :class:`LocalCluster`: N real node processes on loopback addresses (``tsc dev up``).
- :class:`RecordingStateMachine`: a deterministic machine that records what it applied.
- :class:`LocalAPIEmulator`: a fake tailscaled LocalAPI on a unix socket, whose nodes can be
  tagged, untagged and taken offline while it runs.
"""

from __future__ import annotations

from .cluster import LocalCluster, node_command
from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator
from .machines import RecordingStateMachine

__all__ = [
    "EmulatedNode",
    "EmulatedTailnet",
    "LocalAPIEmulator",
    "LocalCluster",
    "RecordingStateMachine",
    "node_command",
]
