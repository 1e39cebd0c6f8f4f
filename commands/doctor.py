"""``tsc doctor``: check a node's setup from its config, one line per check with what to fix."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

import tsconsensus as tsc

from . import exit_codes, talking_to
from .exit_codes import EPILOG
from .render import emit_json, handles_errors, stdout
from .target import json_opt, timeout_opt

MARKS = {
    "ok": ("✓", "green"),
    "warn": ("!", "yellow"),
    "fail": ("✗", "bold red"),
    "skip": ("-", "dim"),
}
WIDTH = max(len(name) for name in ("command port", "monitor port", "state lock")) + 2


def _line(check: tsc.SetupCheck) -> Text:
    mark, style = MARKS.get(check.status, ("?", ""))
    line = Text.assemble((f"{mark} ", style), (check.name.ljust(WIDTH), "bold"), check.detail)
    if check.fix:
        line.append(f"  → {check.fix}", style="yellow" if check.status != "fail" else "red")
    return line


@handles_errors
def doctor_command(
    config: Path = typer.Option(
        ..., "--config", "-c", help="The node's TOML config; run tsc doctor on that node's machine."
    ),
    as_json: bool = json_opt("every check"),
    timeout: float = timeout_opt(2.0, "Seconds to wait for tailscaled, this node and each peer."),
) -> None:
    """Check a node's setup: the tailnet backend answers (tailscaled; the static backend checks
    that this node is listed), this node carries the cluster tag, its ports are free or held by
    this node, its state directory is writable and locked only by this node, the secret is set,
    every tagged peer is online and answers. One line per check: ✓ ok, ! works but mind it,
    ✗ wrong (with what to fix), - skipped. Changes nothing.

    Exit code 0 when no check fails (warnings allowed), 1 when any fails, 3 when the config
    cannot be read.
    Example: tsc doctor --config /etc/tsconsensus.toml
    """
    talking_to.talking_to(str(config), None)
    cfg = tsc.Config.load(config)
    checks = tsc.diagnose(cfg, timeout=timeout)
    bad = [c for c in checks if c.status == "fail"]
    if as_json:
        emit_json({"config": str(config), "ok": not bad, "checks": [c.to_json() for c in checks]})
    else:
        for check in checks:
            stdout.print(_line(check))
        summary = f"{len(bad)} of {len(checks)} checks failed" if bad else "every check passed"
        stdout.print(Text(summary, style="bold red" if bad else "bold green"))
    if bad:
        raise typer.Exit(exit_codes.FAILED)


def register(app: typer.Typer) -> None:
    app.command("doctor", epilog=EPILOG)(doctor_command)
