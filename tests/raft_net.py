"""A hand-driven network of Raft cores for named scenarios (pure: no sockets, no clocks).

Each node persists every Ready at once; messages wait in ``queue`` until :meth:`Net.deliver`
runs, so a test can drop, duplicate, reorder or hold any of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from tsconsensus.raft import (
    CoreConfig,
    Entry,
    HardState,
    InitialState,
    Message,
    MessageType,
    RaftCore,
    ReadState,
    Snapshot,
    bootstrap_state,
)
from tsconsensus.testing.sim_checks import SafetyChecker

CLUSTER = 0xC1


class Node:
    def __init__(self, core: RaftCore, initial: InitialState) -> None:
        self.core = core
        self.hard_state: HardState = initial.hard_state
        self.snapshot: Snapshot | None = initial.snapshot
        self.entries: list[Entry] = list(initial.entries)
        self.applied: list[Entry] = []
        self.reads: list[ReadState] = []
        self.dropped_reads: list[int] = []

    def initial_state(self) -> InitialState:
        after = self.snapshot.meta.index if self.snapshot else 0
        return InitialState(
            self.hard_state, self.snapshot, tuple(e for e in self.entries if e.index > after)
        )


class Net:
    """Cores with ids 1..n (plus any added later), bootstrapped as one cluster."""

    def __init__(
        self,
        n: int = 3,
        *,
        learners: int = 0,
        seed: int = 0,
        core_class: Callable[..., RaftCore] = RaftCore,
        checker: SafetyChecker | None = None,
        **overrides: object,
    ) -> None:
        self.checker = checker
        self.overrides = {"election_ticks_min": 10, "election_ticks_max": 20, **overrides}
        self.core_class = core_class
        self.seed = seed
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.sent: list[Message] = []
        voters = {i: f"n{i}" for i in range(1, n + 1)}
        initial = bootstrap_state(voters)
        for i in voters:
            self._add(i, initial)
        for j in range(n + 1, n + 1 + learners):
            self._add(j, InitialState())

    def config(self, member: int) -> CoreConfig:
        return CoreConfig(id=member, cluster_id=CLUSTER, **self.overrides)  # type: ignore[arg-type]

    def _add(self, member: int, initial: InitialState) -> Node:
        core = self.core_class(self.config(member), initial, random.Random(f"{self.seed}/{member}"))
        node = Node(core, initial)
        self.nodes[member] = node
        return node

    def add_empty(self, member: int) -> Node:
        """A new node with empty storage (not a member until the leader adds it)."""
        return self._add(member, InitialState())

    def core(self, member: int) -> RaftCore:
        return self.nodes[member].core

    # -- driving ------------------------------------------------------------------------------

    def process(self, member: int) -> None:
        """Persist and act on one node's Ready (immediately durable)."""
        node = self.nodes[member]
        rd = node.core.ready()
        if not rd:
            return
        self.queue.extend(rd.messages)
        if self.checker is not None:
            had = {e.index: e.term for e in node.entries}
            self.checker.written(member, rd.entries, had.get)
            for e in rd.committed:
                self.checker.applied(member, e, e.data, node.core.term)
        if rd.snapshot is not None:
            node.snapshot, node.entries = rd.snapshot, []
        if rd.entries:
            first = rd.entries[0].index
            node.entries = [e for e in node.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            node.hard_state = rd.hard_state
        self.queue.extend(rd.messages_after_persist)
        node.applied.extend(rd.committed)
        node.reads.extend(rd.read_states)
        node.dropped_reads.extend(rd.reads_dropped)
        node.core.advance(rd)

    def settle(self, max_rounds: int = 200, hold: Callable[[Message], bool] | None = None) -> None:
        """Process and deliver until nothing moves. ``hold(m)`` True keeps ``m`` queued."""
        for _ in range(max_rounds):
            for member in list(self.nodes):
                if member not in self.down:
                    self.process(member)
            moving = [m for m in self.queue if not (hold and hold(m))]
            held = [m for m in self.queue if hold and hold(m)]
            self.queue = held
            if not moving:
                return
            for m in moving:
                self.deliver_one(m)
        raise AssertionError("the network did not settle")

    def deliver_one(self, m: Message) -> None:
        self.sent.append(m)
        if m.to in self.down or (m.frm, m.to) in self.blocked or m.to not in self.nodes:
            return
        self.nodes[m.to].core.step(m)

    def tick(self, *members: int, times: int = 1) -> None:
        for _ in range(times):
            for member in members or tuple(self.nodes):
                if member not in self.down:
                    self.nodes[member].core.tick()
            self.settle()

    def elect(self, member: int) -> None:
        """Make ``member`` campaign now (as after TimeoutNow) and settle."""
        core = self.core(member)
        other = next(i for i in self.nodes if i != member)
        core.step(Message(MessageType.TIMEOUT_NOW, to=member, frm=other, term=core.term))
        self.settle()
        assert core.is_leader, f"node {member} did not win: {core.role}"

    def propose(self, member: int, data: bytes) -> tuple[int, int]:
        at = self.core(member).propose(data)
        self.settle()
        return at

    def isolate(self, member: int) -> None:
        for other in self.nodes:
            if other != member:
                self.blocked |= {(member, other), (other, member)}

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, member: int) -> None:
        self.down.add(member)

    def restart(self, member: int) -> None:
        node = self.nodes[member]
        node.core = self.core_class(
            self.config(member), node.initial_state(), random.Random(f"restart/{member}")
        )
        node.applied = []
        self.down.discard(member)

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if i not in self.down and n.core.is_leader]


def entry_data(node: Node) -> list[bytes]:
    """What a node applied, normal entries only."""
    return [e.data for e in node.applied if e.kind == 0]


__all__ = ["CLUSTER", "Net", "Node", "entry_data", "replace"]
