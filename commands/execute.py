"""``tsc exec``: execute one command on the cluster through a node."""

from __future__ import annotations

import json
import shlex
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
        None,
        "--request-id",
        help="Makes retries safe. A command sent again with the same id (same name and args) "
        "within the cluster's dedup window (raft.dedup_window_s, 120 s by default) is applied "
        "at most once and answers with the first outcome; the same id with another command is "
        "refused. Without it tsc makes up an id and, when the outcome is unknown (exit 5), "
        "prints the command to retry with it.",
    ),
    timeout: float = timeout_opt(10.0, "Seconds to wait for the commit."),
    as_json: bool = json_opt("the whole response"),
) -> None:
    """Execute a command on the cluster: any node forwards it to the leader.

    If no leader confirms it in time the outcome is unknown (exit 5): the error line ends with
    the same command plus --request-id ID; running that is safe (applied at most once).
    Example: tsc exec --config node1.toml --name set --args '{"k": 1}'
    """
    parsed = parse_args(args)
    try:
        with command_client(config, address, timeout + 5.0) as client:
            outcome = client.execute(name, parsed, request_id=request_id, timeout=timeout)
    except tsc.NoLeaderError as exc:
        rid = exc.request_id or request_id
        again = "" if rid is None else retry_command(config, address, name, args, parsed, rid)
        retry = f": retry with: {again}" if again else ""
        raise fail(f"{exc}; outcome unknown{retry}", exit_codes.NO_LEADER) from None
    if as_json:
        emit_json({"result": outcome.result, "error": outcome.error, "index": outcome.index})
        if outcome.error is not None:
            raise typer.Exit(exit_codes.FAILED)
        return
    if outcome.error is not None:
        raise fail(f"{name} failed: {outcome.error} (index {outcome.index})", exit_codes.FAILED)
    emit_value(None, outcome.result)
    stderr.print(f"[dim]committed at index {outcome.index}[/]")


def retry_command(
    config: Path | None,
    address: str | None,
    name: str,
    args: str,
    parsed: Any,
    request_id: str,
) -> str:
    """The ``tsc exec`` command line to run again after an unknown outcome: the same node,
    name and arguments, with ``--request-id``. Arguments read from standard input are
    written out (as JSON), so the line runs on its own."""
    line = ["tsc", "exec"]
    line += ["--config", str(config)] if config is not None else ["--address", str(address)]
    line += ["--name", name]
    if args == "-":
        args = json.dumps(parsed, ensure_ascii=False)
    if args != "null":
        line += ["--args", args]
    return shlex.join([*line, "--request-id", request_id])


def register(app: typer.Typer) -> None:
    app.command("exec", epilog=EPILOG)(exec_command)
