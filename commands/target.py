"""Which node a command talks to: ``--config FILE`` (this node) or ``--address host:port``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

import tsconsensus as tsc

from . import talking_to

CONFIG_HELP = (
    "The node's TOML config; tsc then talks to that node, as that node (in userspace mode "
    "through its admin socket, STATE_DIR/admin.sock)."
)

ConfigOpt = typer.Option(None, "--config", "-c", help=CONFIG_HELP, envvar="TSC_CONFIG")
CommandAddressOpt = typer.Option(
    None, "--address", help="host:port of a node's command port, instead of --config."
)
MonitorAddressOpt = typer.Option(
    None, "--address", help="host:port of a node's monitor port, instead of --config."
)


def json_opt(what: str) -> Any:
    """``--json``: print ``what`` as JSON instead of a table."""
    return typer.Option(False, "--json", help=f"Print {what} as JSON.")


def timeout_opt(default: float, help_text: str) -> Any:
    """``--timeout`` in seconds."""
    return typer.Option(default, "--timeout", help=help_text)


def _resolve(config: Path | None, address: str | None, port_of: str) -> tuple[str, str | None]:
    """(``host:port`` to talk to, source address to connect from), recorded in
    :mod:`.talking_to` so that an error line names the node and the address."""
    if config is not None and address is not None:
        raise tsc.ConfigError("--address", address, "give either --config or --address, not both")
    if address is not None:
        url = address.startswith(("http://", "https://"))
        bare = address.split("://", 1)[1].rstrip("/") if url else address
        target = str(tsc.NodeAddress.parse(bare))
        talking_to.talking_to(None, target)
        return target, None
    if config is None:
        raise tsc.ConfigError("--config", None, "is required (or give --address host:port)")
    talking_to.talking_to(str(config), None)  # a bad key is named with the file it is in
    cfg = tsc.Config.load(config)
    admin = tsc.admin_endpoint(cfg)  # userspace mode: the node's admin socket, not TCP
    if admin is not None:
        talking_to.talking_to(config.stem, admin)
        return admin, None
    if cfg.tailnet.backend == "localapi":
        talking_to.talking_to(str(config), f"tailscaled at {cfg.tailnet.socket_path}")
    elif cfg.tailnet.backend == "managed":
        talking_to.talking_to(str(config), "the node's own tailscaled (under its state_dir)")
    me = tsc.build_tailnet(cfg).self_peer()
    target = str(tsc.NodeAddress(me.address, getattr(cfg.ports, port_of)))
    talking_to.talking_to(me.hostname or config.stem, target)
    return target, me.address


def command_target(config: Path | None, address: str | None) -> tuple[str, str | None]:
    """(the command port's address or the admin socket, source address to connect from): for
    a caller that opens several clients to one node and should decide where it is once."""
    return _resolve(config, address, "command")


def command_client(config: Path | None, address: str | None, timeout: float) -> tsc.NodeClient:
    target, source = command_target(config, address)
    return tsc.NodeClient(target, timeout=timeout, source_address=source)


def monitor_client(config: Path | None, address: str | None, timeout: float) -> tsc.NodeClient:
    target, source = _resolve(config, address, "monitor")
    return tsc.NodeClient(target, timeout=timeout, source_address=source)


def resolve_monitor(config: Path | None, address: str | None) -> tuple[str, str | None, int]:
    """(monitor address to ask first, source address to connect from, monitor port)."""
    target, source = _resolve(config, address, "monitor")
    if config is not None and tsc.is_admin_socket(target):
        return target, None, tsc.Config.load(config).ports.monitor
    return target, source, tsc.NodeAddress.parse(target).port


def member_transport(config: Path | None, first: str) -> Any:
    """In userspace mode, what dials the other members through this host's tailscaled (a
    factory of httpx transports, for ``gather``); None where TCP reaches them directly.
    ``first``: what :func:`resolve_monitor` gave; only in userspace mode is it the admin
    socket, so it carries the mode and tailscaled is not asked again."""
    if config is None:
        return None
    cfg = tsc.Config.load(config)
    return tsc.member_transport(cfg, userspace=tsc.is_admin_socket(first))
