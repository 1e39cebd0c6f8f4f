"""``tsc status``: the cluster as one node sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from . import exit_codes
from .exit_codes import EPILOG
from .render import emit_json, emit_line, emit_table, handles_errors
from .target import ADDRESS_HELP, ConfigOpt, monitor_client


def status_rows(status: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for member in status.get("members", []):
        is_leader = member["id"] == status.get("leader")
        rows.append(
            [
                member["id"],
                Text("leader", style="bold green") if is_leader else "follower",
                "yes" if member.get("connected") else Text("no", style="red"),
                member.get("match_index", "-"),
                member.get("lag", "-"),
                "← this node" if member["id"] == status["node_id"] else "",
            ]
        )
    return rows


@handles_errors
def status_command(
    config: Path = ConfigOpt,
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP + " (monitor port)"),
    as_json: bool = typer.Option(False, "--json", help="Print /v1/status as JSON."),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the node."),
) -> None:
    """Show the node's state, term, commit and applied index, and the members it knows.

    Exit code 0 when the node knows a leader and has quorum, 1 otherwise.
    Example: tsc status --config node1.toml
    """
    with monitor_client(config, address, timeout) as client:
        status = client.status()
    healthy = status.get("leader") is not None and status.get("has_quorum", False)
    if as_json:
        emit_json(status)
    else:
        emit_line(
            f"node {status['node_id']}  state {status['state']}  term {status['term']}  "
            f"commit {status['commit_index']}  applied {status['applied_index']}  "
            f"leader {status['leader'] or '-'}  quorum {'yes' if status['has_quorum'] else 'no'}",
            style=None if healthy else "yellow",
        )
        emit_table(None, ["member", "role", "connected", "match", "lag", ""], status_rows(status))
    if not healthy:
        raise typer.Exit(exit_codes.FAILED)


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EPILOG)(status_command)
