"""tsconsensus: one replicated state machine for processes on a Tailscale tailnet, kept by Raft.

Peers are the tailnet nodes carrying a cluster tag; any node executes a command, which is
forwarded to the leader, committed and applied in the same order everywhere.

    import tsconsensus
    node = tsconsensus.start(tailnet, tsconsensus.KeyValueMachine(), "tag:db")
    node.execute_command(tsconsensus.Command("set", {"k": 1}))
"""

from __future__ import annotations

from .address import NodeAddress
from .authorization import Authorizer
from .client import NodeClient, is_admin_socket
from .clock import Clock, SystemClock
from .config import (
    ClusterConfig,
    CommandConfig,
    Config,
    HttpConfig,
    MonitorConfig,
    PortsConfig,
    RaftConfig,
    StaticPeer,
    StorageConfig,
    TailnetConfig,
)
from .consensus import Consensus
from .doctor import diagnose
from .errors import (
    ClusterError,
    CommandError,
    CommandTimeoutError,
    ConfigError,
    ForwardingError,
    InvalidAddressError,
    InvalidCommandError,
    InvalidInputError,
    InvalidJSONError,
    JoinError,
    NodeUnreachableError,
    NoLeaderError,
    NotAuthorizedError,
    NotTaggedError,
    StateMachineLoadError,
    TailnetError,
    TsconsensusError,
)
from .kv import KeyValueMachine
from .loader import load_state_machine
from .managed_tailscaled import ManagedTailscaled
from .runner import (
    LOG_LEVELS,
    admin_endpoint,
    build_tailnet,
    member_transport,
    node_address,
    run_node,
    serve,
    start_from_config,
)
from .safejson import MAX_DEPTH as MAX_JSON_DEPTH
from .safejson import loads as parse_json
from .start import start
from .tailnet import Peer, StaticTailnet, Tailnet
from .types import (
    JSON,
    Command,
    CommandResult,
    MemberStatus,
    NodeStatus,
    RaftState,
    SetupCheck,
    StateMachine,
)

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "LOG_LEVELS",
    "MAX_JSON_DEPTH",
    "Authorizer",
    "Clock",
    "ClusterConfig",
    "ClusterError",
    "Command",
    "CommandConfig",
    "CommandError",
    "CommandResult",
    "CommandTimeoutError",
    "Config",
    "ConfigError",
    "Consensus",
    "ForwardingError",
    "HttpConfig",
    "InvalidAddressError",
    "InvalidCommandError",
    "InvalidInputError",
    "InvalidJSONError",
    "JoinError",
    "KeyValueMachine",
    "ManagedTailscaled",
    "MemberStatus",
    "MonitorConfig",
    "NoLeaderError",
    "NodeAddress",
    "NodeClient",
    "NodeStatus",
    "NodeUnreachableError",
    "NotAuthorizedError",
    "NotTaggedError",
    "Peer",
    "PortsConfig",
    "RaftConfig",
    "RaftState",
    "SetupCheck",
    "StateMachine",
    "StateMachineLoadError",
    "StaticPeer",
    "StaticTailnet",
    "StorageConfig",
    "SystemClock",
    "Tailnet",
    "TailnetConfig",
    "TailnetError",
    "TsconsensusError",
    "__version__",
    "admin_endpoint",
    "build_tailnet",
    "diagnose",
    "is_admin_socket",
    "load_state_machine",
    "member_transport",
    "node_address",
    "parse_json",
    "run_node",
    "serve",
    "start",
    "start_from_config",
]
