"""What the measurements need from a system under test (one adapter per system)."""

from __future__ import annotations

import abc
import contextlib
import os
import random
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import procs
from ..httpwire import Target
from ..stats import Figures

Progress = Callable[[str], None]
InProcess = Callable[[int, float], Figures]
"""Measure (b): ``measure(callers, seconds)``."""


@dataclass(frozen=True)
class ClientPath:
    """One way a client in another process reaches the system (the (a) measurements)."""

    column: str
    """The table column its figures go to."""
    label: str
    """How the chart and the progress lines name it."""
    driver: str
    """``http`` or ``grpc`` (see :mod:`..loadgen`)."""
    style: str
    """Request style (see :mod:`..payloads`)."""
    port: int


def random_loopback_base() -> str:
    """A 127.a.b.1 base that other clusters on this machine are unlikely to use."""
    return f"127.{random.randint(2, 250)}.{random.randint(0, 250)}.1"


def loopback_addresses(members: int) -> list[str]:
    """127.a.b.1, .2, ...: one address per member, on a base from :func:`random_loopback_base`."""
    prefix = random_loopback_base().rsplit(".", 1)[0]
    return [f"{prefix}.{1 + i}" for i in range(members)]


class System(abc.ABC):
    """A cluster of one system on loopback addresses, started and stopped by the tool."""

    name: str
    """Short name, as ``--systems`` takes it."""
    column: str
    """The table column of its own figures."""

    def __init__(self, workdir: Path, progress: Progress) -> None:
        self.workdir = workdir
        self.progress = progress
        self.addresses: list[str] = []

    def fresh_dir(self, nodes: int) -> Path:
        """A new directory (under the tool's work directory) for one cluster's files."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{self.name}-{nodes}members-", dir=self.workdir))

    def another(self) -> System:
        """A second adapter of the same system, for a cluster beside this one's."""
        return type(self)(self.workdir, self.progress)

    @abc.abstractmethod
    def missing(self) -> str | None:
        """Why this system cannot run here, with how to fix it; None when it can."""

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def notes(self) -> str:
        """One line for the table's footnotes: what was run, and how."""

    @abc.abstractmethod
    def start(self, nodes: int) -> None:
        """Start a cluster of ``nodes`` members and return once it is healthy."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process of the cluster (by PID). Idempotent."""

    @abc.abstractmethod
    def leader_index(self) -> int | None:
        """The member that leads, if exactly one says so."""

    @abc.abstractmethod
    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every member runs, one leader is known and every member has caught up."""

    @abc.abstractmethod
    def paths(self) -> list[ClientPath]:
        """The client paths of the (a) measurements; the first is the system's main one."""

    @abc.abstractmethod
    def failover_path(self) -> ClientPath:
        """The HTTP path the failover probe writes through."""

    @abc.abstractmethod
    def bulk_path(self) -> ClientPath:
        """The HTTP path that loads many keys per request (``payloads.bulk_request``)."""

    @abc.abstractmethod
    def inprocess(self) -> contextlib.AbstractContextManager[InProcess | None]:
        """(b): a session in which ``measure(callers, seconds)`` runs callers inside the
        leader's process (None when the system has no such path)."""

    @abc.abstractmethod
    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to member ``i``: SIGKILL (a crash: the kernel closes its connections)
        or SIGSTOP (frozen: its connections stay open and silent, as when its machine goes
        dark). :meth:`restart` ends a frozen member before starting it again."""

    @abc.abstractmethod
    def restart(self, i: int) -> None:
        """Start member ``i`` again, on its old state (returns without waiting)."""

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """The PIDs of the running members."""

    def targets(self, path: ClientPath, among: list[int] | None = None) -> list[Target]:
        """The members to connect to, the leader first, then the others in order.

        tsconsensus authorizes a connection by its source address, so every client connects
        from its target's own address (the others do not care).
        """
        members = among if among is not None else list(range(len(self.addresses)))
        leader = self.leader_index()
        if leader in members:
            k = members.index(leader)
            members = members[k:] + members[:k]
        return [Target(self.addresses[i], path.port, self.addresses[i]) for i in members]


class ProcessSystem(System):
    """A system whose members are plain processes this tool starts from a command line each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members: dict[int, subprocess.Popen[bytes]] = {}
        self.argv: dict[int, list[str]] = {}
        self.directory = self.workdir

    def stop(self) -> None:
        for proc in self.members.values():
            procs.stop(proc)
        self.members.clear()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL:
            procs.stop(self.members[i], kill=True)
        else:
            os.kill(self.members[i].pid, sig)

    def restart(self, i: int) -> None:
        old = self.members.pop(i, None)
        if old is not None:
            procs.stop(old, kill=True)
        self.members[i] = procs.spawn(self.argv[i], self.directory / f"m{i + 1}.log")

    def pids(self) -> list[int]:
        return [p.pid for p in self.members.values() if p.poll() is None]
