"""``tsc peers`` and ``tsc members``: who is in the tailnet and who is in the cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

import tsconsensus as tsc

from .exit_codes import EPILOG
from .render import emit_json, emit_line, emit_table, handles_errors
from .target import (
    CommandAddressOpt,
    ConfigOpt,
    MonitorAddressOpt,
    command_client,
    json_opt,
    monitor_client,
    timeout_opt,
)

members_app = typer.Typer(
    help="List and remove members of the Raft configuration.", no_args_is_help=True
)


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")


@handles_errors
def peers_command(
    config: Path = ConfigOpt,
    address: str = MonitorAddressOpt,
    as_json: bool = json_opt("the peers"),
    timeout: float = timeout_opt(5.0, "Seconds to wait for the node."),
) -> None:
    """Show the tailnet nodes that carry the cluster tag: addresses, online, member or not.

    Example: tsc peers --config node1.toml
    """
    with monitor_client(config, address, timeout) as client:
        peers = client.peers()
    if as_json:
        emit_json(peers)
        return
    rows = [
        [
            p["hostname"] + (" (this node)" if p["self"] else ""),
            ", ".join(p["addresses"]),
            _yes_no(p["online"]),
            _yes_no(p["member"]),
        ]
        for p in peers
    ]
    emit_table(None, ["host", "addresses", "online", "member"], rows)


@members_app.command("list", epilog=EPILOG)
@handles_errors
def members_list(
    config: Path = ConfigOpt,
    address: str = MonitorAddressOpt,
    as_json: bool = json_opt("the members"),
    timeout: float = timeout_opt(5.0, "Seconds to wait for the node."),
) -> None:
    """List the members of the Raft configuration as the node sees them.

    Example: tsc members list --config node1.toml
    """
    with monitor_client(config, address, timeout) as client:
        status = client.status()
    members = status["members"]
    if as_json:
        emit_json(members)
        return
    rows = [
        [
            m["id"],
            Text("leader", style="bold green") if m["id"] == status["leader"] else "",
            _yes_no(m["connected"]),
        ]
        for m in members
    ]
    emit_table(None, ["member", "role", "connected"], rows)


@members_app.command("remove", epilog=EPILOG)
@handles_errors
def members_remove(
    member: str = typer.Argument(
        ..., help="The member: its id (16 hex digits, see tsc status) or its host:raft_port."
    ),
    config: Path = ConfigOpt,
    address: str = CommandAddressOpt,
    timeout: float = timeout_opt(15.0, "Seconds to wait for the change."),
) -> None:
    """Remove a member from the Raft configuration (forwarded to the leader).

    Use it to replace a dead node: remove its old id, wipe its state directory and start it
    again (it joins as a new member). Exit code 1 if MEMBER is not a member (nothing changes).
    Example: tsc members remove 9f86d081884c7d65 --config node1.toml
    """
    if not _is_member_id(member):
        member = str(tsc.NodeAddress.parse(member))  # an address, spelled canonically
    with command_client(config, address, timeout) as client:
        members = client.remove_member(member)
    emit_line(f"removed {member}; members now: {', '.join(members)}")


def _is_member_id(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text)


def register(app: typer.Typer) -> None:
    app.command("peers", epilog=EPILOG)(peers_command)
    app.add_typer(members_app, name="members")
