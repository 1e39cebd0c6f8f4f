"""Helpers for trying tsconsensus and testing code built on it, without Tailscale.

- :class:`LocalCluster`: N real node processes on the ``static`` backend, each on its own
  loopback address (127.0.0.x), one config file per node in a directory. ``tsc dev up`` is a
  thin wrapper around it. Every process is tracked and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..address import NodeAddress
from ..client import NodeClient
from ..config import Config, PortsConfig, from_mapping, to_toml
from ..errors import NodeUnreachableError, NoLeaderError, TsconsensusError
from ..types import JSON
from . import emulator_service
from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator

MANIFEST = "cluster.json"


def node_command() -> list[str]:
    """How a node process is started: ``python -m tsconsensus --config FILE`` with this
    interpreter (the library's own entry point, never the CLI package)."""
    return [sys.executable, "-m", "tsconsensus", "--config"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _is_our_node(pid: int, config_path: Path) -> bool:
    """Guard against a recycled PID: the process must be running this config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return sys.platform != "linux" and _alive(pid)
    return str(config_path).encode() in cmdline


class LocalCluster:
    """A cluster of node processes on loopback addresses, described by files in ``directory``.

    ``directory`` holds ``nodeN.toml`` (config), ``nodeN.pid``, ``nodeN.log``, ``nodeN/`` (state)
    and ``cluster.json`` (the manifest that :meth:`open` reads back).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        nodes: int = 3,
        base_address: str = "127.0.0.1",
        ports: PortsConfig | None = None,
        cluster_tag: str = "tag:dev",
        state_machine: str = "",
        persistent: bool = True,
        raft_overrides: dict[str, Any] | None = None,
        command_overrides: dict[str, Any] | None = None,
        cluster_overrides: dict[str, Any] | None = None,
        tailnet: str = "static",
        emulator_process: bool = False,
        secret: str | None = None,
    ) -> None:
        if tailnet not in ("static", "emulated"):
            raise TsconsensusError(f"tailnet must be 'static' or 'emulated', not {tailnet!r}")
        if nodes < 1:
            raise TsconsensusError("a cluster needs at least one node")
        self.directory = Path(directory).resolve()
        self.size = nodes
        self.base_address = base_address
        self.ports = ports or PortsConfig()
        self.cluster_tag = cluster_tag
        self.state_machine = state_machine
        self.persistent = persistent
        self.raft_overrides = dict(raft_overrides or {})
        self.command_overrides = dict(command_overrides or {})
        base = ipaddress.ip_address(base_address)
        if not base.is_loopback:
            raise TsconsensusError(f"--base-address {base_address} is not a loopback address")
        self.addresses = [str(base + i) for i in range(nodes)]
        self.cluster_overrides = dict(cluster_overrides or {})
        self.secret = secret if secret is not None else secrets.token_hex(16)
        self.node_overrides: dict[int, dict[str, dict[str, Any]]] = {}
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        # "emulated": each node asks its own tailscaled emulator (in this process) over the
        # LocalAPI, as it would on a real tailnet; tests change tags and online flags here.
        # With ``emulator_process`` the emulators run in a background process of their own
        # (``tsc dev up --tailnet emulated``), following DIR/tailnet.json.
        self.tailnet_kind = tailnet
        self.emulator_process = emulator_process
        self.emulated: EmulatedTailnet | None = None
        self._emulators: dict[int, LocalAPIEmulator] = {}
        if tailnet == "emulated":
            self.emulated = EmulatedTailnet(
                [self._emulated_node(i, [cluster_tag]) for i in range(nodes)]
            )

    def _emulated_node(self, i: int, tags: Sequence[str]) -> EmulatedNode:
        return EmulatedNode(self.hostname(i), [self.addresses[i]], list(tags))

    def hostname(self, i: int) -> str:
        return f"node{i + 1}"

    def socket_path(self, i: int) -> Path:
        return self.directory / f"node{i + 1}.sock"

    def add_node(
        self,
        *,
        tags: Sequence[str] | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> int:
        """Add a node to the (emulated) tailnet and write its config; return its index.

        It is not started: :meth:`start_node` it. With the static backend the others' peer
        lists are fixed, so only emulated clusters can grow.
        """
        if self.emulated is None:
            raise TsconsensusError("only emulated clusters can add nodes")
        i = self.size
        self.addresses.append(str(ipaddress.ip_address(self.addresses[0]) + i))
        self.size += 1
        self.emulated.add(self._emulated_node(i, [self.cluster_tag] if tags is None else tags))
        if overrides:
            self.node_overrides[i] = overrides
        self.write()
        return i

    # -- files ------------------------------------------------------------------------------

    def config_path(self, i: int) -> Path:
        return self.directory / f"node{i + 1}.toml"

    def pid_path(self, i: int) -> Path:
        return self.directory / f"node{i + 1}.pid"

    def log_path(self, i: int) -> Path:
        return self.directory / f"node{i + 1}.log"

    def state_dir(self, i: int) -> str:
        """Node ``i``'s state directory (``:memory:`` for a cluster that keeps none)."""
        return str(self.directory / f"node{i + 1}") if self.persistent else ":memory:"

    def config(self, i: int) -> Config:
        if self.emulated is None:
            peers = [
                {"address": a, "tags": [self.cluster_tag], "hostname": self.hostname(n)}
                for n, a in enumerate(self.addresses)
            ]
            tailnet: dict[str, Any] = {
                "backend": "static",
                "address": self.addresses[i],
                "peers": peers,
            }
        else:
            tailnet = {"backend": "localapi", "socket_path": str(self.socket_path(i))}
        data: dict[str, Any] = {
            "cluster": {
                "tag": self.cluster_tag,
                "state_machine": self.state_machine,
                "secret": self.secret,
                **self.cluster_overrides,
            },
            "ports": dataclasses.asdict(self.ports),
            "raft": dict(self.raft_overrides),
            "command": dict(self.command_overrides),
            "storage": {"state_dir": self.state_dir(i)},
            "tailnet": tailnet,
        }
        for section, values in self.node_overrides.get(i, {}).items():
            data[section] = {**data.get(section, {}), **values}
        return from_mapping(data)

    def write(self) -> list[Path]:
        """Write every node's config and the manifest; return the config paths."""
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(self.size):
            path = self.config_path(i)
            path.write_text(to_toml(self.config(i)))
            paths.append(path)
        manifest = {
            "nodes": self.size,
            "base_address": self.base_address,
            "ports": dataclasses.asdict(self.ports),
            "cluster_tag": self.cluster_tag,
            "state_machine": self.state_machine,
            "persistent": self.persistent,
            "raft_overrides": self.raft_overrides,
            "command_overrides": self.command_overrides,
            "cluster_overrides": self.cluster_overrides,
            "tailnet": self.tailnet_kind,
            "emulator_process": self.emulator_process,
            "secret": self.secret,
        }
        (self.directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.emulated is not None:
            emulator_service.write_tailnet(self.directory, list(self.emulated.nodes.values()))
        return paths

    @classmethod
    def open(cls, directory: str | Path) -> LocalCluster:
        """The cluster described by ``directory``'s manifest (written by :meth:`write`)."""
        path = Path(directory) / MANIFEST
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TsconsensusError(f"{path} is not a tsconsensus dev cluster: {exc}") from None
        cluster = cls(
            directory,
            nodes=m["nodes"],
            base_address=m["base_address"],
            ports=PortsConfig(**m["ports"]),
            cluster_tag=m["cluster_tag"],
            state_machine=m.get("state_machine", ""),
            persistent=m.get("persistent", True),
            raft_overrides=m.get("raft_overrides"),
            command_overrides=m.get("command_overrides"),
            cluster_overrides=m.get("cluster_overrides"),
            tailnet=m.get("tailnet", "static"),
            emulator_process=m.get("emulator_process", False),
            secret=m.get("secret", ""),
        )
        if (
            cluster.emulated is not None
            and (cluster.directory / emulator_service.TAILNET_FILE).exists()
        ):
            cluster.emulated = EmulatedTailnet(emulator_service.read_tailnet(cluster.directory))
        return cluster

    # -- processes --------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Write the files, start every node, and (by default) wait for a ready cluster."""
        self.write()
        for i in range(self.size):
            self.start_node(i)
        if wait:
            self.wait_ready(timeout)

    def start_node(self, i: int, extra_env: dict[str, str] | None = None) -> int:
        """Start node ``i`` (0-based) in the background; return its PID."""
        if self.running(i):
            raise TsconsensusError(f"node{i + 1} is already running (pid {self.pid(i)})")
        if not self.config_path(i).exists():
            self.write()
        if self.emulated is not None and self.emulator_process:
            emulator_service.spawn(self.directory, list(self.emulated.nodes))
        elif self.emulated is not None and i not in self._emulators:
            emulator = self.emulated.emulator(self.hostname(i), self.socket_path(i))
            self._emulators[i] = emulator.start()
        env = dict(os.environ)
        env.update(extra_env or {})
        with open(self.log_path(i), "ab") as log:
            proc = subprocess.Popen(
                [*node_command(), str(self.config_path(i))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the launching shell does not reach it
            )
        self._procs[i] = proc
        self.pid_path(i).write_text(f"{proc.pid}\n")
        return proc.pid

    def pid(self, i: int) -> int | None:
        try:
            return int(self.pid_path(i).read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self, i: int) -> bool:
        pid = self.pid(i)
        if pid is None:
            return False
        proc = self._procs.get(i)
        if proc is not None:
            return proc.poll() is None
        return _alive(pid) and _is_our_node(pid, self.config_path(i))

    def signal_node(self, i: int, sig: int) -> None:
        """Send ``sig`` to node ``i`` by its PID (SIGKILL, SIGSTOP, SIGCONT, SIGTERM...)."""
        pid = self.pid(i)
        if pid is None or not self.running(i):
            raise TsconsensusError(f"node{i + 1} is not running")
        os.kill(pid, sig)

    def stop_node(self, i: int, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop node ``i``: SIGTERM (or SIGKILL), then SIGKILL if it outlives ``timeout``."""
        pid = self.pid(i)
        if pid is None:
            return
        if self.running(i):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            if not self._wait_gone(i, pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(i, pid, 5.0)
        self._procs.pop(i, None)
        with contextlib.suppress(OSError):
            self.pid_path(i).unlink()

    def _wait_gone(self, i: int, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(i)
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop every node (by PID), then the emulators. Idempotent."""
        for i in range(self.size):
            self.stop_node(i)
        for emulator in self._emulators.values():
            emulator.stop()
        self._emulators.clear()
        if self.emulator_process:
            emulator_service.stop_service(self.directory)

    def set_tags(self, i: int, tags: Sequence[str]) -> None:
        """Change node ``i``'s tags in the emulated tailnet, while everything runs."""
        if self.emulated is None:
            raise TsconsensusError("only an emulated tailnet can change tags (--tailnet emulated)")
        self.emulated.set_tags(self.hostname(i), tags)
        emulator_service.write_tailnet(self.directory, list(self.emulated.nodes.values()))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to nodes -------------------------------------------------------------------

    def command_address(self, i: int) -> str:
        return str(NodeAddress(self.addresses[i], self.ports.command))

    def monitor_address(self, i: int) -> str:
        return str(NodeAddress(self.addresses[i], self.ports.monitor))

    def node_id(self, i: int) -> str:
        """Node ``i``'s member id, as it reports it (random; a wiped node gets a new one)."""
        return str(self.status(i)["node_id"])

    def raft_address(self, i: int) -> str:
        """Node ``i``'s Raft address (``host:port``)."""
        return str(NodeAddress(self.addresses[i], self.ports.raft))

    def join_body(self, i: int) -> dict[str, str]:
        """The ``POST /v1/join`` body node ``i`` sends for itself."""
        return {"id": self.node_id(i), "address": self.raft_address(i)}

    def client(self, i: int, *, timeout: float = 10.0) -> NodeClient:
        """A command-port client that connects as node ``i`` (from its own address)."""
        return NodeClient(
            self.command_address(i), timeout=timeout, source_address=self.addresses[i]
        )

    def monitor(self, i: int, *, timeout: float = 5.0) -> NodeClient:
        return NodeClient(
            self.monitor_address(i), timeout=timeout, source_address=self.addresses[i]
        )

    def status(self, i: int) -> dict[str, Any]:
        with self.monitor(i) as m:
            return m.status()

    def leader_index(self, among: Sequence[int] | None = None) -> int | None:
        """The node (0-based) that reports itself leader, if exactly one of ``among`` does.

        ``among`` defaults to the nodes that are running.
        """
        leaders = []
        candidates = (
            among if among is not None else [i for i in range(self.size) if self.running(i)]
        )
        for i in candidates:
            try:
                if self.status(i)["state"] == "leader":
                    leaders.append(i)
            except TsconsensusError:
                continue
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(self, timeout: float = 30.0, among: Sequence[int] | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_index(among)
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise NoLeaderError(f"no single leader among the nodes within {timeout:g}s")

    def wait_ready(self, timeout: float = 30.0, among: Sequence[int] | None = None) -> None:
        """Wait until every node in ``among`` answers and is ready, and one leader exists."""
        deadline = time.monotonic() + timeout
        nodes = list(among if among is not None else range(self.size))
        pending = set(nodes)
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                proc = self._procs.get(i)
                if proc is not None and proc.poll() is not None:
                    tail = self.log_path(i).read_text(errors="replace")[-2000:]
                    raise TsconsensusError(f"node{i + 1} exited ({proc.returncode}):\n{tail}")
                try:
                    with self.monitor(i, timeout=1.0) as m:
                        if m.ready():
                            pending.discard(i)
                except NodeUnreachableError:
                    pass
            if pending:
                time.sleep(0.05)
        if pending:
            names = ", ".join(f"node{i + 1}" for i in sorted(pending))
            raise NoLeaderError(f"{names} not ready within {timeout:g}s (see {self.directory})")
        self.wait_for_leader(max(1.0, deadline - time.monotonic()))

    def execute(self, i: int, name: str, args: JSON = None, **kw: Any) -> Any:
        with self.client(i) as c:
            return c.execute(name, args, **kw)

    def state_hash(self, i: int) -> str:
        """A digest of node ``i``'s key-value state, read through the log (linearizable)."""
        with self.client(i) as c:
            keys = c.execute("keys", {}).result
            assert isinstance(keys, list)
            values = [c.execute("get", {"key": k}).result for k in keys]
        blob = json.dumps(list(zip(keys, values, strict=True)), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
