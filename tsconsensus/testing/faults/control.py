"""What the nemesis and the runner do to a cluster: kill, pause, cut, remove, and undo it.

:class:`ClusterControl` wraps a :class:`~tsconsensus.testing.LocalCluster`: it remembers every
PID it started (to prove at the end that none is left), which nodes are down, paused or
removed, and it answers "who leads?" with short timeouts so that a paused node delays nobody.
Every wait has a deadline. :class:`Observer` polls the nodes' status to record the terms and
leaders the run went through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ...errors import TsconsensusError
from ..cluster import LocalCluster
from ..netns import RunNamespace

log = logging.getLogger("tsconsensus.testing.faults")


def process_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and is not a zombie, and its command line contains ``marker``
    (so a recycled PID of someone else's process does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return marker.encode() in cmdline


class ClusterControl:
    """Faults and their repair on one cluster; methods are safe to call from several threads.

    ``env`` goes to every node process started (``TSC_POWER_LOSS``, ``TSC_PLANTED_BUG``).
    ``namespace`` is where partitions are made; without one, :meth:`cut` raises.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        env: dict[str, str] | None = None,
        namespace: RunNamespace | None = None,
    ) -> None:
        self.cluster = cluster
        self.env = dict(env or {})
        self.namespace = namespace
        self.pids: list[int] = []
        self._lock = threading.RLock()
        self._down: set[int] = set()
        self._paused: set[int] = set()
        self._removed: set[int] = set()
        self._cut = False
        self._closed = False

    @property
    def size(self) -> int:
        return self.cluster.size

    def name(self, i: int) -> str:
        return self.cluster.hostname(i)

    # -- processes --------------------------------------------------------------------------

    def start(self, i: int) -> None:
        """Start node ``i`` (refused once :meth:`close` was called)."""
        with self._lock:
            if self._closed:
                raise TsconsensusError("the run is over: no node starts any more")
            self.pids.append(self.cluster.start_node(i, extra_env=self.env))
            self._down.discard(i)

    def start_all(self, timeout: float) -> None:
        """Start every node and wait until each answers ready and one leads."""
        self.cluster.write()
        for i in range(self.size):
            self.start(i)
        self.cluster.wait_ready(timeout)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` and reap it."""
        with self._lock:
            self.cluster.stop_node(i, kill=True)
            self._down.add(i)
            self._paused.discard(i)

    def kill_all(self) -> list[int]:
        """SIGKILL every running node at once (no node sees another die first); return them."""
        with self._lock:
            victims = [i for i in range(self.size) if self.cluster.running(i)]
            for i in victims:
                pid = self.cluster.pid(i)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for i in victims:
                self.cluster.stop_node(i, kill=True)  # reaps it
                self._down.add(i)
                self._paused.discard(i)
            return victims

    def pause(self, i: int) -> None:
        with self._lock:
            self.cluster.signal_node(i, signal.SIGSTOP)
            self._paused.add(i)

    def resume(self, i: int) -> None:
        with self._lock:
            if i in self._paused and self.cluster.running(i):
                self.cluster.signal_node(i, signal.SIGCONT)
            self._paused.discard(i)

    def live(self) -> list[int]:
        """Nodes that run and are not paused (whatever the network lets them reach)."""
        with self._lock:
            return [i for i in range(self.size) if i not in self._down and i not in self._paused]

    def down(self) -> list[int]:
        with self._lock:
            return sorted(self._down)

    def exited(self) -> list[int]:
        """Nodes that should run but whose process ended by itself."""
        with self._lock:
            return [i for i in self.live() if not self.cluster.running(i)]

    def log_tail(self, i: int, chars: int = 1500) -> str:
        try:
            return self.cluster.log_path(i).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- network ----------------------------------------------------------------------------

    @property
    def can_partition(self) -> bool:
        return self.namespace is not None

    def cut(self, links: Iterable[tuple[int, int]]) -> None:
        """Cut each link ``(a, b)`` both ways (replacing any earlier cut)."""
        if self.namespace is None:
            raise TsconsensusError("partitions need the run's network namespace")
        addresses = self.cluster.addresses
        pairs = []
        for a, b in links:
            pairs += [(addresses[a], addresses[b]), (addresses[b], addresses[a])]
        with self._lock:
            self.namespace.block(pairs)
            self._cut = True

    def heal_network(self) -> None:
        with self._lock:
            if self.namespace is not None and self._cut:
                self.namespace.heal()
            self._cut = False

    # -- asking nodes -----------------------------------------------------------------------

    def status(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """Node ``i``'s ``/v1/status``, or None if it is down, paused or does not answer."""
        if i not in self.live():
            return None
        try:
            with self.cluster.monitor(i, timeout=timeout) as monitor:
                return monitor.status()
        except TsconsensusError:
            return None

    def leader(self) -> int | None:
        """The live node that claims leadership in the highest term, if any."""
        best: tuple[int, int] | None = None
        for i in self.live():
            status = self.status(i)
            if status is not None and status.get("state") == "leader":
                term = int(status.get("term") or 0)
                if best is None or term > best[0]:
                    best = (term, i)
        return None if best is None else best[1]

    def wait_answering(self, nodes: Sequence[int], timeout: float) -> list[int]:
        """Wait until each of ``nodes`` answers its status; return those that did not in time."""
        deadline = time.monotonic() + timeout
        pending = set(nodes)
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if self.status(i) is None}
            if pending:
                time.sleep(0.1)
        return sorted(pending)

    def wait_ready(self, nodes: Sequence[int], timeout: float) -> list[int]:
        """Wait until each of ``nodes`` says it is ready (a leader known, everything it knows
        committed applied); return those that were not in time."""
        deadline = time.monotonic() + timeout
        pending = set(nodes)
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                try:
                    with self.cluster.monitor(i, timeout=1.0) as monitor:
                        if monitor.ready():
                            pending.discard(i)
                except TsconsensusError:
                    pass
            if pending:
                time.sleep(0.1)
        return sorted(pending)

    def member_ids(self, timeout: float = 1.0) -> dict[str, str] | None:
        """The leader's view of the configuration: ``{node address: member id}``, or None."""
        leader = self.leader()
        status = None if leader is None else self.status(leader, timeout)
        if status is None:
            return None
        members: dict[str, str] = {}
        for member in status.get("members") or []:
            members[str(member.get("address") or "")] = str(member.get("id"))
        return members

    # -- membership -------------------------------------------------------------------------

    def remove_member(self, i: int, timeout: float) -> bool:
        """Ask a live member to remove node ``i`` (``POST /v1/members/remove``) until it is
        done or ``timeout``; True once ``i`` is not in the leader's configuration."""
        deadline = time.monotonic() + timeout
        address = self.cluster.addresses[i]
        while time.monotonic() < deadline:
            members = self.member_ids()
            if members is not None and address not in members:
                with self._lock:
                    self._removed.add(i)
                return True
            via = [j for j in self.live() if j != i]
            if members is not None and via:
                member_id = members[address]
                with contextlib.suppress(TsconsensusError):
                    self.cluster.client(via[0], timeout=10).request(
                        "POST", "/v1/members/remove", {"id": member_id}, timeout=10
                    )
            time.sleep(0.2)
        return False

    def is_member(self, i: int) -> bool:
        members = self.member_ids()
        return members is not None and self.cluster.addresses[i] in members

    def removed(self) -> list[int]:
        with self._lock:
            return sorted(self._removed)

    def rejoined(self, i: int) -> None:
        with self._lock:
            self._removed.discard(i)

    def wipe(self, i: int) -> None:
        """Delete node ``i``'s state directory (the node must be down)."""
        with self._lock:
            if i not in self._down:
                raise TsconsensusError(f"{self.name(i)} must be down to wipe its state")
            state_dir = Path(self.cluster.config(i).storage.state_dir)
            # only a directory of this cluster's own (never ":memory:" read as a path)
            if state_dir.is_absolute() and state_dir.is_relative_to(self.cluster.directory):
                shutil.rmtree(state_dir, ignore_errors=True)

    # -- the end ----------------------------------------------------------------------------

    def heal_all(self) -> None:
        """Undo every fault: the network, paused nodes, nodes that are down (restarted)."""
        self.heal_network()
        with self._lock:
            for i in sorted(self._paused):
                self.resume(i)
            for i in sorted(self._down):
                self.start(i)

    def stop_all(self) -> None:
        """Stop every node by its PID: resumed first (a stopped process ignores SIGTERM until
        continued), then SIGTERM, SIGKILL after 10 s."""
        with self._lock:
            for i in sorted(self._paused):
                with contextlib.suppress(TsconsensusError, ProcessLookupError):
                    self.cluster.signal_node(i, signal.SIGCONT)
            self._paused.clear()
            self.cluster.stop()
            self._down = set(range(self.size))

    def close(self) -> None:
        """Stop every node for good: no :meth:`start` succeeds after this (a run cut short
        must not have its nemesis restart what was just stopped)."""
        with self._lock:
            self._closed = True
            self.stop_all()

    def leftover(self) -> list[int]:
        """PIDs this run started that still run."""
        marker = str(self.cluster.directory)
        return [pid for pid in self.pids if process_alive(pid, marker)]


class Observer(threading.Thread):
    """Polls every live node's status twice a second and records ``term -> leader``.

    Best effort: a term whose leader nobody was asked about in time is missed, but every term
    reached shows up in the highest term seen.
    """

    def __init__(self, control: ClusterControl, stop: threading.Event) -> None:
        super().__init__(name="faults-observer", daemon=True)
        self.control = control
        self.stop = stop
        self.leaders: dict[int, str] = {}
        self.first_term: int | None = None
        self.last_term = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        while True:
            self.poll()
            if self.stop.wait(0.5):
                return

    def poll(self) -> None:
        for i in self.control.live():
            status = self.control.status(i)
            if status is None:
                continue
            term = int(status.get("term") or 0)
            with self._lock:
                if self.first_term is None:
                    self.first_term = term
                self.last_term = max(self.last_term, term)
                if status.get("state") == "leader":
                    self.leaders.setdefault(term, self.control.name(i))

    def summary(self) -> tuple[int | None, int, dict[int, str]]:
        """(first term seen, last term seen, {term: leader})."""
        with self._lock:
            return self.first_term, self.last_term, dict(self.leaders)


def wait_until(probe: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``probe`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
