"""The Raft engine: a pure core (:mod:`.core`), its log, codec and settings.

Knows nothing of tailnets, HTTP, JSON commands or the applier; it imports only
:mod:`tsconsensus.errors` from the rest of the package.
"""

from __future__ import annotations

from ._base import InitialState
from .config import CoreConfig
from .core import RaftCore, bootstrap_state
from .memory_storage import MemoryStorage
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
from .storage import FileStorage, open_storage
from .storage_types import MEMORY, Storage

__all__ = [
    "MEMORY",
    "NONE",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "FileStorage",
    "HardState",
    "InitialState",
    "Membership",
    "MembershipChange",
    "MembershipOp",
    "MemoryStorage",
    "Message",
    "MessageType",
    "RaftCore",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Storage",
    "bootstrap_state",
    "open_storage",
]
