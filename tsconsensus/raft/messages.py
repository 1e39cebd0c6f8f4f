"""Plain data of the Raft engine: entries, hard state, membership, snapshots, messages, Ready.

Everything here is an immutable value. Member ids are random non-zero 64-bit integers (0 means
"nobody"); addresses are attributes of a member, never its identity. The core
(:mod:`tsconsensus.raft.core`) consumes and produces these values; :mod:`tsconsensus.raft.codec`
turns them into bytes and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

NONE = 0
"""The member id meaning "nobody" (no vote, no leader)."""

MAX_ID = (1 << 64) - 1


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """A proposal of the layer above: opaque bytes, applied in log order."""
    NOOP = 1
    """The empty entry a new leader appends, so it can commit an entry of its own term."""
    MEMBERSHIP = 2
    """A complete :class:`Membership`, encoded by :func:`codec.encode_membership`."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.

    ``time`` is the entry's *log time* in milliseconds, stamped by the leader that created it:
    ``max(previous entry's time, the time at its election + its ticks since then)``. It never
    moves backwards along the log and no node's wall clock enters it, so every replica sees the
    same value (the layer above uses it to forget request ids identically everywhere).
    """

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""
    time: int = 0

    @property
    def size(self) -> int:
        """Bytes this entry counts for in batch and overload limits."""
        return len(self.data) + ENTRY_OVERHEAD


ENTRY_OVERHEAD = 32
"""Upper bound of an encoded entry's bytes beyond its data (see :mod:`codec`)."""


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must have on disk before it sends anything that depends on it."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class MembershipOp(enum.IntEnum):
    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One single-server change: add a learner, promote a learner to voter, or remove a member."""

    op: MembershipOp
    member: int
    address: str = ""


@dataclass(frozen=True)
class Membership:
    """A complete cluster configuration.

    ``voters`` elect and count toward commit; ``learners`` receive the log but never vote,
    campaign, or count toward any majority. ``removed`` remembers every id ever removed, so an
    id never comes back. ``addresses`` maps every current member to its address.
    """

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    addresses: dict[int, str] = field(default_factory=dict, hash=False)
    removed: frozenset[int] = frozenset()

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    def is_voter(self, member: int) -> bool:
        return member in self.voters

    def quorum(self) -> int:
        """Votes needed for a majority of the voters."""
        return len(self.voters) // 2 + 1

    def apply(self, change: MembershipChange) -> Membership:
        """The configuration after ``change``; raises :class:`ValueError` naming the problem."""
        m, addresses = change.member, dict(self.addresses)
        if m == NONE or not 0 < m <= MAX_ID:
            raise ValueError(f"member id {m} is not a valid id")
        if change.op is MembershipOp.ADD_LEARNER:
            if m in self.removed:
                raise ValueError(f"member {m:016x} was removed from this cluster and cannot rejoin")
            if m in self.members:
                raise ValueError(f"member {m:016x} is already a member")
            addresses[m] = change.address
            return Membership(self.voters, self.learners | {m}, addresses, self.removed)
        if change.op is MembershipOp.PROMOTE:
            if m not in self.learners:
                raise ValueError(f"member {m:016x} is not a learner")
            return Membership(self.voters | {m}, self.learners - {m}, addresses, self.removed)
        if m not in self.members:
            raise ValueError(f"member {m:016x} is not a member")
        if self.voters == {m}:
            raise ValueError(f"member {m:016x} is the only voter and cannot be removed")
        addresses.pop(m, None)
        return Membership(self.voters - {m}, self.learners - {m}, addresses, self.removed | {m})


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: the log up to ``index`` (whose entry had ``term``), the
    configuration in force at that index, the cluster it belongs to and the log time there."""

    index: int
    term: int
    membership: Membership
    cluster_id: int
    time: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot's metadata and its bytes (opaque to the engine: the layer above's state).

    ``data`` may be any bytes-like object (``bytes``, or a ``memoryview`` of a mapped file).
    """

    meta: SnapshotMeta
    data: bytes | memoryview = b""


COMMIT_NOTICE = 1
"""``Message.context`` of an APPEND that only carries a commit index (see MessageType.APPEND)."""


class MessageType(enum.IntEnum):
    APPEND = 0
    """index/log_term: the entry before ``entries``; commit: the leader's commit index;
    context :data:`COMMIT_NOTICE`: no entries, only a new commit index for a follower known to
    match (it answers only a mismatch: a success would tell the leader nothing new)."""
    APPEND_RESP = 1
    """Success: index is the last index now matched. Reject: index is the rejected previous
    index, hint_index/hint_term where the follower's log may match."""
    HEARTBEAT = 2
    """commit: the leader's commit index capped at the follower's match; context: round id."""
    HEARTBEAT_RESP = 3
    """context: the round id being acknowledged."""
    VOTE = 4
    """index/log_term: the candidate's last entry; context 1: campaign after TimeoutNow."""
    VOTE_RESP = 5
    PRE_VOTE = 6
    """As VOTE, for the term the candidate would use; nobody changes term for it."""
    PRE_VOTE_RESP = 7
    SNAPSHOT = 8
    """One chunk: snapshot meta, offset, size (total bytes), data, checksum (CRC-32 of data)."""
    SNAPSHOT_RESP = 9
    """index: the snapshot's index; offset: bytes received so far; reject: start again."""
    TIMEOUT_NOW = 10
    """Campaign at once (leadership transfer)."""
    READ_INDEX = 11
    """Follower to leader: context is the read request's id."""
    READ_INDEX_RESP = 12
    """index: the read index for ``context``; reject: the leader could not serve it."""


class Message(NamedTuple):
    """A message between two members. Which fields mean something depends on ``type``
    (see :class:`MessageType`); the others keep their defaults.

    A named tuple rather than a frozen dataclass: as immutable, and built in a fifth of the
    time (a frozen dataclass sets each of its 17 fields through ``object.__setattr__``), which
    shows on every node for every message sent and received. Copy with ``m._replace(...)``.
    """

    type: MessageType
    to: int
    frm: int
    term: int
    index: int = 0  # type: ignore[assignment]  # a field, where a tuple has a method
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: int = 0
    snapshot: SnapshotMeta | None = None
    offset: int = 0
    size: int = 0
    data: bytes = b""
    checksum: int = 0


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the layer above watches: who leads, and this node's role."""

    leader: int
    role: Role
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request (its ``context``) may be answered once the applied index reaches
    ``index``."""

    context: int
    index: int


class Ready(NamedTuple):
    """One batch of work for the driver. Handle it in this order, then call
    :meth:`RaftCore.advance` with it:

    1. send ``messages`` (they depend on nothing in this batch being durable);
    2. install ``snapshot`` if set (persist it, restore the state machine from its data);
    3. persist ``entries`` (the first one's index replaces everything from there on) and
       ``hard_state`` if set, with one sync;
    4. send ``messages_after_persist`` (votes and acknowledgements: only once durable);
    5. hand ``committed`` to the applier, in order; answer ``read_states`` once applied;
       fail the reads in ``reads_dropped``.

    ``snapshot_due`` says the log has grown past the compaction threshold: the layer above
    should take a snapshot at its applied index and report it with
    :meth:`RaftCore.snapshot_taken`.

    A named tuple (like :class:`Message`, for the cost of building one per loop turn) whose
    truth is whether there is anything to do, not its length.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    reads_dropped: tuple[int, ...] = ()
    soft_state: SoftState | None = None
    snapshot_due: bool = False
    # the log position this batch's entries end at, so advance() knows what became durable
    last_index: int = 0
    last_term: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.hard_state
            or self.entries
            or self.snapshot
            or self.committed
            or self.messages
            or self.messages_after_persist
            or self.read_states
            or self.reads_dropped
            or self.soft_state
            or self.snapshot_due
        )
