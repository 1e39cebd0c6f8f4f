"""Network namespaces made for a test or a fault run, and deleted after it.

- :class:`Hosts`: several "hosts" on one machine, network namespaces joined by veth to a
  bridge, with 100.64.0.x addresses that exist only inside namespaces this helper created.
  Each host runs its node as a real process inside its namespace and has its own tailscaled
  emulator (a unix socket: reachable from every namespace). Commands from a host run through
  ``ip netns exec``; nothing is sent to any address outside these namespaces.
- :class:`RunNamespace`: one empty namespace (only its own loopback) that a thread can enter,
  so that a whole :class:`~tsconsensus.testing.LocalCluster` (its node processes, its clients)
  lives inside it; its :meth:`~RunNamespace.block` cuts traffic between chosen addresses with
  nftables rules that exist only in that namespace. The fault runner's partitions use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..client import NodeClient
from ..config import Config, PortsConfig, to_toml
from ..errors import TsconsensusError
from .cluster import node_command
from .emulator import EmulatedNode, EmulatedTailnet, LocalAPIEmulator
from .emulator_netstack import enter_netns


def netns_available() -> str | None:
    """None if namespaces can be used here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def nftables_available() -> str | None:
    """None if :class:`RunNamespace` can filter traffic here, else why not."""
    return netns_available() or (
        "nftables (nft) is not installed" if shutil.which("nft") is None else None
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


_TABLE = "tsc_faults"


class RunNamespace:
    """One network namespace with only a loopback interface, made for one run.

    ``with RunNamespace() as ns:`` creates it (``ip netns add``) and deletes it on exit, even
    when the body raised. A thread that calls :meth:`enter` lives in it from then on: the
    sockets it opens, the threads and processes it starts, are inside too (Linux keeps the
    network namespace per thread and children inherit it). Other threads are untouched.

    Traffic is cut only by rules in the namespace's own nftables table (``inet tsc_faults``),
    applied with ``ip netns exec``: nothing outside the namespace is ever changed. Processes
    still inside when it is deleted keep it alive, so stop them first.
    """

    def __init__(self, prefix: str = "tscf") -> None:
        self.name = f"{prefix}{os.getpid() % 100000}-{random.randint(0, 99999)}"
        self._created = False

    def __enter__(self) -> RunNamespace:
        _ip("netns", "add", self.name)
        self._created = True
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespace (and with it its firewall table). Idempotent."""
        if self._created:
            self._created = False
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _ip("netns", "del", self.name)

    def enter(self) -> None:
        """Move the calling thread into the namespace (for good: use a thread of its own)."""
        enter_netns(self.name)

    def _nft(self, script: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", "-f", "-"],
            input=script.encode(),
            check=True,
            capture_output=True,
            timeout=10,
        )

    def block(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Drop every packet from ``a`` to ``b`` for each ``(a, b)`` (IPv4 addresses), replacing
        whatever was blocked before. One direction per pair: pass both for a cut link."""
        lines = [f"ip saddr {a} ip daddr {b} drop" for a, b in sorted(set(pairs))]
        # The table is declared then deleted so the script works whether or not it exists;
        # replacing it in one script is atomic: no moment with half the rules.
        body = "\n    ".join(lines)
        self._nft(
            f"table inet {_TABLE} {{}}\n"
            f"delete table inet {_TABLE}\n"
            f"table inet {_TABLE} {{\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    {body}\n"
            "  }\n"
            "}\n"
        )

    def heal(self) -> None:
        """Remove every rule :meth:`block` added."""
        self._nft(f"table inet {_TABLE} {{}}\ndelete table inet {_TABLE}\n")


SOCKS5 = "127.0.0.1:1055"


class Hosts:
    """``count`` hosts 100.64.0.1.. on one bridge. Use as a context manager.

    ``userspace=True``: every host's tailscaled plays userspace-networking mode. The bridge
    then carries only the emulators' "wire" (10.99.0.x, the stand-in for WireGuard): the
    tailnet addresses exist on no interface, so nodes must listen on 127.0.0.1 and dial through
    their emulator's LocalAPI ``dial``; ``tsc --config`` on a host uses the admin socket.
    """

    def __init__(
        self,
        directory: Path,
        count: int,
        tag: str,
        raft: dict[str, Any],
        *,
        userspace: bool = False,
        socks5_hosts: Iterable[int] = (),
        latency_s: float = 0.0,
    ) -> None:
        self.directory = directory
        self.count = count
        self.tag = tag
        self.raft = raft
        self.userspace = userspace
        self.socks5_hosts = set(socks5_hosts)
        self.latency_s = latency_s
        """userspace only: one-way delay on every connection into a host (a round trip
        between two hosts takes twice this)."""
        """Hosts whose tailscaled also serves SOCKS5 on 127.0.0.1:1055, which their node
        dials through (``tailnet.socks5``) instead of the LocalAPI ``dial``."""
        self.prefix = f"tsc{os.getpid() % 10000}x{random.randint(0, 9999)}"
        self.switch = f"{self.prefix}-sw"
        self.addresses = [f"100.64.0.{k + 1}" for k in range(count)]
        self.wire = [f"10.99.0.{k + 1}" if userspace else self.addresses[k] for k in range(count)]
        self.secret = secrets.token_hex(16)
        self.ports = PortsConfig()
        self.tailnet = EmulatedTailnet(
            [
                EmulatedNode(
                    self.hostname(k),
                    [self.addresses[k]],
                    [tag],
                    wire=f"{self.wire[k]}:41641" if userspace else "",
                )
                for k in range(count)
            ]
        )
        self.emulators: dict[int, LocalAPIEmulator] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._namespaces: list[str] = []

    def hostname(self, k: int) -> str:
        return f"host{k + 1}"

    def ns(self, k: int) -> str:
        return f"{self.prefix}-h{k + 1}"

    def __enter__(self) -> Hosts:
        try:
            _ip("netns", "add", self.switch)
            self._namespaces.append(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for k in range(self.count):
                ns = self.ns(k)
                _ip("netns", "add", ns)
                self._namespaces.append(ns)
                _ip(
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    f"s{k + 1}",
                    "netns",
                    self.switch,
                )
                _ip("-n", ns, "addr", "add", f"{self.wire[k]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", self.switch, "link", "set", f"s{k + 1}", "master", "br0")
                _ip("-n", self.switch, "link", "set", f"s{k + 1}", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for k in list(self.procs):
            self.stop(k)
        for emulator in self.emulators.values():
            emulator.stop()
        for ns in reversed(self._namespaces):
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _ip("netns", "del", ns)
        self._namespaces.clear()

    # -- nodes ------------------------------------------------------------------------------

    def config_path(self, k: int) -> Path:
        return self.directory / f"{self.hostname(k)}.toml"

    def socket_path(self, k: int) -> Path:
        """Host ``k``'s tailscaled (emulator) socket."""
        return self.directory / f"{self.hostname(k)}.sock"

    def emulator(self, k: int) -> LocalAPIEmulator:
        """Host ``k``'s tailscaled, started (inside its namespace) on first use."""
        if k not in self.emulators:
            self.emulators[k] = LocalAPIEmulator(
                self.socket_path(k),
                self.tailnet.nodes[self.hostname(k)],
                tailnet=self.tailnet,
                netns=self.ns(k) if self.userspace else None,
                socks5=SOCKS5 if k in self.socks5_hosts else "",
            )
            self.emulators[k].netstack.latency_s = self.latency_s
            self.emulators[k].start()
        return self.emulators[k]

    def admin_socket(self, k: int) -> Path:
        return self.directory / f"{self.hostname(k)}-state" / "admin.sock"

    def start(self, k: int, **cluster: Any) -> None:
        socket_path = self.socket_path(k)
        self.emulator(k)
        config = Config.from_toml("")
        config = dataclasses.replace(
            config,
            cluster=dataclasses.replace(
                config.cluster, tag=self.tag, secret=self.secret, **cluster
            ),
            raft=dataclasses.replace(config.raft, **self.raft),
            storage=dataclasses.replace(
                config.storage, state_dir=str(self.directory / f"{self.hostname(k)}-state")
            ),
            tailnet=dataclasses.replace(
                config.tailnet,
                backend="localapi",
                socket_path=str(socket_path),
                socks5=SOCKS5 if k in self.socks5_hosts else "",
            ),
        )
        self.config_path(k).write_text(to_toml(config))
        log = open(self.directory / f"{self.hostname(k)}.log", "ab")  # noqa: SIM115
        self.procs[k] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(k), *node_command(), str(self.config_path(k))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self, k: int) -> None:
        proc = self.procs.pop(k, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def log(self, k: int) -> str:
        return (self.directory / f"{self.hostname(k)}.log").read_text(errors="replace")

    # -- acting from a host -----------------------------------------------------------------

    def tsc(self, k: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``tsc ARGS`` inside host ``k``'s namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(k), sys.executable, "-m", "tsconsensus_cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def status(self, k: int, of: int | None = None) -> dict[str, Any] | None:
        """``/v1/status`` of host ``of`` (default: ``k`` itself), asked from host ``k``."""
        if self.userspace:  # only the admin socket reaches a node from its own host
            client = NodeClient(f"unix:{self.admin_socket(k if of is None else of)}", timeout=2)
            try:
                with client:
                    return client.status()
            except TsconsensusError:
                return None
        target = self.addresses[k if of is None else of]
        code = (
            "import json, tsconsensus as t\n"
            "try:\n"
            f"    c = t.NodeClient('{target}:{self.ports.monitor}', timeout=2,"
            f" source_address='{self.addresses[k]}')\n"
            "    print(json.dumps(c.status()))\n"
            "except t.TsconsensusError:\n"
            "    print('null')\n"
        )
        result: dict[str, Any] | None = json.loads(self.python(k, code))
        return result

    def python(self, k: int, code: str, timeout: float = 20) -> str:
        """Run a Python snippet inside host ``k``'s namespace; return its stdout."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(k), sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise AssertionError(done.stderr)
        return done.stdout

    def cut(self, k: int) -> None:
        _ip("-n", self.switch, "link", "set", f"s{k + 1}", "down")

    def heal(self, k: int) -> None:
        """Undo :meth:`cut`."""
        _ip("-n", self.switch, "link", "set", f"s{k + 1}", "up")

    def wait_leader(self, among: list[int], timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = []
            for k in among:
                status = self.status(k)
                if status is not None and status["state"] == "leader":
                    leaders.append(k)
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.2)
        raise AssertionError(f"no single leader among {among} within {timeout}s")
