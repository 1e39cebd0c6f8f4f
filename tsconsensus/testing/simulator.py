"""A deterministic simulator of a Raft cluster built from :class:`~tsconsensus.raft.RaftCore`.

N cores talk over a simulated network that delays, drops, duplicates, reorders and partitions
messages; nodes crash (losing whatever they had not persisted, sometimes keeping a torn prefix
of an interrupted write), restart from what they persisted, pause, or lose their storage and
come back as new members. After every event :class:`~.sim_checks.SafetyChecker` checks Raft's
safety properties; once the faults stop, a leader must commit a new entry on every live voter
within a bounded time (liveness).

Everything is a function of the seed and the fault schedule: the same pair replays the same
run, event for event. A failing run can be :func:`shrink`-ed to the fewest faults that still
fail, and :meth:`SimResult.report` prints that schedule and the run's trace.

    result = Simulation(seed=7).run()
    assert result.ok, result.report()
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ProposalRefusedError
from ..raft import InitialState, RaftCore, bootstrap_state
from ..raft.config import CoreConfig
from ..raft.messages import (
    Entry,
    HardState,
    MembershipChange,
    MembershipOp,
    Message,
    ReadState,
    Ready,
    Role,
    Snapshot,
)
from .sim_apps import Application, HashChain
from .sim_checks import SafetyChecker, Violation, _name

FAULT_KINDS = (
    "crash",
    "crash-torn",
    "pause",
    "partition",
    "isolate-leader",
    "bridge",
    "wipe",
    "transfer",
)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. ``slots`` are host positions (0..nodes-1); what they mean depends
    on ``kind``: the host to crash/restart/pause/wipe, one side of a partition, the bridge."""

    at_ms: int
    kind: str
    slots: tuple[int, ...] = ()
    duration_ms: int = 0

    def __str__(self) -> str:
        where = ",".join(f"n{s}" for s in self.slots)
        lasting = f" for {self.duration_ms}ms" if self.duration_ms else ""
        return f"t={self.at_ms:05d} {self.kind} {where}{lasting}".rstrip()


@dataclass(frozen=True)
class SimOptions:
    """How a simulated run looks. Times are simulated milliseconds."""

    nodes: int = 3
    fault_ms: int = 1200
    liveness_ms: int = 4000
    tick_ms: int = 10
    latency_ms: tuple[int, int] = (1, 6)
    drop: float = 0.03
    duplicate: float = 0.02
    persist_ms: tuple[int, int] = (0, 3)
    propose_every_ms: int = 6
    read_every_ms: int = 25
    faults: int = 6
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    core: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`CoreConfig` fields (election ticks, batch sizes...)."""

    def core_config(self, member: int, cluster_id: int) -> CoreConfig:
        base: dict[str, Any] = dict(
            election_ticks_min=5,
            election_ticks_max=10,
            heartbeat_ticks=1,
            tick_ms=self.tick_ms,
            max_entry_bytes=1024,
            max_batch_bytes=200,
            max_inflight=4,
            max_uncommitted_bytes=4096,
            snapshot_chunk_bytes=16,
            snapshot_chunks_inflight=2,
            snapshot_entries=40,
            compaction_keep=5,
        )
        base.update(self.core)
        return CoreConfig(id=member, cluster_id=cluster_id, **base)


def random_schedule(rng: random.Random, options: SimOptions) -> list[Fault]:
    """A fault schedule drawn from ``rng``: ``options.faults`` faults of the allowed kinds."""
    faults = []
    n = options.nodes
    for _ in range(options.faults if options.fault_kinds else 0):
        at = rng.randrange(0, options.fault_ms)
        kind = rng.choice(options.fault_kinds)
        duration = rng.randrange(20, 400)
        if kind in ("crash", "crash-torn", "pause", "wipe"):
            faults.append(Fault(at, kind, (rng.randrange(n),), duration))
        elif kind == "partition":
            side = tuple(sorted(rng.sample(range(n), rng.randrange(1, n))))
            faults.append(Fault(at, kind, side, duration))
        elif kind == "bridge" and n >= 3:
            order = rng.sample(range(n), n)
            faults.append(Fault(at, kind, tuple(order), duration))
        elif kind in ("isolate-leader", "transfer"):
            faults.append(Fault(at, kind, (), duration))
    faults.sort(key=lambda f: f.at_ms)
    return faults


class _Storage:
    """What one host has durably written."""

    def __init__(self, initial: InitialState | None = None) -> None:
        state = initial or InitialState()
        self.hard_state: HardState = state.hard_state
        self.snapshot: Snapshot | None = state.snapshot
        self.entries: list[Entry] = list(state.entries)

    def write(self, rd: Ready, torn_at: int | None = None) -> None:
        if torn_at is not None:
            if rd.snapshot is None and rd.entries:
                self._append(rd.entries[:torn_at])
            return
        if rd.snapshot is not None:
            self.snapshot, self.entries = rd.snapshot, []
        self._append(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def _append(self, entries: tuple[Entry, ...]) -> None:
        if entries:
            first = entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(entries)

    def term(self, index: int) -> int | None:
        for e in reversed(self.entries):
            if e.index == index:
                return e.term
            if e.index < index:
                break
        return None

    def snapshot_taken(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]

    def initial_state(self) -> InitialState:
        after = self.snapshot.meta.index if self.snapshot is not None else 0
        return InitialState(
            self.hard_state, self.snapshot, tuple(e for e in self.entries if e.index > after)
        )


class _Host:
    def __init__(self, slot: int, member: int, storage: _Storage) -> None:
        self.slot = slot
        self.member = member
        self.storage = storage
        self.core: RaftCore | None = None
        self.app: Application | None = None
        self.generation = 0
        self.pending: Ready | None = None
        self.paused_until = 0
        self.reads: list[tuple[ReadState, int]] = []  # (read state, committed when asked)
        self.asked: dict[int, int] = {}  # read context -> committed when asked


@dataclass
class SimResult:
    seed: int
    options: SimOptions
    schedule: list[Fault]
    violation: Violation | None
    trace: list[str]
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self) -> str:
        lines = [f"seed {self.seed}: " + ("ok" if self.ok else f"VIOLATION {self.violation}")]
        lines.append(f"options: {self.options}")
        lines.append("schedule:" + ("" if self.schedule else " (no faults)"))
        lines.extend(f"  {f}" for f in self.schedule)
        lines.append("stats: " + ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())))
        lines.append("trace:")
        lines.extend(f"  {t}" for t in self.trace)
        return "\n".join(lines)


CoreFactory = Callable[[CoreConfig, InitialState, random.Random], RaftCore]
PayloadSource = Callable[[random.Random, int], bytes]


def _default_payload(rng: random.Random, n: int) -> bytes:
    return b"c%d:" % n + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))


class Simulation:
    """One seeded run. ``core_factory`` builds each node's core (tests plant bugs through
    it), ``app_factory`` each node's replica, ``payload`` the data of client proposals."""

    def __init__(
        self,
        seed: int,
        options: SimOptions | None = None,
        schedule: list[Fault] | None = None,
        *,
        core_factory: CoreFactory = RaftCore,
        app_factory: Callable[[], Application] = HashChain,
        payload: PayloadSource = _default_payload,
    ) -> None:
        self.seed = seed
        self.options = options or SimOptions()
        self.schedule = (
            list(schedule)
            if schedule is not None
            else random_schedule(random.Random(f"{seed}/faults"), self.options)
        )
        self._core_factory = core_factory
        self._app_factory = app_factory
        self._payload = payload
        self._net = random.Random(f"{seed}/net")
        self._client = random.Random(f"{seed}/client")
        self._ids = random.Random(f"{seed}/ids")
        self.cluster_id = self._ids.getrandbits(63) + 1
        self.checker = SafetyChecker()
        self._queue: list[tuple[int, int, str, int, Any, int]] = []
        self._seq = 0
        self.now = 0
        self._blocked: set[tuple[int, int]] = set()
        self._faulty = True
        self._operator: deque[MembershipChange] = deque()
        self._operator_wait: tuple[int, int] | None = None
        self._marker: tuple[int, int] | None = None
        self._trace: list[str] = []
        self._recent: deque[str] = deque(maxlen=40)
        self.stats: dict[str, int] = dict.fromkeys(
            ("events", "elections", "proposals", "refused", "reads", "snapshots", "applied"), 0
        )
        self.stats["liveness_ms"] = -1
        members = {self._new_id(): f"n{s}" for s in range(self.options.nodes)}
        initial = bootstrap_state(members)
        self.hosts = [_Host(s, m, _Storage(initial)) for s, m in enumerate(members)]

    # -- plumbing ---------------------------------------------------------------------------

    def _new_id(self) -> int:
        return self._ids.getrandbits(64) or 1

    def _push(self, t: int, kind: str, slot: int = -1, payload: Any = None, gen: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, slot, payload, gen))

    def _note(self, text: str) -> None:
        self._trace.append(f"t={self.now:05d} {text}")

    def _host_of(self, member: int) -> _Host | None:
        for h in self.hosts:
            if h.member == member:
                return h
        return None

    def _alive(self) -> list[_Host]:
        return [h for h in self.hosts if h.core is not None]

    def _leaders(self) -> list[_Host]:
        return [h for h in self._alive() if h.core is not None and h.core.is_leader]

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> SimResult:
        """Run the schedule, then the liveness phase; never raises on a violation."""
        violation = None
        try:
            self._run()
        except Violation as v:
            violation = v
            self._note(f"VIOLATION {v}")
            self._trace.append("last messages before it:")
            self._trace.extend(f"  {r}" for r in self._recent)
        return SimResult(
            self.seed, self.options, self.schedule, violation, self._trace, dict(self.stats)
        )

    def _run(self) -> None:
        for h in self.hosts:
            self._start(h)
        for f in self.schedule:
            self._push(f.at_ms, "fault", -1, f)
        self._push(self.options.fault_ms, "calm")
        self._push(1, "propose")
        self._push(1, "read")
        deadline = self.options.fault_ms + self.options.liveness_ms
        events = 0
        while self._queue:
            t, _, kind, slot, payload, gen = heapq.heappop(self._queue)
            if t > deadline:
                break
            self.now = t
            events += 1
            if kind == "done":
                self.stats["events"] = events
                self._final_checks()
                return
            self._dispatch(kind, slot, payload, gen)
            if events % 256 == 0:
                self.checker.logs_match([h.core for h in self._alive() if h.core is not None])
        self.stats["events"] = events
        raise Violation(
            "liveness",
            f"no new entry committed on every live voter within {self.options.liveness_ms}ms "
            f"after the faults stopped (leaders: {[_name(h.member) for h in self._leaders()]})",
        )

    def _dispatch(self, kind: str, slot: int, payload: Any, gen: int) -> None:
        if slot >= 0:
            host = self.hosts[slot]
            if host.core is None or host.generation != gen:
                return
            if host.paused_until > self.now:
                self._push(host.paused_until, kind, slot, payload, gen)
                return
        if kind == "tick":
            self._on_tick(self.hosts[slot])
        elif kind == "deliver":
            self._on_deliver(self.hosts[slot], payload)
        elif kind == "persisted":
            self._finish(self.hosts[slot])
        elif kind == "fault":
            self._on_fault(payload)
        elif kind == "heal":
            self._blocked.clear()
            self._note("heal")
        elif kind == "restart":
            host = self.hosts[payload]
            if host.core is None:
                self._start(host)
        elif kind == "propose":
            self._on_propose()
        elif kind == "read":
            self._on_read()
        elif kind == "operator":
            self._on_operator()
        elif kind == "calm":
            self._calm()
        elif kind == "probe":
            self._on_probe()

    # -- hosts ------------------------------------------------------------------------------

    def _start(self, host: _Host) -> None:
        config = self.options.core_config(host.member, self.cluster_id)
        rng = random.Random(f"{self.seed}/core/{host.member}/{host.generation}")
        core = self._core_factory(config, host.storage.initial_state(), rng)
        host.core, host.app = core, self._app_factory()
        host.reads, host.asked, host.pending = [], {}, None
        snap = host.storage.snapshot
        if snap is not None:
            host.app.restore(bytes(snap.data), snap.meta.index)
        self._note(f"n{host.slot} starts as {_name(host.member)}")
        jitter = self._net.randrange(self.options.tick_ms)
        self._push(self.now + jitter + 1, "tick", host.slot, None, host.generation)
        self._pump(host)

    def _crash(self, host: _Host, torn: bool) -> None:
        if host.core is None:
            return
        if host.pending is not None and torn and host.pending.entries:
            cut = self._net.randrange(len(host.pending.entries))
            host.storage.write(host.pending, torn_at=cut)
        host.core = host.app = host.pending = None
        host.generation += 1
        host.paused_until = 0

    def _on_tick(self, host: _Host) -> None:
        assert host.core is not None
        host.core.tick()
        self._push(self.now + self.options.tick_ms, "tick", host.slot, None, host.generation)
        self._pump(host)

    def _on_deliver(self, host: _Host, m: Message) -> None:
        assert host.core is not None
        frm = self._host_of(m.frm)
        if frm is not None and (frm.slot, host.slot) in self._blocked:
            return
        self._recent.append(f"t={self.now:05d} {_describe(m)}")
        host.core.step(m)
        self._pump(host)

    def _send(self, frm: _Host, msgs: Iterable[Message]) -> None:
        lo, hi = self.options.latency_ms
        for m in msgs:
            to = self._host_of(m.to)
            if to is None:
                continue
            if self._faulty and self._net.random() < self.options.drop:
                continue
            copies = 2 if self._faulty and self._net.random() < self.options.duplicate else 1
            for _ in range(copies):
                self._push(
                    self.now + self._net.randint(lo, hi), "deliver", to.slot, m, to.generation
                )

    def _pump(self, host: _Host) -> None:
        """Take the core's output: a new Ready if none is being persisted, else messages."""
        core = host.core
        assert core is not None
        self._watch(host)
        if host.pending is not None:
            self._send(host, core.take_messages())
            return
        rd = core.ready()
        if not rd:
            return
        self.checker.written(host.member, rd.entries, host.storage.term)
        self._send(host, rd.messages)
        host.pending = rd
        lo, hi = self.options.persist_ms
        delay = self._net.randint(lo, hi)
        if delay == 0:
            self._finish(host)
        else:
            self._push(self.now + delay, "persisted", host.slot, None, host.generation)

    def _finish(self, host: _Host) -> None:
        rd, core, app = host.pending, host.core, host.app
        assert rd is not None and core is not None and app is not None
        host.pending = None
        host.storage.write(rd)
        self._send(host, rd.messages_after_persist)
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            app.restore(bytes(rd.snapshot.data), meta.index)
            self.checker.snapshot_seen(
                host.member, meta.index, bytes(rd.snapshot.data), "installed"
            )
            self.stats["snapshots"] += 1
            self._note(f"n{host.slot} installs snapshot at {meta.index}")
        for e in rd.committed:
            self.checker.applied(host.member, e, app.apply(e))
            self.stats["applied"] += 1
        for rs in rd.read_states:
            host.reads.append((rs, host.asked.pop(rs.context, 0)))
        for ctx in rd.reads_dropped:
            host.asked.pop(ctx, None)
        self._serve_reads(host)
        if rd.snapshot_due and app.applied > 0:
            data = app.snapshot()
            self.checker.snapshot_seen(host.member, app.applied, data, "took")
            snap = Snapshot(core.snapshot_meta(app.applied), data)
            host.storage.snapshot_taken(snap)
            core.snapshot_taken(snap)
        core.advance(rd)
        self._pump(host)

    def _serve_reads(self, host: _Host) -> None:
        assert host.app is not None
        waiting = []
        for rs, asked in host.reads:
            if host.app.applied >= rs.index:
                self.checker.read_served(host.member, asked, host.app.applied)
                self.stats["reads"] += 1
            else:
                waiting.append((rs, asked))
        host.reads = waiting

    def _watch(self, host: _Host) -> None:
        core = host.core
        assert core is not None
        if core.role is Role.LEADER and self.checker.leader_seen(core):
            self.stats["elections"] += 1
            self._note(f"n{host.slot} ({_name(host.member)}) leads term {core.term}")

    # -- clients and operator ---------------------------------------------------------------

    def _on_propose(self) -> None:
        self._push(self.now + self._client.randint(1, 2 * self.options.propose_every_ms), "propose")
        alive = self._alive()
        if not alive:
            return
        host = self._client.choice(alive)
        core = host.core
        assert core is not None
        if not core.is_leader:
            return
        n = self.stats["proposals"]
        try:
            core.propose(self._payload(self._client, n))
            self.stats["proposals"] += 1
        except ProposalRefusedError:
            self.stats["refused"] += 1
        self._pump(host)

    def _on_read(self) -> None:
        self._push(self.now + self._client.randint(1, 2 * self.options.read_every_ms), "read")
        alive = self._alive()
        if not alive:
            return
        host = self._client.choice(alive)
        assert host.core is not None
        ctx = self._client.getrandbits(62) + 1
        host.asked[ctx] = self.checker.max_committed
        host.core.read_index(ctx)
        self._pump(host)

    def _on_operator(self) -> None:
        """Carry out membership changes one at a time, retrying until each commits."""
        if not self._operator:
            return
        self._push(self.now + 20, "operator")
        if self._operator_wait is not None:
            index, term = self._operator_wait
            got = self.checker.committed.get(index)
            if got is None:
                return
            self._operator_wait = None
            if got == term:
                self._note(f"operator: {_change(self._operator[0])} committed at {index}")
                self._operator.popleft()
            return
        change = self._operator[0]
        for host in self._leaders():
            assert host.core is not None
            try:
                self._operator_wait = host.core.propose_membership(change)
            except ProposalRefusedError as exc:
                if exc.reason == "invalid-membership":
                    self._note(f"operator: {_change(change)} not needed: {exc}")
                    self._operator.popleft()
                continue
            self._pump(host)
            return

    # -- faults -----------------------------------------------------------------------------

    def _on_fault(self, f: Fault) -> None:
        if not self._faulty:
            return
        self._trace.append(str(f))
        n = len(self.hosts)
        if f.kind in ("crash", "crash-torn"):
            host = self.hosts[f.slots[0]]
            self._crash(host, torn=f.kind == "crash-torn")
            self._push(self.now + f.duration_ms, "restart", -1, host.slot)
        elif f.kind == "pause":
            host = self.hosts[f.slots[0]]
            host.paused_until = max(host.paused_until, self.now + f.duration_ms)
        elif f.kind in ("partition", "isolate-leader"):
            side = set(f.slots)
            if f.kind == "isolate-leader":
                side = {h.slot for h in self._leaders()[:1]}
            for a in range(n):
                for b in range(n):
                    if (a in side) != (b in side):
                        self._blocked.add((a, b))
            self._push(self.now + f.duration_ms, "heal")
        elif f.kind == "bridge":
            bridge, rest = f.slots[0], f.slots[1:]
            left, right = set(rest[: len(rest) // 2]), set(rest[len(rest) // 2 :])
            for a in left:
                for b in right:
                    self._blocked.update({(a, b), (b, a)})
            self._push(self.now + f.duration_ms, "heal")
            self._note(f"  n{bridge} bridges {sorted(left)} and {sorted(right)}")
        elif f.kind == "wipe":
            host = self.hosts[f.slots[0]]
            if self._operator or not self._full_membership():
                # losing a second member's storage before the first is replaced loses the
                # majority for good: no Raft survives that, so the schedule does not ask it
                self._trace.append("  (skipped: the previous replacement is not finished)")
                return
            old = host.member
            self._crash(host, torn=False)
            host.member = self._new_id()
            host.storage = _Storage()
            self._operator.append(MembershipChange(MembershipOp.REMOVE, old))
            self._operator.append(
                MembershipChange(MembershipOp.ADD_LEARNER, host.member, f"n{host.slot}")
            )
            self._push(self.now + f.duration_ms, "restart", -1, host.slot)
            self._push(self.now + 1, "operator")
        elif f.kind == "transfer":
            for host in self._leaders():
                assert host.core is not None
                voters = sorted(host.core.membership.voters - {host.member})
                if voters:
                    target = voters[self._client.randrange(len(voters))]
                    try:
                        host.core.transfer_leadership(target)
                    except ProposalRefusedError:
                        pass
                    self._pump(host)

    def _full_membership(self) -> bool:
        leaders = self._leaders()
        if len(leaders) != 1 or leaders[0].core is None:
            return False
        core = leaders[0].core
        return len(core.membership_at(core.commit).voters) == len(self.hosts)

    def _calm(self) -> None:
        """The faults stop: heal the network, restart everyone; liveness is measured now."""
        self._note("faults stop")
        self._faulty = False
        self._blocked.clear()
        for host in self.hosts:
            host.paused_until = 0
            if host.core is None:
                self._start(host)
        self._push(self.now + 1, "probe")
        if self._operator:
            self._push(self.now + 1, "operator")

    def _on_probe(self) -> None:
        self._push(self.now + 5, "probe")
        if self._marker is not None:
            index, term = self._marker
            got = self.checker.committed.get(index)
            if got is not None and got != term:
                self._marker = None  # the marker was lost in a leader change: propose again
            elif got == term and self._applied_everywhere(index):
                self.stats["liveness_ms"] = self.now - self.options.fault_ms
                self._note(f"live: marker at {index} applied on every live voter")
                self._push(self.now, "done")
                return
        if self._marker is None:
            for host in self._leaders():
                assert host.core is not None
                if host.core.log.term(host.core.commit) != host.core.term:
                    continue
                try:
                    self._marker = host.core.propose(b"marker")
                except ProposalRefusedError:
                    continue
                self._pump(host)
                return

    def _applied_everywhere(self, index: int) -> bool:
        leaders = self._leaders()
        if len(leaders) != 1 or leaders[0].core is None:
            return False
        for member in leaders[0].core.membership.voters:
            host = self._host_of(member)
            if host is None or host.app is None or host.app.applied < index:
                return False
        return True

    def _final_checks(self) -> None:
        cores = [h.core for h in self._alive() if h.core is not None]
        self.checker.logs_match(cores)


def _change(c: MembershipChange) -> str:
    return f"{c.op.name.lower()} {_name(c.member)}"


def _describe(m: Message) -> str:
    extra = ""
    if m.entries:
        extra = f" entries {m.entries[0].index}..{m.entries[-1].index}"
    if m.reject:
        extra += " REJECT"
    return (
        f"{m.type.name} {_name(m.frm)}->{_name(m.to)} term {m.term} index {m.index} "
        f"commit {m.commit}{extra}"
    )


def run_seeds(
    seeds: Iterable[int], options: SimOptions | None = None, **kwargs: Any
) -> SimResult | None:
    """Run each seed; the first failing result, or None if all pass."""
    for seed in seeds:
        result = Simulation(seed, options, **kwargs).run()
        if not result.ok:
            return result
    return None


def shrink(result: SimResult, *, max_runs: int = 200, **kwargs: Any) -> SimResult:
    """The failing run with as few faults as still fail (greedy, one fault at a time), each
    fault also shortened where that still fails. ``kwargs`` as for :class:`Simulation`."""
    best, runs = result, 0
    changed = True
    while changed and runs < max_runs:
        changed = False
        for i in range(len(best.schedule)):
            candidates = [best.schedule[:i] + best.schedule[i + 1 :]]
            f = best.schedule[i]
            if f.duration_ms > 20:
                shorter = replace(f, duration_ms=f.duration_ms // 2)
                candidates.append([*best.schedule[:i], shorter, *best.schedule[i + 1 :]])
            for schedule in candidates:
                runs += 1
                trial = Simulation(best.seed, best.options, schedule, **kwargs).run()
                if not trial.ok:
                    best, changed = trial, True
                    break
            if changed or runs >= max_runs:
                break
    return best
