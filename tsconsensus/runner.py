"""Running a node from a :class:`Config` until told to stop (what ``python -m tsconsensus`` and
``tsc node start`` do)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from .config import Config
from .consensus import Consensus
from .errors import ConfigError, TailnetError
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
