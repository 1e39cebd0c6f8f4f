"""The ``tsc`` Typer app: one module per subcommand, registered here."""

from __future__ import annotations

import typer

from . import dev, execute, leader, node, peers, snapshot, status
from .exit_codes import EPILOG

app = typer.Typer(
    name="tsc",
    help="Operate tsconsensus clusters: Raft over a Tailscale tailnet, peers found by tag.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(node.app, name="node")
app.add_typer(dev.app, name="dev")
app.add_typer(leader.app, name="leader")
app.add_typer(snapshot.app, name="snapshot")
execute.register(app)
status.register(app)
peers.register(app)


def main() -> None:
    app()
