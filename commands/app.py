"""The ``tsc`` Typer app: one module per subcommand, registered here."""

from __future__ import annotations

import typer

import tsconsensus as tsc

from . import dev, doctor, execute, leader, node, peers, snapshot, status
from .exit_codes import EPILOG
from .render import emit_line

app = typer.Typer(
    name="tsc",
    help="Operate tsconsensus clusters: Raft over a Tailscale tailnet, peers found by tag.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        emit_line(f"tsc (tsconsensus) {tsc.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version of tsc and of the tsconsensus library, then exit.",
        callback=_show_version,
        is_eager=True,
    ),
) -> None:
    """Operate tsconsensus clusters: Raft over a Tailscale tailnet, peers found by tag.

    Example: tsc dev up --nodes 3 --dir .tsc-dev   (then tsc status --config .tsc-dev/node1.toml)
    """


app.add_typer(node.app, name="node")
app.add_typer(dev.app, name="dev")
app.add_typer(leader.app, name="leader")
app.add_typer(snapshot.app, name="snapshot")
execute.register(app)
status.register(app)
peers.register(app)
doctor.register(app)


def main() -> None:
    app()
