"""Running a node from a :class:`Config` until told to stop (what ``tsc node start`` does)."""

from __future__ import annotations

import logging
import threading

from .config import Config
from .consensus import Consensus
from .errors import TailnetError
from .loader import load_state_machine
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
    tailnet: Tailnet = LocalAPITailnet(config.tailnet.socket_path)
    return tailnet


def start_from_config(config: Config) -> Consensus:
    """Build the tailnet and the state machine the config names, and start the node."""
    machine = load_state_machine(config.cluster.state_machine)
    return start(build_tailnet(config), machine, config.cluster.tag, config)


def run_node(config: Config, stop: threading.Event) -> None:
    """Start a node and keep it running until ``stop`` is set; then stop it cleanly."""
    node = start_from_config(config)
    node.set_stop_handler(stop.set)  # POST /v1/node/stop, from this node itself
    try:
        log.info("node %s serving commands on %s", node.node_id, node.command_url)
        stop.wait()
    finally:
        log.info("node %s stopping", node.node_id)
        node.stop()


def node_address(config: Config) -> str:
    """This node's tailnet address as the config sees it (asks the tailnet backend)."""
    if config.tailnet.backend == "static":
        return config.tailnet.address
    return build_tailnet(config).self_peer().address
