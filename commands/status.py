"""``tsc status``: the whole cluster at a glance, asked of every member at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

import tsconsensus as tsc

from . import exit_codes
from .exit_codes import EPILOG
from .render import emit_json, handles_errors, stdout
from .target import ConfigOpt, MonitorAddressOpt, json_opt, resolve_monitor, timeout_opt


def gather(first: str, source: str | None, monitor_port: int, timeout: float) -> dict[str, Any]:
    """Ask the first node for the members, then every member's monitor port concurrently.

    Returns ``{"leader", "term", "has_quorum", "healthy", "nodes": [...]}``; an unreachable
    member is a node with ``reachable: false`` and its ``error``, never an exception.
    """
    with tsc.NodeClient(first, timeout=timeout, source_address=source) as client:
        seed = client.status()
    ids = [m["id"] for m in seed["members"]]
    hosts = {m["id"]: m.get("address") or _host(m["id"]) for m in seed["members"]}

    def ask(node_id: str) -> dict[str, Any]:
        try:
            address = str(tsc.NodeAddress(hosts[node_id], monitor_port))
            with tsc.NodeClient(address, timeout=timeout, source_address=source) as c:
                return {"id": node_id, "reachable": True, "status": c.status()}
        except tsc.TsconsensusError as exc:
            return {"id": node_id, "reachable": False, "error": str(exc)}

    with ThreadPoolExecutor(max_workers=min(16, len(ids))) as pool:
        answers = list(pool.map(ask, ids))
    statuses = {a["id"]: a["status"] for a in answers if a["reachable"]}
    leaders = sorted({s["node_id"] for s in statuses.values() if s["state"] == "leader"})
    leader_status = statuses.get(leaders[0]) if len(leaders) == 1 else None
    leader_view = {m["id"]: m for m in (leader_status or {}).get("members", [])}
    leader_commit = leader_status["commit_index"] if leader_status else None
    nodes = []
    for answer in answers:
        node_id = answer["id"]
        row: dict[str, Any] = {"id": node_id, "address": hosts[node_id]}
        if not answer["reachable"]:
            row.update(reachable=False, error=answer["error"])
        else:
            s = answer["status"]
            seen = leader_view.get(node_id, {})
            row.update(
                reachable=True,
                state=s["state"],
                leader=s["state"] == "leader",
                term=s["term"],
                commit_index=s["commit_index"],
                applied_index=s["applied_index"],
                lag=None if leader_commit is None else max(0, leader_commit - s["applied_index"]),
                connected=True if node_id in leaders else seen.get("connected"),
                last_contact_s=None if node_id in leaders else seen.get("last_contact_s"),
            )
        nodes.append(row)
    quorum = sum(1 for n in nodes if n.get("reachable")) > len(nodes) / 2
    healthy = len(leaders) == 1 and quorum and bool(leader_status and leader_status["has_quorum"])
    return {
        "leader": leaders[0] if len(leaders) == 1 else None,
        "leaders": leaders,
        "term": max((s["term"] for s in statuses.values()), default=None),
        "has_quorum": quorum,
        "healthy": healthy,
        "nodes": nodes,
    }


def _host(node_id: str) -> str:
    try:
        return tsc.NodeAddress.parse(node_id).host
    except tsc.InvalidAddressError:
        return node_id  # shown as the node reported it


def _cell(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def render(view: dict[str, Any]) -> Table:
    title = (
        f"leader {view['leader']}  term {view['term']}"
        if view["leader"]
        else f"NO SINGLE LEADER ({', '.join(view['leaders']) or 'none'})"
    )
    table = Table(
        title=title, header_style="bold", title_style="green" if view["healthy"] else "bold red"
    )
    table.add_column("node", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for column in ("term", "commit", "applied", "lag", "conn", "contact"):
        table.add_column(column, no_wrap=True, justify="right")
    for n in view["nodes"]:
        if not n["reachable"]:
            table.add_row(n["id"], Text("unreachable", style="red"), "", "", "", "", "", "")
            continue
        state = Text("★ leader", style="bold green") if n["leader"] else Text(n["state"])
        connected = n["connected"]
        table.add_row(
            n["id"],
            state,
            str(n["term"]),
            str(n["commit_index"]),
            str(n["applied_index"]),
            _cell(n["lag"]),
            "-" if connected is None else ("yes" if connected else Text("no", style="red")),
            _cell(n["last_contact_s"], "s"),
        )
    return table


@handles_errors
def status_command(
    config: Path = ConfigOpt,
    address: str = MonitorAddressOpt,
    as_json: bool = json_opt("the cluster's state"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between --watch refreshes."),
    timeout: float = timeout_opt(2.0, "Seconds to wait for each node."),
) -> None:
    """Show every member: state, term, commit and applied index, lag behind the leader,
    connected, last contact. Unreachable members are shown as such.

    Exit code 0 when the cluster has one leader and a quorum, 1 otherwise.
    Example: tsc status --config node1.toml --watch
    """
    first, source, monitor_port = resolve_monitor(config, address)
    if watch:
        with Live(
            render(gather(first, source, monitor_port, timeout)), console=stdout, auto_refresh=False
        ) as live:
            try:
                while True:
                    time.sleep(interval)
                    try:
                        live.update(
                            render(gather(first, source, monitor_port, timeout)), refresh=True
                        )
                    except tsc.TsconsensusError as exc:
                        live.update(Text(f"{first}: {exc}", style="red"), refresh=True)
            except KeyboardInterrupt:
                return
    view = gather(first, source, monitor_port, timeout)
    if as_json:
        emit_json(view)
    else:
        stdout.print(render(view))
    if not view["healthy"]:
        raise typer.Exit(exit_codes.FAILED)


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EPILOG)(status_command)
