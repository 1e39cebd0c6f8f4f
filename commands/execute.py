"""``tsc exec``: execute one command on the cluster through a node."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

import tsconsensus as tsc

from . import exit_codes
from .exit_codes import EPILOG
from .render import emit_json, emit_value, fail, handles_errors, stderr
from .target import CommandAddressOpt, ConfigOpt, command_client, json_opt, timeout_opt


def parse_args(text: str) -> Any:
    """``--args``: JSON text, ``@FILE`` for a file's content, ``-`` for standard input.

    Whatever is wrong with it (unreadable, not UTF-8, not JSON, nested deeper than
    ``tsconsensus.MAX_JSON_DEPTH``) is one red line and exit code 2.
    """
    source = "--args"
    raw: str | bytes = text
    if text == "-":
        raw, source = sys.stdin.buffer.read(), "standard input"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            raw, source = path.read_bytes(), str(path)
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}", exit_codes.USAGE) from None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(
                f"{source} is not UTF-8 text (byte {exc.start}); JSON must be UTF-8",
                exit_codes.USAGE,
            ) from None
    try:
        return tsc.parse_json(raw, what=source)
    except tsc.InvalidJSONError as exc:
        raise fail(str(exc), exit_codes.USAGE) from None


@handles_errors
def exec_command(
    name: str = typer.Option(..., "--name", "-n", help="Command name, e.g. set, get, cas."),
    args: str = typer.Option(
        "null", "--args", "-a", help="Arguments as JSON; @FILE reads a file, - reads stdin."
    ),
    config: Path = ConfigOpt,
    address: str = CommandAddressOpt,
    request_id: str = typer.Option(
        None, "--request-id", help="Makes retries safe: the same id is never applied twice."
    ),
    timeout: float = timeout_opt(10.0, "Seconds to wait for the commit."),
    as_json: bool = json_opt("the whole response"),
) -> None:
    """Execute a command on the cluster: any node forwards it to the leader.

    Example: tsc exec --config node1.toml --name set --args '{"k": 1}'
    """
    parsed = parse_args(args)
    with command_client(config, address, timeout + 5.0) as client:
        outcome = client.execute(name, parsed, request_id=request_id, timeout=timeout)
    if as_json:
        emit_json({"result": outcome.result, "error": outcome.error, "index": outcome.index})
        if outcome.error is not None:
            raise typer.Exit(exit_codes.FAILED)
        return
    if outcome.error is not None:
        raise fail(f"{name} failed: {outcome.error} (index {outcome.index})", exit_codes.FAILED)
    emit_value(None, outcome.result)
    stderr.print(f"[dim]committed at index {outcome.index}[/]")


def register(app: typer.Typer) -> None:
    app.command("exec", epilog=EPILOG)(exec_command)
