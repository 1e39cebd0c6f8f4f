"""Configuration: frozen, validated at construction, loaded from TOML.

The TOML layout mirrors the dataclasses: one table per section (``[raft]``, ``[ports]``, ...),
snake_case keys, durations in seconds with an ``_s`` suffix. Every error names the dotted key
and the offending value. ``config.example.toml`` at the top of the repository documents every
key with its default; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .address import NodeAddress
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

BACKENDS = ("localapi", "static", "managed")
MODES = ("auto", "tun", "userspace")
DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"


def _check_port(key: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(key, value, "must be a TCP port between 1 and 65535")


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, value, "must be greater than 0")


def _check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(key, value, "must be an IPv4 or IPv6 address") from None


def _check_tag(key: str, value: str) -> None:
    if not value.startswith("tag:") or len(value) <= 4:
        raise ConfigError(key, value, "must be a Tailscale ACL tag such as 'tag:db'")


@dataclass(frozen=True)
class ClusterConfig:
    """Who the cluster is: the tag that makes a node a peer, and what it replicates."""

    tag: str = "tag:tsconsensus"
    """Every tailnet node carrying this tag is a peer; only they may talk to the cluster."""
    state_machine: str = ""
    """``module:factory`` of the state machine ``tsc node start`` runs; empty = built-in KV."""
    secret: str = ""
    """Shared secret that keys the MAC of every Raft frame; the same on every node. Required
    unless ``insecure_no_secret`` (``tsc dev up`` writes a random one)."""
    insecure_no_secret: bool = False
    """Run with an empty secret: anyone who can run code on a member machine can then forge
    Raft traffic. For throwaway clusters only; the node warns once."""
    bootstrap_expect: int = 0
    """0: every tagged peer present at first start is a member (fixed peer lists, ``static``).
    N: a new node joins an existing cluster if any tagged peer is in one; otherwise it waits
    until N tagged nodes are online and the N lowest ids form the first cluster together."""
    follow_only: bool = False
    """Never form a cluster: only join an existing one."""
    join_timeout_s: float = 60.0
    """How long a new node keeps trying to join or bootstrap before giving up."""

    def __post_init__(self) -> None:
        _check_tag("cluster.tag", self.tag)
        if self.bootstrap_expect < 0:
            raise ConfigError(
                "cluster.bootstrap_expect", self.bootstrap_expect, "must be 0 or more"
            )
        _check_positive("cluster.join_timeout_s", self.join_timeout_s)
        if self.state_machine and ":" not in self.state_machine:
            raise ConfigError(
                "cluster.state_machine", self.state_machine, "must look like 'module:factory'"
            )


@dataclass(frozen=True)
class PortsConfig:
    """TCP ports on the node's tailnet address (the Go package's defaults)."""

    raft: int = 6270
    command: int = 6271
    monitor: int = 8081

    def __post_init__(self) -> None:
        for name in ("raft", "command", "monitor"):
            _check_port(f"ports.{name}", getattr(self, name))
        if len({self.raft, self.command, self.monitor}) != 3:
            raise ConfigError(
                "ports", (self.raft, self.command, self.monitor), "the three ports must differ"
            )


@dataclass(frozen=True)
class RaftConfig:
    """Raft timing and log housekeeping."""

    heartbeat_interval_s: float = 0.1
    """How often the leader sends (possibly empty) append-entries to each follower."""
    election_timeout_min_s: float = 0.6
    election_timeout_max_s: float = 1.2
    """A follower that hears no leader for a random time in [min, max] starts an election."""
    compaction_min_entries: int = 50_000
    """A snapshot is taken (and the log compacted behind it) after this many applied entries."""
    compaction_min_bytes: int = 32 * 1024 * 1024
    """... or after this many bytes of applied entries (or as many as the last snapshot's size,
    if larger), whichever comes first: the log since the last snapshot stays in memory."""
    dedup_window_s: float = 120.0
    """How long a request id (with its outcome) is remembered, so a retry is not applied twice."""

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval_s",
            "election_timeout_min_s",
            "election_timeout_max_s",
        ):
            _check_positive(f"raft.{name}", getattr(self, name))
        if self.election_timeout_max_s <= self.election_timeout_min_s:
            raise ConfigError(
                "raft.election_timeout_max_s",
                self.election_timeout_max_s,
                f"must be more than raft.election_timeout_min_s ({self.election_timeout_min_s})",
            )
        if self.election_timeout_min_s <= 3 * self.heartbeat_interval_s:
            raise ConfigError(
                "raft.heartbeat_interval_s",
                self.heartbeat_interval_s,
                "must be under a third of raft.election_timeout_min_s "
                f"({self.election_timeout_min_s}) or followers start needless elections",
            )
        if self.compaction_min_entries < 2:
            raise ConfigError(
                "raft.compaction_min_entries", self.compaction_min_entries, "must be at least 2"
            )
        if self.compaction_min_bytes < 1024 * 1024:
            raise ConfigError(
                "raft.compaction_min_bytes",
                self.compaction_min_bytes,
                "must be at least 1048576 (1 MiB): a snapshot per few commands would stall them",
            )
        _check_positive("raft.dedup_window_s", self.dedup_window_s)


@dataclass(frozen=True)
class CommandConfig:
    """The command port and command forwarding."""

    timeout_s: float = 10.0
    """Default deadline of one execute (HTTP request or library call), retries included."""
    max_body_bytes: int = 1_048_576
    """Largest accepted request body; larger ones get 413."""
    max_backup_bytes: int = 1_073_741_824
    """Largest backup ``tsc snapshot restore`` may send (it is held in memory while staged)."""
    pool_size: int = 5
    """Connections the node keeps open to each peer's command port (joins, forwarded requests)."""
    connect_timeout_s: float = 5.0
    """Deadline for opening a connection to a peer."""

    def __post_init__(self) -> None:
        _check_positive("command.timeout_s", self.timeout_s)
        _check_positive("command.connect_timeout_s", self.connect_timeout_s)
        if self.max_body_bytes < 64:
            raise ConfigError("command.max_body_bytes", self.max_body_bytes, "must be at least 64")
        if self.max_backup_bytes < self.max_body_bytes:
            raise ConfigError(
                "command.max_backup_bytes",
                self.max_backup_bytes,
                f"must be at least command.max_body_bytes ({self.max_body_bytes})",
            )
        if self.pool_size < 1:
            raise ConfigError("command.pool_size", self.pool_size, "must be at least 1")


@dataclass(frozen=True)
class HttpConfig:
    """Connection limits of the HTTP ports (command and monitor), each port counted alone.

    A connection over a limit is answered 503 and closed as soon as it is accepted.
    """

    max_connections: int = 512
    """Open connections at most, from all sources together."""
    max_connections_per_source: int = 64
    """Open connections at most from one source address (one tailnet node)."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_source"):
            if getattr(self, name) < 1:
                raise ConfigError(f"http.{name}", getattr(self, name), "must be at least 1")
        if self.max_connections_per_source > self.max_connections:
            raise ConfigError(
                "http.max_connections_per_source",
                self.max_connections_per_source,
                f"must not exceed http.max_connections ({self.max_connections})",
            )


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor port (status, health, metrics)."""

    serve: bool = True


@dataclass(frozen=True)
class StorageConfig:
    """Where Raft state lives."""

    state_dir: str = ""
    """Directory for the Raft log, snapshots and the node's identity. Required: a path, or
    ":memory:" for a node that keeps nothing (it comes back from a restart as a new member)."""
    fsync: bool = True
    """Sync every write before acknowledging it. Off only for benchmarks against systems that
    do not sync: then a power cut loses acknowledged writes."""


@dataclass(frozen=True)
class StaticPeer:
    """A peer of the ``static`` backend: an address and its tags, as tailscaled would report."""

    address: str
    tags: tuple[str, ...] = ()
    hostname: str = ""
    online: bool = True


@dataclass(frozen=True)
class TailnetConfig:
    """How the node reaches the tailnet.

    ``localapi`` asks tailscaled over its unix socket. ``static`` takes the node's own address
    and its peers from this file (development and tests: no Tailscale needed). ``managed``
    starts the node's own tailscaled in userspace mode under the state directory and logs it
    in with an auth key (read from a file or an environment variable, never from this file).
    """

    backend: str = "localapi"
    mode: str = "auto"
    """``auto`` asks tailscaled whether it has a TUN device; ``tun`` or ``userspace`` force it.
    In userspace mode the node listens on 127.0.0.1 and dials peers through tailscaled."""
    socket_path: str = DEFAULT_SOCKET
    """tailscaled's LocalAPI socket (Linux default; macOS: see the README)."""
    socks5: str = ""
    """``host:port`` of tailscaled's SOCKS5 proxy (``--socks5-server``): in userspace mode,
    dial peers through it instead of the LocalAPI ``dial`` upgrade. Empty: use ``dial``."""
    tailscaled_path: str = "tailscaled"
    """``managed`` only: the tailscaled executable (a name on PATH, or a path)."""
    auth_key_file: str = ""
    """``managed`` only: a file holding the auth key (read at start; wins over the variable)."""
    auth_key_env: str = "TS_AUTHKEY"
    """``managed`` only: the environment variable holding the auth key."""
    hostname: str = ""
    """``managed`` only: the node's tailnet hostname (empty: this machine's hostname)."""
    login_timeout_s: float = 60.0
    """``managed`` only: how long tailscaled may take to start and reach Running."""
    address: str = ""
    """``static`` only: this node's own address (it must also be listed in ``peers``)."""
    peers: tuple[StaticPeer, ...] = ()
    """``static`` only: every node of the tailnet, this one included."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError("tailnet.backend", self.backend, f"must be one of {BACKENDS}")
        if self.mode not in MODES:
            raise ConfigError("tailnet.mode", self.mode, f"must be one of {MODES}")
        if self.backend == "static" and self.mode == "userspace":
            raise ConfigError(
                "tailnet.mode", self.mode, "userspace needs the localapi or managed backend"
            )
        if self.backend == "managed":
            if self.mode == "tun":
                raise ConfigError(
                    "tailnet.mode", self.mode, "a managed tailscaled runs in userspace mode"
                )
            if not self.auth_key_file and not self.auth_key_env:
                raise ConfigError(
                    "tailnet.auth_key_file", "", "or tailnet.auth_key_env must name the auth key"
                )
            if not self.tailscaled_path:
                raise ConfigError("tailnet.tailscaled_path", "", "must name tailscaled")
        _check_positive("tailnet.login_timeout_s", self.login_timeout_s)
        if self.socks5:
            try:
                NodeAddress.parse(self.socks5)
            except ValueError:
                raise ConfigError(
                    "tailnet.socks5", self.socks5, "must be host:port of tailscaled's proxy"
                ) from None
        for i, peer in enumerate(self.peers):
            _check_address(f"tailnet.peers[{i}].address", peer.address)
            for tag in peer.tags:
                _check_tag(f"tailnet.peers[{i}].tags", tag)
        if self.backend == "static":
            _check_address("tailnet.address", self.address)
            if self.address not in {p.address for p in self.peers}:
                raise ConfigError(
                    "tailnet.address", self.address, "must be one of the tailnet.peers addresses"
                )


@dataclass(frozen=True)
class Config:
    """Everything a node needs, frozen and validated when built.

    ``Config.default()`` is the counterpart of the Go package's ``DefaultConfig()``. Build
    variants with :func:`dataclasses.replace` or :meth:`Config.from_toml`.
    """

    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    command: CommandConfig = field(default_factory=CommandConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tailnet: TailnetConfig = field(default_factory=TailnetConfig)

    @classmethod
    def default(cls) -> Config:
        return cls()

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Config:
        """Parse TOML text; raises :class:`ConfigError` naming the key and value at fault."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"is not valid TOML: {exc}") from None
        except RecursionError:  # tomllib recurses once per level of nested arrays/tables
            raise ConfigError(source, "", "is not valid TOML: nested too deeply") from None
        return from_mapping(data)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read and parse a TOML file; raises :class:`ConfigError` (also for a file that cannot be
        read or is not UTF-8 text)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("--config", str(p), f"cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                "--config", str(p), f"is not UTF-8 text (byte {exc.start}): not a TOML file"
            ) from None
        return cls.from_toml(text, source=str(p))

    def with_overrides(self, **sections: Any) -> Config:
        """A copy with whole sections replaced, e.g. ``with_overrides(ports=PortsConfig(...))``."""
        return dataclasses.replace(self, **sections)


_SECTIONS: dict[str, type] = {
    "cluster": ClusterConfig,
    "ports": PortsConfig,
    "raft": RaftConfig,
    "command": CommandConfig,
    "http": HttpConfig,
    "monitor": MonitorConfig,
    "storage": StorageConfig,
    "tailnet": TailnetConfig,
}


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """Check one scalar against the dataclass field's declared type (ints accepted as floats)."""
    if expected in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "must be a number (seconds for *_s keys)")
        return float(value)
    if expected in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "must be an integer")
        return value
    if expected in ("bool", bool):
        if not isinstance(value, bool):
            raise ConfigError(key, value, "must be true or false")
        return value
    if expected in ("str", str):
        if not isinstance(value, str):
            raise ConfigError(key, value, "must be a string")
        return value
    raise ConfigError(key, value, "has an unsupported type")  # pragma: no cover


def _build(cls: type, prefix: str, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix, data, "must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if key not in fields:
            raise ConfigError(dotted, value, f"is not a known key (known: {', '.join(fields)})")
        if cls is TailnetConfig and key == "peers":
            kwargs[key] = _build_peers(value)
        elif cls is StaticPeer and key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise ConfigError(dotted, value, "must be a list of strings")
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = _coerce(dotted, value, fields[key].type)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(prefix, data, f"is incomplete: {exc}") from None


def _build_peers(value: Any) -> tuple[StaticPeer, ...]:
    if not isinstance(value, list):
        raise ConfigError("tailnet.peers", value, "must be an array of tables ([[tailnet.peers]])")
    peers = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "address" not in item:
            raise ConfigError(f"tailnet.peers[{i}]", item, "must be a table with an 'address'")
        peers.append(_build(StaticPeer, f"tailnet.peers[{i}]", item))
    return tuple(peers)


def from_mapping(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from parsed TOML; unknown sections and keys are errors."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(
                name, value, f"is not a known section (known: {', '.join(_SECTIONS)})"
            )
        sections[name] = _build(_SECTIONS[name], name, value)
    return Config(**sections)


def to_toml(config: Config) -> str:
    """A config as TOML (the subset :class:`Config` uses: tables of scalars and peer arrays)."""
    lines: list[str] = []
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        lines.append(f"[{section.name}]")
        peers = None
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "peers":
                peers = item
                continue
            lines.append(f"{f.name} = {json.dumps(item)}")
        lines.append("")
        for peer in peers or ():
            lines.append(f"[[{section.name}.peers]]")
            for f in dataclasses.fields(peer):
                item = getattr(peer, f.name)
                lines.append(f"{f.name} = {json.dumps(list(item) if f.name == 'tags' else item)}")
            lines.append("")
    return "\n".join(lines)
