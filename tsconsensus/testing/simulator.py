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
from typing import Any

from ..errors import ProposalRefusedError
from ..raft import InitialState, RaftCore, bootstrap_state
from ..raft.config import CoreConfig
from ..raft.messages import (
    MembershipChange,
    Message,
    Role,
    Snapshot,
)
from .sim_apps import Application, HashChain
from .sim_checks import SafetyChecker, Violation, _name
from .sim_hosts import SimHost, SimStorage
from .sim_nemesis import Nemesis
from .sim_result import SimResult
from .sim_schedule import Fault, SimOptions, random_schedule

CoreFactory = Callable[[CoreConfig, InitialState, random.Random], RaftCore]
PayloadSource = Callable[[random.Random, int], bytes]


def _default_payload(rng: random.Random, n: int) -> bytes:
    return b"c%d:" % n + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))


class Simulation(Nemesis):
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
        self.hosts = [SimHost(s, m, SimStorage(initial)) for s, m in enumerate(members)]

    # -- plumbing ---------------------------------------------------------------------------

    def _new_id(self) -> int:
        return self._ids.getrandbits(64) or 1

    def _push(self, t: int, kind: str, slot: int = -1, payload: Any = None, gen: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, slot, payload, gen))

    def _note(self, text: str) -> None:
        self._trace.append(f"t={self.now:05d} {text}")

    def _host_of(self, member: int) -> SimHost | None:
        for h in self.hosts:
            if h.member == member:
                return h
        return None

    def _alive(self) -> list[SimHost]:
        return [h for h in self.hosts if h.core is not None]

    def _leaders(self) -> list[SimHost]:
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

    def _start(self, host: SimHost) -> None:
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

    def _crash(self, host: SimHost, torn: bool) -> None:
        if host.core is None:
            return
        if host.pending is not None and torn and host.pending.entries:
            cut = self._net.randrange(len(host.pending.entries))
            host.storage.write(host.pending, torn_at=cut)
        host.core = host.app = host.pending = None
        host.generation += 1
        host.paused_until = 0

    def _on_tick(self, host: SimHost) -> None:
        assert host.core is not None
        host.core.tick()
        self._push(self.now + self.options.tick_ms, "tick", host.slot, None, host.generation)
        self._pump(host)

    def _on_deliver(self, host: SimHost, m: Message) -> None:
        assert host.core is not None
        frm = self._host_of(m.frm)
        if frm is not None and (frm.slot, host.slot) in self._blocked:
            return
        self._recent.append(f"t={self.now:05d} {_describe(m)}")
        host.core.step(m)
        self._pump(host)

    def _send(self, frm: SimHost, msgs: Iterable[Message]) -> None:
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

    def _pump(self, host: SimHost) -> None:
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

    def _finish(self, host: SimHost) -> None:
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
            self.checker.applied(host.member, e, app.apply(e), core.term)
            self.stats["applied"] += 1
        for rs in rd.read_states:
            host.reads.append((rs, host.asked.pop(rs.context, 0)))
        for ctx in rd.reads_dropped:
            host.asked.pop(ctx, None)
        self._serve_reads(host)
        if rd.snapshot_due and app.applied > 0:
            data = app.snapshot()
            self.checker.snapshot_seen(host.member, app.applied, data, "took")
            try:
                snap = Snapshot(core.snapshot_meta(app.applied), data)
            except ValueError:
                snap = None  # a snapshot from the leader was installed meanwhile: it is newer
            if snap is not None:
                host.storage.snapshot_taken(snap)
                core.snapshot_taken(snap)
        core.advance(rd)
        self._pump(host)

    def _serve_reads(self, host: SimHost) -> None:
        assert host.app is not None
        waiting = []
        for rs, asked in host.reads:
            if host.app.applied >= rs.index:
                self.checker.read_served(host.member, asked, host.app.applied)
                self.stats["reads"] += 1
            else:
                waiting.append((rs, asked))
        host.reads = waiting

    def _watch(self, host: SimHost) -> None:
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
