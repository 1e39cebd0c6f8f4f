"""``tsc snapshot``: save, inspect and restore the state machine's snapshot."""

from __future__ import annotations

import datetime
from pathlib import Path

import typer

from tsconsensus.snapshot_file import read_snapshot_file, write_snapshot_file

from . import exit_codes
from .exit_codes import EPILOG
from .render import emit_json, emit_line, emit_table, fail, handles_errors, stderr
from .target import (
    CommandAddressOpt,
    ConfigOpt,
    MonitorAddressOpt,
    command_client,
    json_opt,
    monitor_client,
    timeout_opt,
)

app = typer.Typer(help="Back up and restore the replicated state.", no_args_is_help=True)


@app.command("save", epilog=EPILOG)
@handles_errors
def save(
    file: Path = typer.Argument(..., help="Where to write the snapshot."),
    config: Path = ConfigOpt,
    address: str = MonitorAddressOpt,
    timeout: float = timeout_opt(60.0, "Seconds to wait for the node."),
) -> None:
    """Save the state machine's snapshot, with the index and term it covers and a checksum.

    Example: tsc snapshot save backup.tscsnap --config node1.toml
    """
    with monitor_client(config, address, timeout) as client, stderr.status("saving snapshot..."):
        index, term, data = client.snapshot_info(timeout)
        node = client.base_url
    header = write_snapshot_file(file, data, index=index, term=term, node=node)
    emit_line(f"saved {header.size} bytes at index {index} (term {term}) to {file}")


@app.command("inspect", epilog=EPILOG)
@handles_errors
def inspect(
    file: Path = typer.Argument(..., help="A file written by tsc snapshot save."),
    as_json: bool = json_opt("the header"),
) -> None:
    """Check a snapshot file (size, checksum) and show what it covers.

    Example: tsc snapshot inspect backup.tscsnap
    """
    header, _ = read_snapshot_file(file)
    if as_json:
        emit_json(header.__dict__)
        return
    created = datetime.datetime.fromtimestamp(header.created_unix, datetime.timezone.utc)
    emit_table(
        str(file),
        ["field", "value"],
        [
            ["index", header.index],
            ["term", header.term],
            ["size", f"{header.size} bytes"],
            ["sha256", header.sha256],
            ["created", created.isoformat(timespec="seconds")],
            ["taken from", header.node],
            ["checksum", "ok"],
        ],
    )


@app.command("restore", epilog=EPILOG)
@handles_errors
def restore(
    file: Path = typer.Argument(..., help="A file written by tsc snapshot save."),
    config: Path = ConfigOpt,
    address: str = CommandAddressOpt,
    yes: bool = typer.Option(False, "--yes", help="Really replace the cluster's whole state."),
    timeout: float = timeout_opt(60.0, "Seconds to wait for the commit."),
) -> None:
    """Replace the cluster's state with a snapshot (to seed a new cluster).

    Sent to the node's restore endpoint (POST /v1/snapshot/restore), the bytes are staged on
    every member and one small log entry restores them, so every node restores the same bytes
    at the same index. Up to command.max_backup_bytes (1 GiB by default).
    Example: tsc snapshot restore backup.tscsnap --config node1.toml --yes
    """
    header, data = read_snapshot_file(file)
    if not yes:
        raise fail("restore replaces the whole state of the cluster; add --yes", exit_codes.USAGE)
    with command_client(config, address, timeout + 5) as client, stderr.status("restoring..."):
        outcome = client.restore_snapshot(data, sha256=header.sha256, timeout=timeout + 5)
    if outcome.error is not None:
        raise fail(f"restore failed: {outcome.error}", exit_codes.FAILED)
    emit_line(
        f"restored {header.size} bytes (snapshot index {header.index}) at index {outcome.index}"
    )
