"""``tsc node``: run a cluster node."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import typer

import tsconsensus as tsc

from .exit_codes import EPILOG
from .render import handles_errors

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
