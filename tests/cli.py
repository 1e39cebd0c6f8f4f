"""One helper around Typer's runner for in-process CLI tests."""

from __future__ import annotations

from dataclasses import dataclass

from typer.testing import CliRunner

from tsconsensus_cli.app import app


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, input: str | bytes | None = None) -> CliResult:
    result = CliRunner().invoke(app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)
