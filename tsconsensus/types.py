"""Value types shared by every layer: commands, results, the state machine protocol, status records.

Everything here is plain data. JSON values are what :func:`json.dumps` accepts: ``None``, bools,
numbers, strings, lists and string-keyed dicts of those.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

JSON = Union[None, bool, int, float, str, list[Any], dict[str, Any]]
"""A JSON value (checked at run time by serialising it, not by this alias)."""


@dataclass(frozen=True)
class Command:
    """A command for the replicated state machine.

    ``name`` selects the operation; ``args`` is any JSON value. Both travel through the Raft log
    as JSON, so the state machine sees exactly what the caller sent, on every node.
    """

    name: str
    args: JSON = None


@dataclass(frozen=True)
class CommandResult:
    """What applying a command produced.

    A state-machine failure is data: ``error`` holds its message and ``result`` is ``None``. It is
    the same on every node and survives forwarding. ``index`` is the Raft log index the command
    was committed at (for a retried ``request_id``, the index of the first application).
    """

    result: JSON = None
    error: str | None = None
    index: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class StateMachine(Protocol):
    """The user's replicated state machine.

    Contract:
    - ``apply`` runs on every node, in log order, one call at a time, on the node's apply thread
      (see ``quick_apply`` for the one exception), never at the same time as ``snapshot`` or
      ``restore``. It must be
      deterministic: its result and its effect may depend only on the current state and the
      command, never on time, randomness, the node or I/O. Its return value must be JSON.
      Raising is allowed: the message becomes ``CommandResult.error`` on every node alike, and the
      cluster goes on; a raising ``apply`` should leave the state as it found it.
    - ``snapshot`` returns the whole state as bytes; it runs on the apply thread between two
      ``apply`` calls, so it sees a consistent state.
    - ``restore`` replaces the whole state with one produced by ``snapshot`` (possibly on another
      node or by an older run); it also runs on the apply thread.
    - Optionally ``is_read_only(command) -> bool``: True for commands that never change the
      state. Those are answered through ReadIndex (linearizable, no log entry, nothing
      remembered); their ``apply`` must then really not change anything.
    - Optionally ``quick_apply = True``: ``apply`` returns within a few milliseconds and never
      blocks (no I/O, no locks held by other threads). The node may then call it on its event
      loop thread whenever the apply thread has nothing queued, saving a thread hand-over per
      command (measured: about +50% commands/s for in-process callers), and answer read-only
      commands there too when nothing is left to apply; a slow ``apply`` would then delay
      heartbeats. The built-in :class:`KeyValueMachine` declares it.
    """

    def apply(self, command: Command) -> JSON: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class RaftState(str, enum.Enum):
    """The Raft role of a node."""

    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class MemberStatus:
    """One member of the Raft configuration, as seen from the node reporting it.

    ``match_index`` and ``lag`` are known only on the leader (``None`` elsewhere).
    """

    id: str
    address: str
    connected: bool
    match_index: int | None = None
    lag: int | None = None
    is_self: bool = False
    last_contact_s: float | None = None
    """Seconds since this node last heard from that member (None: never, or itself)."""


@dataclass(frozen=True)
class NodeStatus:
    """A node's view of the cluster at one moment."""

    node_id: str
    address: str
    state: RaftState
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    has_quorum: bool
    members: tuple[MemberStatus, ...] = field(default_factory=tuple)
    leader_gap_max_s: float | None = None
    """Longest silence between two messages from the leader, seen by a follower."""
    snapshot_index: int = 0
    """The log index this node's latest durable snapshot covers (0: none yet)."""

    def to_json(self) -> dict[str, Any]:
        """The ``GET /v1/status`` body (DESIGN section 4)."""
        members = []
        for m in self.members:
            item: dict[str, Any] = {"id": m.id, "address": m.address, "connected": m.connected}
            if m.match_index is not None:
                item["match_index"] = m.match_index
            if m.lag is not None:
                item["lag"] = m.lag
            if m.last_contact_s is not None:
                item["last_contact_s"] = round(m.last_contact_s, 3)
            members.append(item)
        return {
            "node_id": self.node_id,
            "address": self.address,
            "state": self.state.value,
            "leader": self.leader,
            "term": self.term,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "has_quorum": self.has_quorum,
            "members": members,
            "snapshot_index": self.snapshot_index,
            **(
                {}
                if self.leader_gap_max_s is None
                else {"leader_gap_max_s": round(self.leader_gap_max_s, 4)}
            ),
        }


@dataclass(frozen=True)
class SetupCheck:
    """One verdict of :func:`tsconsensus.diagnose` (``tsc doctor``): ``name`` (``tailnet``,
    ``tag``, ``raft port``, ``peer node2``...), ``status`` (``"ok"``; ``"warn"``: works, but
    mind it; ``"fail"``: wrong; ``"skip"``: could not be checked), what was found, and for
    anything but ``ok`` what to do about it."""

    STATUSES: ClassVar[tuple[str, str, str, str]] = ("ok", "warn", "fail", "skip")

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}
