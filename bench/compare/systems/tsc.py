"""tsconsensus: ``tsc node start`` processes of a LocalCluster, state directories, fsync on."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator

import tsconsensus
from tsconsensus.testing import LocalCluster

from .. import procs
from ..stats import Figures
from .base import ClientPath, InProcess, System, random_loopback_base


class TsconsensusSystem(System):
    name = "tsconsensus"
    column = "tsconsensus"

    cluster: LocalCluster | None = None

    def missing(self) -> str | None:
        return None

    def version(self) -> str:
        return tsconsensus.__version__

    def notes(self) -> str:
        return (
            f"tsconsensus {self.version()}: `tsc node start` processes with state directories, "
            "default config (fsync on, heartbeat 0.1 s, election 0.6-1.2 s); (a) is "
            "`POST /v1/execute` on the command port; reads are `get` through ReadIndex"
        )

    def _cluster(self) -> LocalCluster:
        if self.cluster is None:
            raise RuntimeError("the tsconsensus cluster is not running")
        return self.cluster

    def start(self, nodes: int) -> None:
        self.cluster = LocalCluster(
            self.fresh_dir(nodes), nodes=nodes, base_address=random_loopback_base()
        )
        self.addresses = list(self.cluster.addresses)
        self.cluster.start(wait=True, timeout=60)

    def stop(self) -> None:
        if self.cluster is not None:
            cluster = self.cluster
            for i in range(cluster.size):  # all at once, then wait for each
                with contextlib.suppress(tsconsensus.TsconsensusError, ProcessLookupError):
                    cluster.signal_node(i, signal.SIGTERM)
            cluster.stop()
            self.cluster = None

    def leader_index(self) -> int | None:
        cluster = self._cluster()
        return cluster.leader_index(among=list(range(cluster.size)))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        self._cluster().wait_ready(timeout)

    def paths(self) -> list[ClientPath]:
        port = tsconsensus.PortsConfig().command  # LocalCluster's default ports
        return [ClientPath(self.column, "command port", "http", "tsc", port)]

    def failover_path(self) -> ClientPath:
        return self.paths()[0]

    def bulk_path(self) -> ClientPath:
        return self.paths()[0]

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        self._cluster().signal_node(i, sig)

    def restart(self, i: int) -> None:
        cluster = self._cluster()
        cluster.stop_node(i, kill=True)  # reaps the killed process, forgets its PID file
        cluster.start_node(i)

    def pids(self) -> list[int]:
        cluster = self._cluster()
        found = [cluster.pid(i) for i in range(cluster.size) if cluster.running(i)]
        return [pid for pid in found if pid is not None]

    @contextlib.contextmanager
    def inprocess(self) -> Iterator[InProcess | None]:
        """The leader's ``tsc node start`` process is replaced, on the same config and state,
        by one that also runs the callers (:mod:`..tsc_inproc`); leadership is moved back to
        it, and the ordinary process is started again when the session ends."""
        cluster = self._cluster()
        i = cluster.wait_for_leader(timeout=30)
        cluster.stop_node(i)  # SIGTERM: the node hands leadership over and exits
        log = cluster.directory / f"node{i + 1}-inproc.log"
        harness = procs.spawn(
            [sys.executable, "-m", "bench.compare.tsc_inproc", str(cluster.directory), str(i)],
            log,
            pipes=True,
        )
        try:
            node_id = str(procs.receive(harness, 60, log)["ready"])
            cluster.wait_ready(60)
            self._lead(i, node_id)

            def measure(clients: int, seconds: float) -> Figures:
                if self.leader_index() != i:
                    self._lead(i, node_id)
                procs.send(harness, {"clients": clients, "seconds": seconds})
                answer = procs.receive(harness, seconds + 120, log)
                return Figures.from_json(answer["figures"])

            yield measure
        finally:
            if harness.stdin is not None:
                with contextlib.suppress(OSError):
                    harness.stdin.close()  # the harness stops its node and exits
            with contextlib.suppress(Exception):
                harness.wait(30)
            procs.stop(harness)
            if self.cluster is cluster:  # still running (not stopped after a failure)
                cluster.start_node(i)
                cluster.wait_ready(60)

    def _lead(self, i: int, node_id: str, timeout: float = 60.0) -> None:
        """Move leadership to member ``i`` (its id ``node_id``)."""
        cluster = self._cluster()
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader_index()
            if leader == i:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"leadership did not move to node{i + 1} in {timeout:g}s")
            if leader is not None:
                with (
                    contextlib.suppress(tsconsensus.TsconsensusError),
                    cluster.client(leader, timeout=15) as client,
                ):
                    client.transfer_leadership(to=node_id)  # a command-port endpoint
            time.sleep(0.1)
