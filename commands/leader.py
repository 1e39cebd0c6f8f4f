"""``tsc leader``: move Raft leadership."""

from __future__ import annotations

from pathlib import Path

import typer

from .exit_codes import EPILOG
from .render import emit_line, handles_errors, stderr
from .target import CommandAddressOpt, ConfigOpt, command_client, timeout_opt

app = typer.Typer(help="Move Raft leadership between members.", no_args_is_help=True)


@app.command("transfer", epilog=EPILOG)
@handles_errors
def transfer(
    to: str = typer.Option(
        None,
        "--to",
        help="Member to lead: its id, or its Raft address host:port; default: the most caught-up.",
    ),
    config: Path = ConfigOpt,
    address: str = CommandAddressOpt,
    timeout: float = timeout_opt(15.0, "Seconds to wait for the move."),
) -> None:
    """Hand leadership to another member (asked of any node, done by the leader).

    Example: tsc leader transfer --to 100.64.0.2:6270 --config node1.toml
    """
    with (
        command_client(config, address, timeout + 5) as client,
        stderr.status("transferring leadership..."),
    ):
        new = client.transfer_leadership(to)
    emit_line(f"leader is now {new}")
