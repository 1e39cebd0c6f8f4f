"""``tsc dev``: a local cluster in the background, no Tailscale needed."""

from __future__ import annotations

from pathlib import Path

import typer

import tsconsensus as tsc
from tsconsensus.testing import LocalCluster

from .exit_codes import EPILOG
from .render import emit_json, emit_line, emit_table, handles_errors, stderr
from .target import json_opt, timeout_opt

app = typer.Typer(
    help="A local cluster on 127.0.0.x addresses (static tailnet), for trying tsc.",
    no_args_is_help=True,
)


@app.command("up", epilog=EPILOG)
@handles_errors
def up(
    nodes: int = typer.Option(3, "--nodes", "-n", min=1, max=9, help="How many nodes."),
    directory: Path = typer.Option(
        Path(".tsc-dev"), "--dir", "-d", help="Where configs, logs, PIDs and state go."
    ),
    base_address: str = typer.Option(
        "127.0.0.1", "--base-address", help="Loopback address of node1; node N adds N-1."
    ),
    tag: str = typer.Option("tag:dev", "--tag", help="The cluster tag of the static tailnet."),
    state_machine: str = typer.Option(
        "", "--state-machine", help="module:factory of your machine (default: built-in KV)."
    ),
    in_memory: bool = typer.Option(False, "--in-memory", help="Keep no state on disk."),
    tailnet: str = typer.Option(
        "static",
        "--tailnet",
        help="static: peers listed in the configs. emulated: each node asks a fake tailscaled "
        "(a background process), so tags can be changed with tsc dev tag.",
    ),
    timeout: float = timeout_opt(30.0, "Seconds to wait for a leader."),
    as_json: bool = json_opt("the nodes"),
) -> None:
    """Start an N-node cluster in the background and wait until it has a leader.

    Example: tsc dev up --nodes 3 --dir .tsc-dev
    """
    cluster = LocalCluster(
        directory,
        nodes=nodes,
        base_address=base_address,
        cluster_tag=tag,
        state_machine=state_machine,
        persistent=not in_memory,
        tailnet=tailnet,
        emulator_process=tailnet == "emulated",
    )
    if (
        any(cluster.running(i) for i in range(nodes))
        if (directory / "cluster.json").exists()
        else False
    ):
        raise tsc.TsconsensusError(
            f"a cluster is already running in {directory}; tsc dev down first"
        )
    try:
        with stderr.status(f"starting {nodes} nodes, waiting for a leader..."):
            cluster.start(wait=True, timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    leader = cluster.leader_index()
    rows = [
        [
            f"node{i + 1}",
            cluster.command_address(i),
            cluster.monitor_address(i),
            cluster.pid(i),
            "leader" if i == leader else "follower",
            str(cluster.config_path(i)),
        ]
        for i in range(nodes)
    ]
    if as_json:
        keys = ["name", "command", "monitor", "pid", "state", "config"]
        emit_json([dict(zip(keys, row, strict=True)) for row in rows])
        return
    for row in rows:  # the directory is in the title; keep the table narrow
        row[-1] = Path(str(row[-1])).name
    emit_table(
        f"dev cluster in {directory}", ["node", "command", "monitor", "pid", "role", "config"], rows
    )
    first = cluster.config_path(0)
    emit_line(f"try:  tsc exec --config {first} --name set --args '{{\"k\": 1}}'")
    emit_line(f"      tsc status --config {first}")
    emit_line(f"stop: tsc dev down --dir {directory}")


@app.command("down", epilog=EPILOG)
@handles_errors
def down(
    directory: Path = typer.Option(
        Path(".tsc-dev"), "--dir", "-d", help="The cluster's directory."
    ),
) -> None:
    """Stop every node of a cluster started by `tsc dev up` (by PID; state stays on disk).

    Example: tsc dev down --dir .tsc-dev
    """
    cluster = LocalCluster.open(directory)
    running = [i for i in range(cluster.size) if cluster.running(i)]
    cluster.stop()
    emit_line(f"stopped {len(running)} node(s) in {directory}")


@app.command("tag", epilog=EPILOG)
@handles_errors
def tag(
    node: str = typer.Argument(..., help="The node's name, e.g. node3."),
    tags: list[str] = typer.Argument(None, help="Its new tags; none at all untags it."),
    directory: Path = typer.Option(
        Path(".tsc-dev"), "--dir", "-d", help="The cluster's directory."
    ),
) -> None:
    """Change a node's tags in an emulated dev tailnet (tsc dev up --tailnet emulated), live:
    untag a node and the others refuse it within seconds; tag it again and it is back.

    Example: tsc dev tag node3 --dir .tsc-dev   (untags node3)
    """
    cluster = LocalCluster.open(directory)
    names = [cluster.hostname(i) for i in range(cluster.size)]
    if node not in names:
        raise tsc.ConfigError("NODE", node, f"is not a node of {directory} ({', '.join(names)})")
    cluster.set_tags(names.index(node), tags or [])
    emit_line(f"{node} tags: {', '.join(tags) if tags else '(none)'}")
