"""The Raft engine: a pure core (:mod:`.core`), its log, codec and settings.

Knows nothing of tailnets, HTTP, JSON commands or the applier; it imports only
:mod:`tsconsensus.errors` from the rest of the package.
"""

from __future__ import annotations

from ._base import InitialState
from .config import CoreConfig
from .core import RaftCore, bootstrap_state
from .messages import (
    NONE,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChange,
    MembershipOp,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "NONE",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "InitialState",
    "Membership",
    "MembershipChange",
    "MembershipOp",
    "Message",
    "MessageType",
    "RaftCore",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "bootstrap_state",
]
