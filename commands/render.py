"""The one output path of ``tsc``: rich tables for people, ``--json`` for scripts, one red line
for errors. Nothing else in ``commands/`` prints."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import tsconsensus as tsc

from . import exit_codes, talking_to

F = TypeVar("F", bound=Callable[..., Any])

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
screen = Console(highlight=False)
"""The ``--watch`` dashboard's console: stdout, every line cut to the terminal's width."""


def emit_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit_json_line(data: Any) -> None:
    """One JSON object on one line of stdout (``--watch --json``: one per refresh)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def emit_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row])
    stdout.print(table)


def emit_value(label: str | None, value: Any) -> None:
    """A JSON value for people: pretty-printed, with an optional dim label line."""
    if label:
        stdout.print(Text(label, style="dim"))
    text = json.dumps(value, indent=2, ensure_ascii=False)
    # A lone surrogate (JSON "\\ud800") cannot be written as UTF-8: show it escaped.
    stdout.print(Text(text.encode("utf-8", "backslashreplace").decode("utf-8")))


def emit_line(text: str, style: str | None = None) -> None:
    stdout.print(Text(text, style=style or ""))


def fail(message: str, code: int) -> typer.Exit:
    """Print one red line on stderr, naming the node and address the command talked to (see
    :mod:`.talking_to`), and return the Exit to raise."""
    line = talking_to.with_node(message)
    stderr.print(Text.assemble(("error: ", "bold red"), (line, "red")))
    return typer.Exit(code)


def handles_errors(func: F) -> F:
    """Turn library errors into one red line and the documented exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        talking_to.reset()
        try:
            return func(*args, **kwargs)
        except tsc.TsconsensusError as exc:
            raise fail(str(exc), exit_codes.for_error(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
