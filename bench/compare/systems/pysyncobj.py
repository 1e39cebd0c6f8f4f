"""pysyncobj used directly: one :mod:`..pysyncobj_node` process per member (non-durable)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import httpx

from .. import procs
from ..stats import Figures
from .base import ClientPath, InProcess, ProcessSystem, loopback_addresses

RAFT_PORT = 7300
HTTP_PORT = 7301


class PysyncobjSystem(ProcessSystem):
    name = "pysyncobj"
    column = "pysyncobj"

    def missing(self) -> str | None:
        if importlib.util.find_spec("pysyncobj") is None:
            return "pysyncobj is not installed: `pip install -e '.[bench]'`; skipped"
        return None

    def version(self) -> str:
        return importlib.metadata.version("pysyncobj")

    def notes(self) -> str:
        return (
            f"pysyncobj {self.version()}: NON-DURABLE (its journal is an mmap never fsynced); "
            "a SyncObj subclass with one @replicated method, batching off, journal on, "
            "default timing (election 0.4-1.4 s); (a) goes through a small asyncio HTTP front "
            "in each member process (the bench's own, same requests as tsconsensus); "
            "reads are the member's local copy (pysyncobj has no linearizable read)"
        )

    def _url(self, i: int, path: str) -> str:
        return f"http://{self.addresses[i]}:{HTTP_PORT}{path}"

    def start(self, nodes: int) -> None:
        self.directory = self.fresh_dir(nodes)
        self.addresses = loopback_addresses(nodes)
        raft = [f"{a}:{RAFT_PORT}" for a in self.addresses]
        for i in range(nodes):
            self.argv[i] = [
                sys.executable,
                "-m",
                "bench.compare.pysyncobj_node",
                f"--self={raft[i]}",
                f"--partners={','.join(r for r in raft if r != raft[i])}",
                f"--http-port={HTTP_PORT}",
                f"--journal={self.directory / f'm{i + 1}.journal'}",
                f"--dump={self.directory / f'm{i + 1}.dump'}",
            ]
            self.restart(i)
        self.wait_healthy(60)

    def _status(self, i: int) -> dict[str, Any]:
        response = httpx.get(self._url(i, "/v1/status"), timeout=2.0)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def leader_index(self) -> int | None:
        for i in self.members:
            try:
                status = self._status(i)
            except (httpx.HTTPError, ValueError):
                continue
            if status["leader"] is not None and status["leader"] == status["self"]:
                return i
        return None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            statuses = [self._status(i) for i in range(len(self.addresses))]
            leaders = {s["leader"] for s in statuses}
            applied = [s["applied"] for s in statuses]
            return (
                len(leaders) == 1
                and None not in leaders
                and all(s["ready"] and s["has_quorum"] for s in statuses)
                and max(applied) - min(applied) <= 5
            )

        procs.wait_until(healthy, timeout, "pysyncobj cluster healthy")

    def paths(self) -> list[ClientPath]:
        return [ClientPath(self.column, "HTTP front", "http", "tsc", HTTP_PORT)]

    def failover_path(self) -> ClientPath:
        return self.paths()[0]

    def bulk_path(self) -> ClientPath:
        return self.paths()[0]

    @contextlib.contextmanager
    def inprocess(self) -> Iterator[InProcess | None]:
        leader = self.leader_index()
        if leader is None:
            self.wait_healthy()
            leader = self.leader_index()
        if leader is None:
            raise RuntimeError("pysyncobj: no leader for the in-process callers")
        url = self._url(leader, "/bench/inproc")

        def measure(clients: int, seconds: float) -> Figures:
            body = {"clients": clients, "seconds": seconds}
            response = httpx.post(url, json=body, timeout=seconds + 60)
            response.raise_for_status()
            return Figures.from_json(response.json()["figures"])

        yield measure
