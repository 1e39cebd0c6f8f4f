"""``tsc status``: the whole cluster at a glance, asked of every member at once; with
``--watch``, a live dashboard (or one JSON object per refresh with ``--json``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Group, RenderableType
from rich.live import Live

import tsconsensus as tsc

from . import exit_codes, talking_to
from .dashboard import dashboard, members_table, title
from .exit_codes import EPILOG
from .gather import Transports, gather
from .render import emit_json, emit_json_line, handles_errors, screen, stdout
from .target import (
    ConfigOpt,
    MonitorAddressOpt,
    json_opt,
    member_transport,
    resolve_monitor,
    timeout_opt,
)
from .watch_model import Event, Watch

MAX_EVENTS = 10


@handles_errors
def status_command(
    config: Path = ConfigOpt,
    address: str = MonitorAddressOpt,
    as_json: bool = json_opt("the cluster's state (with --watch: one object per line and refresh)"),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="A live dashboard until Ctrl-C: members, commands/s and p99 latency, commit rate, "
        "time since the leader changed, recent events (elections, joins, removals, snapshots).",
    ),
    interval: float = typer.Option(
        1.0, "--interval", min=0.1, help="Seconds between --watch refreshes."
    ),
    window: float = typer.Option(
        5.0, "--window", min=1.0, help="Seconds over which --watch computes rates and p99."
    ),
    timeout: float = timeout_opt(2.0, "Seconds to wait for each node."),
) -> None:
    """Show every member: state, term, commit and applied index, lag behind the leader,
    connected, last contact. Unreachable members are shown as such.

    Exit code 0 when the cluster has one leader and a quorum, 1 otherwise (with --watch: 0 on
    Ctrl-C). With --watch, a member that stops answering, the one asked first included, does not
    stop the dashboard: it asks the others.
    Example: tsc status --config node1.toml --watch
    """
    first, source, monitor_port = resolve_monitor(config, address)
    transport = member_transport(config, first)
    if watch:
        _watch(first, source, monitor_port, timeout, interval, window, as_json, transport)
        return
    view = gather([first], source, monitor_port, timeout, transport=transport)
    if as_json:
        emit_json(view)
    else:
        stdout.print(Group(title(view), members_table(view)))
    if not view["healthy"]:
        raise typer.Exit(exit_codes.FAILED)


def _watch(
    first: str,
    source: str | None,
    monitor_port: int,
    timeout: float,
    interval: float,
    window: float,
    as_json: bool,
    transport: Transports,
) -> None:
    model = Watch(window_s=window)
    node = talking_to.current().node
    asked = f"{node} ({first})" if node else first

    def poll() -> list[Event]:
        known = [n["monitor"] for n in (model.view or {"nodes": []})["nodes"]]
        try:
            view = gather(
                [first, *known],
                source,
                monitor_port,
                timeout,
                with_metrics=True,
                transport=transport,
            )
        except tsc.TsconsensusError as exc:
            return model.failed(str(exc), time.monotonic(), time.time())
        return model.feed(view, time.monotonic(), time.time())

    def frame() -> RenderableType:
        members = len(model.view["nodes"]) if model.view else 0
        return dashboard(
            model,
            asked=asked,
            interval=interval,
            now=time.monotonic(),
            wall=time.time(),
            events=max(3, min(MAX_EVENTS, screen.height - members - 11)),
        )

    def ticks() -> Iterator[None]:
        due = time.monotonic()
        while True:
            yield
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))

    try:
        if as_json:
            for _ in ticks():
                events = poll()
                emit_json_line(model.to_json(events, time.monotonic(), time.time()))
        elif not screen.is_terminal:  # piped: one frame after another
            for _ in ticks():
                poll()
                screen.print(frame())
        else:
            with Live(
                console=screen,
                screen=True,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live:
                for _ in ticks():
                    poll()
                    live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EPILOG)(status_command)
