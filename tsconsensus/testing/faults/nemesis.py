"""The nemesis: one fault at a time, on a schedule drawn from the run's seed, each undone in time.

Kinds (:data:`NEMESES`): ``kill`` (SIGKILL a random node, restart it), ``kill-leader``,
``kill-all`` (SIGKILL every node at once; with ``TSC_POWER_LOSS=1`` the storage then loses what
a power cut would), ``pause`` (SIGSTOP the leader or a random node, then SIGCONT),
``partition`` (nftables rules inside the run's namespace: the leader with a minority, a
minority/majority split, or a bridge node that sees both halves which do not see each other)
and ``membership`` (remove a node, wipe its state directory, start it again: it joins as a new
member).

The seed fixes the schedule: the order of kinds (every kind once, shuffled, then again), the
pauses between faults and how long each lasts; and which node, where the choice is random.
What a fault hits can still differ between runs with one seed (who leads at that moment is up
to the cluster).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .control import ClusterControl, wait_until

log = logging.getLogger("tsconsensus.testing.faults")

NEMESES: dict[str, str] = {
    "kill": "SIGKILL a random node, restart it",
    "kill-leader": "SIGKILL the leader, restart it",
    "kill-all": "SIGKILL every node at once, restart them (with --power-loss: a power cut)",
    "pause": "SIGSTOP the leader or a random node, then SIGCONT",
    "partition": "isolate the leader with a minority, split minority/majority, or a bridge",
    "membership": "remove a node, wipe its state directory, restart it as a new member",
}
DEFAULT_NEMESES = ("kill", "kill-leader", "pause", "partition")
PARTITION_SHAPES = ("isolate-leader", "split", "bridge")


@dataclass(frozen=True)
class NemesisSettings:
    """Seconds between faults (``quiet_s``) and how long each lasts (``hold_s``), both drawn
    uniformly from the ranges; ``recover_timeout_s`` bounds each wait for a node to be back."""

    quiet_s: tuple[float, float] = (1.0, 3.0)
    hold_s: tuple[float, float] = (1.0, 4.0)
    recover_timeout_s: float = 30.0


@dataclass(frozen=True)
class Event:
    """One thing the nemesis did, at ``at`` seconds of the run's clock."""

    at: float
    kind: str
    detail: str


def partition_links(
    shape: str, nodes: Sequence[int], leader: int | None, rng: random.Random
) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """The links to cut for a partition ``shape`` over ``nodes`` (at least 3): the cut pairs
    and the sides, for the record (a bridge is a side of its own, listed last).

    - ``isolate-leader``: the leader (a random node if none is known) and ``(n-1)//2 - 1``
      others on one side, the majority on the other;
    - ``split``: a random minority of ``(n-1)//2`` nodes against the rest;
    - ``bridge``: one node keeps both halves of the others, which lose each other.
    """
    if len(nodes) < 3:
        raise ValueError("a partition needs at least 3 nodes")
    order = list(nodes)
    rng.shuffle(order)
    minority = (len(order) - 1) // 2
    if shape == "isolate-leader":
        first = leader if leader is not None and leader in order else order[0]
        others = [i for i in order if i != first]
        side_a = [first, *others[: minority - 1]]
        side_b = others[minority - 1 :]
        sides = [sorted(side_a), sorted(side_b)]
    elif shape == "split":
        side_a, side_b = order[:minority], order[minority:]
        sides = [sorted(side_a), sorted(side_b)]
    elif shape == "bridge":
        bridge, rest = order[0], order[1:]
        half = len(rest) // 2
        side_a, side_b = rest[:half], rest[half:]
        sides = [sorted(side_a), sorted(side_b), [bridge]]
    else:
        raise ValueError(f"unknown partition shape {shape!r}")
    return [(a, b) for a in side_a for b in side_b], sides


class Nemesis(threading.Thread):
    """Injects faults of ``kinds`` until ``stop`` is set, each undone before the next; the
    one in progress when ``stop`` is set is undone at once. Faults, counts and anything that
    went wrong on the way (a node that exited by itself, one that did not come back) are
    recorded in ``events``, ``counts`` and ``problems``."""

    def __init__(
        self,
        control: ClusterControl,
        kinds: Sequence[str],
        seed: int,
        stop: threading.Event,
        clock: Callable[[], float],
        settings: NemesisSettings | None = None,
    ) -> None:
        super().__init__(name="faults-nemesis", daemon=True)
        unknown = set(kinds) - set(NEMESES)
        if unknown or not kinds:
            raise ValueError(f"unknown or no nemesis kinds: {sorted(unknown)}")
        self.control = control
        self.kinds = list(kinds)
        # two generators: the schedule stays the same whatever the node choices consumed
        self.schedule = random.Random(f"{seed}/schedule")
        self.rng = random.Random(f"{seed}/nemesis")
        self._bag: list[str] = []
        self.stop = stop
        self.clock = clock
        self.settings = settings or NemesisSettings()
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()
        self.shapes: Counter[str] = Counter()
        self.problems: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.wait(self.schedule.uniform(*self.settings.quiet_s)):
                self.check_exited()
                kind = self.next_kind()
                self.counts[kind] += 1
                getattr(self, "_" + kind.replace("-", "_"))()
        except Exception as exc:
            log.exception("the nemesis failed")
            self.problems.append(f"the nemesis failed: {exc!r}")
        finally:
            self.control.heal_network()

    def next_kind(self) -> str:
        """Every kind once in a shuffled order, then again: a short run sees each of them."""
        if not self._bag:
            self._bag = list(self.kinds)
            self.schedule.shuffle(self._bag)
        return self._bag.pop()

    def event(self, kind: str, detail: str) -> None:
        at = self.clock()
        self.events.append(Event(at, kind, detail))
        log.info("[%7.2fs] %s: %s", at, kind, detail)

    def _hold(self) -> None:
        self.stop.wait(self.schedule.uniform(*self.settings.hold_s))

    def _names(self, nodes: Sequence[int]) -> str:
        return " ".join(self.control.name(i) for i in nodes)

    def check_exited(self) -> None:
        """A node that should run but exited by itself is a finding: record it, restart it."""
        for i in self.control.exited():
            tail = self.control.log_tail(i)
            self.problem(f"{self.control.name(i)} exited by itself; its log ends:\n{tail}")
            self.control.kill(i)  # reaps it and marks it down
            self.control.start(i)

    def problem(self, text: str) -> None:
        log.warning("%s", text)
        if len(self.problems) < 20:
            self.problems.append(text)

    def _back(self, nodes: Sequence[int]) -> None:
        late = self.control.wait_answering(nodes, self.settings.recover_timeout_s)
        if late:
            self.problem(
                f"{self._names(late)} did not answer within "
                f"{self.settings.recover_timeout_s:g}s of a restart"
            )

    def _pick(self, leader_first: bool) -> tuple[int, str]:
        leader = self.control.leader() if leader_first else None
        if leader is not None:
            return leader, "leader"
        live = self.control.live()
        return self.rng.choice(live), "random" if not leader_first else "no leader known: random"

    # -- the kinds --------------------------------------------------------------------------

    def _kill(self, leader: bool = False) -> None:
        victim, why = self._pick(leader)
        self.control.kill(victim)
        self.event(
            "kill-leader" if leader else "kill", f"SIGKILL {self.control.name(victim)} ({why})"
        )
        try:
            self._hold()
        finally:
            self.control.start(victim)
            self.event("restart", self.control.name(victim))
        self._back([victim])

    def _kill_leader(self) -> None:
        self._kill(leader=True)

    def _kill_all(self) -> None:
        victims = self.control.kill_all()
        self.event("kill-all", f"SIGKILL {self._names(victims)} at once")
        try:
            self._hold()
        finally:
            for i in self.control.down():
                self.control.start(i)
            self.event("restart", self._names(victims))
        self._back(victims)

    def _pause(self) -> None:
        victim, why = self._pick(self.rng.random() < 0.5)
        self.control.pause(victim)
        self.event("pause", f"SIGSTOP {self.control.name(victim)} ({why})")
        try:
            self._hold()
        finally:
            self.control.resume(victim)
            self.event("resume", f"SIGCONT {self.control.name(victim)}")

    def _partition(self) -> None:
        if not self.control.can_partition:
            self.counts["partition"] -= 1
            return
        shape = self.rng.choice(PARTITION_SHAPES)
        self.shapes[shape] += 1
        leader = self.control.leader() if shape == "isolate-leader" else None
        links, sides = partition_links(shape, range(self.control.size), leader, self.rng)
        self.control.cut(links)
        shown = " | ".join(self._names(side) for side in sides)
        self.event("partition", f"{shape}: {shown}")
        try:
            self._hold()
        finally:
            self.control.heal_network()
            self.event("heal", "network whole again")

    def _membership(self) -> None:
        leader = self.control.leader()
        live = self.control.live()
        candidates = [i for i in live if i != leader] or live
        victim = self.rng.choice(candidates)
        name = self.control.name(victim)
        timeout = self.settings.recover_timeout_s
        self.control.kill(victim)
        self.event("membership", f"SIGKILL {name}, then remove it")
        try:
            if not self.control.remove_member(victim, timeout):
                self.problem(f"{name} could not be removed within {timeout:g}s")
                return  # restarted with its state intact: it is still a member
            self.control.wipe(victim)
            self.event("membership", f"{name} removed and its state wiped")
            self._hold()
        finally:
            self.control.start(victim)
        if wait_until(lambda: self.control.is_member(victim), timeout, interval=0.3):
            self.control.rejoined(victim)
            self.event("membership", f"{name} joined again as a new member")
        else:
            self.problem(f"{name} did not join again within {timeout:g}s of a restart")
