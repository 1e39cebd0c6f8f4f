"""Running a node from a :class:`Config` until told to stop (what ``python -m tsconsensus`` and
``tsc node start`` do)."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import httpx

from .admin_socket import admin_socket_path
from .client import UNIX_PREFIX
from .config import Config
from .consensus import Consensus
from .dialer import detect_userspace, networking
from .errors import ConfigError, TailnetError
from .loader import load_state_machine
from .managed_tailscaled import ManagedTailscaled, managed_socket_path
from .start import start
from .tailnet import StaticTailnet, Tailnet

log = logging.getLogger("tsconsensus.runner")


def build_tailnet(config: Config) -> Tailnet:
    """The tailnet backend the config names."""
    if config.tailnet.backend == "static":
        return StaticTailnet.from_config(config.tailnet)
    try:
        from .localapi import LocalAPITailnet  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise TailnetError("the localapi backend is not available in this build") from None
    socket_path = config.tailnet.socket_path
    if config.tailnet.backend == "managed":  # a view of the node's own (running) tailscaled
        socket_path = str(managed_socket_path(config))
    tailnet: Tailnet = LocalAPITailnet(socket_path, socks5=config.tailnet.socks5)
    return tailnet


def start_from_config(config: Config) -> Consensus:
    """Build the tailnet and the state machine the config names, and start the node. With the
    managed backend, the node's own tailscaled starts first and stops after the node."""
    machine = load_state_machine(config.cluster.state_machine)
    if config.tailnet.backend != "managed":
        return start(build_tailnet(config), machine, config.cluster.tag, config)
    managed = ManagedTailscaled(config, config.cluster.tag)
    tailnet = managed.start()
    try:
        node = start(tailnet, machine, config.cluster.tag, config)
    except BaseException:
        managed.stop()
        raise
    node._closers.append(managed.stop)
    return node


def admin_endpoint(config: Config, *, userspace: bool | None = None) -> str | None:
    """``unix:STATE_DIR/admin.sock`` when a local client should talk to this node through its
    admin socket: the socket exists and the node runs in userspace mode (forced, managed, or
    as tailscaled reports), where a local process is not a tailnet peer. Else None (TCP).

    Only ``tailnet.mode = "auto"`` with the localapi backend needs tailscaled's word on the
    mode: ``userspace`` is that word when the caller already has it (``Networking.userspace``,
    or whether an earlier answer of this function was an admin socket), so tailscaled is asked
    once per decision; None asks it here (a tailscaled that does not answer counts as
    userspace: the socket still reaches the node). The config decides every other case."""
    state_dir = config.storage.state_dir
    if not state_dir or state_dir == ":memory:":
        return None
    path = admin_socket_path(state_dir)
    if not path.exists() or config.tailnet.backend == "static" or config.tailnet.mode == "tun":
        return None
    if config.tailnet.mode == "auto" and config.tailnet.backend == "localapi":
        if userspace is None:
            try:
                userspace = detect_userspace(build_tailnet(config), config)
            except TailnetError:
                userspace = True  # tailscaled down: the socket still reaches the node
        if not userspace:
            return None
    return f"{UNIX_PREFIX}{path}"


def member_transport(
    config: Config, *, userspace: bool | None = None
) -> Callable[[], httpx.BaseTransport] | None:
    """For a local client of this node (``tsc status``) that must reach the other members:
    in userspace mode, a factory of httpx transports that dial them through this host's
    tailscaled (a local process cannot reach tailnet addresses directly there); None when
    a direct TCP connection works (TUN mode, static tailnet), or when the node has no admin
    socket (then :func:`admin_endpoint` is None too). ``userspace``: the mode if already
    decided, as for :func:`admin_endpoint`. Raises :class:`TailnetError` if tailscaled cannot
    be asked."""
    if admin_endpoint(config, userspace=userspace) is None:
        return None
    tailnet = build_tailnet(config)
    # an admin endpoint means userspace mode: decided above, not asked of tailscaled again
    make = networking(tailnet, tailnet.self_peer(), config, userspace=True).http_transport
    if make is None:
        return None
    return functools.partial(make, 4)


def run_node(config: Config, stop: threading.Event) -> None:
    """Start a node and keep it running until ``stop`` is set; then stop it cleanly."""
    node = start_from_config(config)
    node.set_stop_handler(stop.set)  # POST /v1/node/stop, from this node itself
    failure: list[BaseException] = []

    def fatal(exc: BaseException) -> None:
        failure.append(exc)
        stop.set()

    node.set_fatal_handler(fatal)
    try:
        log.info("node %s serving commands on %s", node.node_id, node.command_url)
        stop.wait()
    finally:
        log.info("node %s stopping", node.node_id)
        node.stop(hand_over=not failure)
    if failure:
        raise failure[0]


LOG_LEVELS = ("debug", "info", "warning", "error")
"""The ``--log-level`` values a node process accepts."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(config: Config, log_level: str = "info") -> None:
    """Run a node in the foreground, logging to stderr at ``log_level``, until SIGTERM or
    SIGINT; then stop it cleanly (a leader hands leadership over first). Call it from the main
    thread: it installs the signal handlers. Raises what :func:`run_node` raises."""
    if log_level.lower() not in LOG_LEVELS:
        raise ConfigError("--log-level", log_level, f"must be one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("tsconsensus").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_node(config, stop)


def node_address(config: Config) -> str:
    """This node's tailnet address as the config sees it (asks the tailnet backend)."""
    if config.tailnet.backend == "static":
        return config.tailnet.address
    return build_tailnet(config).self_peer().address
