"""How ``tsc status`` draws the cluster: the members table (also the one-shot view) and the
``--watch`` dashboard around it: leader and time since it took over, commands/s and p99
latency over the last seconds, a sparkline of the commit rate, recent events. Every line is cut
to the terminal's width (ellipsis), never wrapped: readable at 80 columns."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from .watch_model import Event, Rates, Watch, short

SPARKS = "▁▂▃▄▅▆▇█"
EVENT_STYLE = {
    "election": "bold yellow",
    "no-leader": "bold red",
    "no-answer": "bold red",
    "unreachable": "red",
    "answers": "green",
    "joined": "cyan",
    "removed": "magenta",
    "snapshot": "blue",
}


def members_table(view: dict[str, Any], *, short_ids: bool = False) -> Table:
    """One row per member: state, term, commit and applied index, lag behind the leader,
    connected to the leader, last contact seen by the leader."""
    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    # the one column that gives way when the screen is narrow: its cells are cut, never wrapped
    table.add_column("node", overflow="ellipsis", min_width=8)
    table.add_column("state", no_wrap=True)
    for column in ("term", "commit", "applied", "lag", "conn", "contact"):
        table.add_column(column, no_wrap=True, justify="right")
    for n in view["nodes"]:
        name = _line(f"{short(n['id'])} {n['address']}" if short_ids else n["id"])
        if not n["reachable"]:
            table.add_row(name, Text("unreachable", style="red"), "", "", "", "", "", "")
            continue
        state = Text("★ leader", style="bold green") if n["leader"] else Text(n["state"])
        connected = n["connected"]
        table.add_row(
            name,
            state,
            str(n["term"]),
            str(n["commit_index"]),
            str(n["applied_index"]),
            _cell(n["lag"]),
            "-" if connected is None else ("yes" if connected else Text("no", style="red")),
            seconds(n["last_contact_s"]),
        )
    return table


def title(view: dict[str, Any]) -> Text:
    if view["leader"]:
        return Text(
            f"leader {view['leader']}  term {view['term']}",
            style="green" if view["healthy"] else "bold red",
        )
    return Text(f"NO SINGLE LEADER ({', '.join(view['leaders']) or 'none'})", style="bold red")


def _cell(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 10 else f"{value:.0f}s"


def _line(*parts: tuple[str, str] | str) -> Text:
    text = Text.assemble(*parts)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h03m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "> 5 s"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def rate(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 10 else f"{value:.1f}")


class Sparkline:
    """The last values of a series as block characters, as many as the width allows."""

    def __init__(self, label: str, values: Iterable[float], unit: str) -> None:
        self.label, self.values, self.unit = label, list(values), unit

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        top = max(self.values, default=0.0)
        suffix = f" max {rate(top)}{self.unit}"
        width = max(0, options.max_width - len(self.label) - len(suffix))
        shown = self.values[-width:] if width else []
        bars = "".join(
            SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] if top else "▁"
            for v in shown
        )
        yield _line((self.label, "bold"), (bars.ljust(width), "cyan"), (suffix, "dim"))


def _clock(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall).strftime("%H:%M:%S")


def dashboard(
    watch: Watch, *, asked: str, interval: float, now: float, wall: float, events: int = 8
) -> RenderableType:
    """The whole ``--watch`` screen for the current state of ``watch``."""
    parts: list[RenderableType] = [
        _line(
            (_clock(wall), "bold"),
            (f"  asking {asked} every {interval:g}s  Ctrl-C quits", "dim"),
        )
    ]
    view = watch.view
    if watch.error is not None:
        parts.append(_line((f"no answer: {watch.error}", "bold red")))
    if view is None:
        parts.append(_line(("waiting for the first answer...", "dim")))
        return Group(*parts)
    heading = title(view)
    led = watch.leader_for(now)
    if led is not None:
        heading.append(f"  for {'' if led[1] else '≥ '}{duration(led[0])}", style="dim")
    heading.no_wrap, heading.overflow = True, "ellipsis"
    parts += [heading, members_table(view, short_ids=True)]
    parts += [_rates_line(watch.rates()), Sparkline("commits/s ", watch.commit_history, "/s")]
    parts.append(_line(("recent events", "bold")))
    parts += [_event_line(e) for e in list(watch.events)[-events:]]
    return Group(*parts)


def _rates_line(rates: Rates) -> Text:
    return _line(
        ("commands/s ", "bold"),
        (f"{rate(rates.commands_per_s):>6}", "cyan"),
        ("   p99 ", "bold"),
        (f"{latency(rates.p99_s):>9}", "cyan"),
        ("   commits/s ", "bold"),
        (f"{rate(rates.commits_per_s):>6}", "cyan"),
        (f"   (last {rates.window_s:g}s)", "dim"),
    )


def _event_line(event: Event) -> Text:
    return _line((f"{_clock(event.at)} ", "dim"), (event.text, EVENT_STYLE.get(event.kind, "")))
