"""The simulator's nemesis: it injects the scheduled faults and plays the operator who
replaces a node that lost its storage. Methods of :class:`~.simulator.Simulation`."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import ProposalRefusedError
from ..raft import MembershipChange, MembershipOp
from .sim_checks import SafetyChecker, _name
from .sim_hosts import SimHost, SimStorage
from .sim_schedule import Fault


class Nemesis:
    """Fault injection over the simulation's state (declared here, owned by Simulation)."""

    hosts: list[SimHost]
    checker: SafetyChecker
    now: int
    _faulty: bool
    _blocked: set[tuple[int, int]]
    _operator: deque[MembershipChange]
    _operator_wait: tuple[int, int] | None
    _trace: list[str]
    _net: random.Random
    _client: random.Random

    def _push(self, t: int, kind: str, slot: int = -1, payload: Any = None, gen: int = 0) -> None:
        raise NotImplementedError

    def _note(self, text: str) -> None:
        raise NotImplementedError

    def _leaders(self) -> list[SimHost]:
        raise NotImplementedError

    def _new_id(self) -> int:
        raise NotImplementedError

    def _start(self, host: SimHost) -> None:
        raise NotImplementedError

    def _crash(self, host: SimHost, torn: bool) -> None:
        raise NotImplementedError

    def _pump(self, host: SimHost) -> None:
        raise NotImplementedError

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
        if f.kind == "crash-all":
            # a power cut: every node loses what it had not synced, then each comes back
            for host in self.hosts:
                self._crash(host, torn=True)
                back = self._net.randrange(1, max(f.duration_ms, 2))
                self._push(self.now + back, "restart", -1, host.slot)
        elif f.kind in ("crash", "crash-torn"):
            host = self.hosts[f.slots[0]]
            self._crash(host, torn=f.kind == "crash-torn")
            self._push(self.now + f.duration_ms, "restart", -1, host.slot)
            self._report_down(host, lambda other: (host.slot, other.slot) not in self._blocked)
        elif f.kind == "rumor":
            # a false report (a peer that closed a connection and was slow to accept another):
            # every live member hears that its leader is down
            for leader in self._leaders()[:1]:
                self._report_down(leader, lambda other: True)
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
            host.storage = SimStorage()
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

    def _report_down(self, gone: SimHost, sees: Callable[[SimHost], bool]) -> None:
        """What the transport reports when ``gone``'s connections close and its port refuses:
        every other live member that ``sees`` it hears ``gone`` is down."""
        for other in self.hosts:
            if other is not gone and other.core is not None and sees(other):
                other.core.report_down(gone.member)
                self._pump(other)

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


def _change(c: MembershipChange) -> str:
    return f"{c.op.name.lower()} {_name(c.member)}"
