"""``tsc node``: run a cluster node."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer

import tsconsensus as tsc

from .exit_codes import EPILOG
from .render import emit_line, handles_errors, stderr
from .target import command_client, timeout_opt

app = typer.Typer(help="Run a cluster node.", no_args_is_help=True)

_LEVELS = ("debug", "info", "warning", "error")


@app.command("start", epilog=EPILOG)
@handles_errors
def start(
    config: Path = typer.Option(..., "--config", "-c", help="The node's TOML config file."),
    log_level: str = typer.Option(
        "info", "--log-level", help=f"Logging threshold: {', '.join(_LEVELS)}."
    ),
) -> None:
    """Run a node in the foreground until Ctrl-C or SIGTERM, logging to stderr.

    Example: tsc node start --config node1.toml
    """
    if log_level.lower() not in _LEVELS:
        raise tsc.ConfigError("--log-level", log_level, f"must be one of {', '.join(_LEVELS)}")
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = tsc.Config.load(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("tsconsensus").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tsc.run_node(cfg, stop)


@app.command("stop", epilog=EPILOG)
@handles_errors
def stop(
    config: Path = typer.Option(..., "--config", "-c", help="The node's TOML config file."),
    timeout: float = timeout_opt(30.0, "Seconds to wait for it to exit."),
) -> None:
    """Stop the node started with this config (run it on that node): a leader hands
    leadership over first, so a planned restart costs no election timeout.

    Example: tsc node stop --config node1.toml
    """
    with command_client(config, None, 10.0) as client:
        client.stop_node()
    cfg = tsc.Config.load(config)
    command_port = str(tsc.NodeAddress(tsc.node_address(cfg), cfg.ports.command))
    deadline = time.monotonic() + timeout
    with stderr.status("waiting for the node to exit..."):
        while time.monotonic() < deadline:
            try:
                with tsc.NodeClient(command_port, timeout=1.0) as probe:
                    probe.request("GET", "/healthz")
            except tsc.NodeUnreachableError:
                emit_line("node stopped")
                return
            except tsc.TsconsensusError:
                pass
            time.sleep(0.1)
    raise tsc.TsconsensusError(f"the node still answers after {timeout:g}s")
