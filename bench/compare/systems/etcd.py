"""etcd (Debian's ``etcd-server``, 3.4): one ``etcd`` process per member, default settings."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx

from .. import procs
from .base import ClientPath, InProcess, ProcessSystem, loopback_addresses

CLIENT_PORT = 2379
PEER_PORT = 2380
INSTALL_HINT = (
    "etcd is not installed: `apt-get install -y etcd-server etcd-client` (Debian/Ubuntu, etcd "
    "3.4) adds its column; skipped"
)


class EtcdSystem(ProcessSystem):
    name = "etcd"
    column = "etcd"
    gateway_column = "etcd gateway"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("etcd")

    @staticmethod
    def has_grpc() -> bool:
        return importlib.util.find_spec("grpc") is not None

    def missing(self) -> str | None:
        return None if self.binary() else INSTALL_HINT

    def version(self) -> str:
        out = subprocess.run(
            [self.binary() or "etcd", "--version"], capture_output=True, text=True, check=False
        ).stdout
        first = out.splitlines()[0] if out else "etcd"
        return first.replace("etcd Version: ", "")

    def notes(self) -> str:
        grpc = (
            "gRPC `KV.Put`/`KV.Range` (grpcio, one channel per member)"
            if self.has_grpc()
            else "gRPC skipped: grpcio is missing (`pip install -e '.[bench]'`)"
        )
        return (
            f"etcd {self.version()}: default settings (fsync on, heartbeat 100 ms, election "
            f"1000 ms); (a) is {grpc}; gateway = its JSON gateway on the same client port "
            "driven by the same HTTP load generator as tsconsensus; reads are linearizable ranges"
        )

    def _url(self, i: int, path: str) -> str:
        return f"http://{self.addresses[i]}:{CLIENT_PORT}{path}"

    def start(self, nodes: int) -> None:
        self.directory = self.fresh_dir(nodes)
        self.addresses = loopback_addresses(nodes)
        initial = ",".join(f"m{i + 1}=http://{a}:{PEER_PORT}" for i, a in enumerate(self.addresses))
        for i, address in enumerate(self.addresses):
            self.argv[i] = [
                self.binary() or "etcd",
                f"--name=m{i + 1}",
                f"--data-dir={self.directory / f'm{i + 1}'}",
                f"--listen-client-urls=http://{address}:{CLIENT_PORT}",
                f"--advertise-client-urls=http://{address}:{CLIENT_PORT}",
                f"--listen-peer-urls=http://{address}:{PEER_PORT}",
                f"--initial-advertise-peer-urls=http://{address}:{PEER_PORT}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token=bench-{self.directory.name}",
            ]
            self.restart(i)
        self.wait_healthy(60)

    def _status(self, i: int) -> dict[str, Any]:
        response = httpx.post(self._url(i, "/v3/maintenance/status"), json={}, timeout=2.0)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def leader_index(self) -> int | None:
        leaders = set()
        for i in self.members:
            try:
                status = self._status(i)
            except (httpx.HTTPError, ValueError):
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                leaders.add(i)
        return leaders.pop() if len(leaders) == 1 else None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            statuses = [self._status(i) for i in range(len(self.addresses))]
            leaders = {s.get("leader") for s in statuses}
            applied = [int(s.get("raftAppliedIndex", 0)) for s in statuses]
            if len(leaders) != 1 or not leaders.pop() or max(applied) - min(applied) > 5:
                return False
            return all(
                httpx.get(self._url(i, "/health"), timeout=2.0).json().get("health") == "true"
                for i in range(len(self.addresses))
            )

        procs.wait_until(healthy, timeout, "etcd cluster healthy")

    def paths(self) -> list[ClientPath]:
        gateway = ClientPath(self.gateway_column, "JSON gateway", "http", "etcd-gw", CLIENT_PORT)
        if not self.has_grpc():
            return [gateway]
        return [ClientPath(self.column, "gRPC", "grpc", "etcd-grpc", CLIENT_PORT), gateway]

    def failover_path(self) -> ClientPath:
        return self.paths()[-1]

    def bulk_path(self) -> ClientPath:
        return self.paths()[-1]

    @contextlib.contextmanager
    def inprocess(self) -> Iterator[InProcess | None]:
        yield None  # a Go server: no in-process path for a Python caller
