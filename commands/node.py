"""``tsc node``: run a cluster node."""

from __future__ import annotations

import time
from pathlib import Path

import typer

import tsconsensus as tsc

from .exit_codes import EPILOG
from .render import emit_line, handles_errors, stderr
from .target import command_target, timeout_opt

app = typer.Typer(help="Run a cluster node.", no_args_is_help=True)


@app.command("start", epilog=EPILOG)
@handles_errors
def start(
    config: Path = typer.Option(..., "--config", "-c", help="The node's TOML config file."),
    log_level: str = typer.Option(
        "info", "--log-level", help=f"Logging threshold: {', '.join(tsc.LOG_LEVELS)}."
    ),
) -> None:
    """Run a node in the foreground until Ctrl-C or SIGTERM, logging to stderr (the same as
    python -m tsconsensus --config FILE, which needs nothing but the library).

    Example: tsc node start --config node1.toml
    """
    tsc.serve(tsc.Config.load(config), log_level)


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
    # Where the node is, decided once and asked there until it exits. Userspace mode: the
    # admin socket, also afterwards (the node's address is reachable only through tailscaled
    # there, and a managed node's own tailscaled stops with it).
    target, source = command_target(config, None)
    with tsc.NodeClient(target, timeout=10.0, source_address=source) as client:
        client.stop_node()
    deadline = time.monotonic() + timeout
    with stderr.status("waiting for the node to exit..."):
        while time.monotonic() < deadline:
            try:
                with tsc.NodeClient(target, timeout=1.0, source_address=source) as probe:
                    probe.request("GET", "/healthz")
            except tsc.NodeUnreachableError:
                emit_line("node stopped")
                return
            except tsc.TsconsensusError:
                pass
            time.sleep(0.1)
    raise tsc.TsconsensusError(f"the node still answers after {timeout:g}s")
