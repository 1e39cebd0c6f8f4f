"""Checks of one node's setup from its config, each a verdict with what to fix (``tsc doctor``).

:func:`diagnose` runs, in order: the tailnet backend answers (tailscaled over its socket; the
``static`` backend only checks that this node's address is listed), this node carries the
cluster tag, what runs on its address, its raft/command/monitor ports (free, or held by this
very node), its state directory (writable, identity readable) and the directory's lock (free,
or held by the running node; see :mod:`.doctor_local`), the cluster secret, and every other
tagged peer (online; its Raft port and monitor answer this node). In userspace mode it asks
the node through its admin socket, checks the ports on loopback where the node listens, and
reaches the peers through tailscaled, as the node does. It changes nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .address import NodeAddress
from .client import NodeClient
from .config import Config
from .dialer import Networking, networking
from .doctor_local import look_here, node_check, port_check, state_dir_checks
from .errors import NotAuthorizedError, TsconsensusError
from .runner import admin_endpoint, build_tailnet
from .tailnet import Peer, Tailnet
from .types import SetupCheck

OK, WARN, FAIL, SKIP = SetupCheck.STATUSES


def diagnose(config: Config, *, timeout: float = 2.0) -> list[SetupCheck]:
    """Check the setup of the node that ``config`` describes, from the machine it runs on;
    ``timeout`` bounds each question to tailscaled, this node and each peer."""
    tailnet, me, first = _tailnet(config)
    checks = [first]
    if tailnet is None or me is None:
        skipped = "needs the tailnet: fix the check above first"
        names = ["tag", "node", "raft port", "command port", "monitor port", "peers"]
        checks += [SetupCheck(name, SKIP, skipped) for name in names]
        return [*checks, *state_dir_checks(config, None), _secret(config)]
    checks.append(_tag(config, me))
    try:
        net = networking(tailnet, me, config)
    except TsconsensusError as exc:
        checks.append(SetupCheck("mode", FAIL, str(exc), "check tailnet.mode"))
        return [*checks, *state_dir_checks(config, None), _secret(config)]
    if net.userspace:
        # the node listens on loopback, where this process is no tailnet peer: ask it
        # through its admin socket, and reach the peers through tailscaled
        checks.append(
            SetupCheck(
                "mode",
                OK,
                f"userspace networking: the node listens on {net.listen_host} and dials "
                "its peers through tailscaled",
            )
        )
        endpoint = admin_endpoint(config, userspace=True)  # the mode is decided: not asked again
        here = look_here(config, net.listen_host, timeout, endpoint=endpoint)
    else:
        here = look_here(config, me.address, timeout)
    checks.append(node_check(config, here))
    checks.append(port_check("raft", config.ports.raft, here))
    checks.append(port_check("command", config.ports.command, here))
    if config.monitor.serve:
        checks.append(port_check("monitor", config.ports.monitor, here))
    else:
        checks.append(SetupCheck("monitor port", SKIP, "monitor.serve = false"))
    checks += state_dir_checks(config, here)
    checks.append(_secret(config))
    checks += _peers(config, tailnet, me, timeout, net)
    return checks


# -- tailnet and tag -------------------------------------------------------------------------


def _tailnet(config: Config) -> tuple[Tailnet | None, Peer | None, SetupCheck]:
    t = config.tailnet
    try:
        tailnet = build_tailnet(config)
        me = tailnet.self_peer()
    except TsconsensusError as exc:
        if t.backend == "static":
            fix = "list this node's tailnet.address among tailnet.peers"
        else:
            fix = (
                "start tailscaled and run `tailscale up`; check tailnet.socket_path "
                "(macOS: /var/run/tailscaled.socket)"
            )
        return None, None, SetupCheck("tailnet", FAIL, str(exc), fix)
    if t.backend == "static":
        detail = (
            f"static backend (no tailscaled asked): this node's address {me.address} is one "
            f"of the {len(t.peers)} peers listed in the config"
        )
    else:
        detail = (
            f"tailscaled at {t.socket_path} answers and is running: this node is "
            f"{me.hostname or me.id} ({me.address})"
        )
    return tailnet, me, SetupCheck("tailnet", OK, detail)


def _tag(config: Config, me: Peer) -> SetupCheck:
    tag = config.cluster.tag
    if me.has_tag(tag):
        return SetupCheck("tag", OK, f"this node carries {tag}")
    tags = ", ".join(me.tags) or "no tags"
    if config.tailnet.backend == "static":
        fix = f"add {tag!r} to this node's tags in tailnet.peers"
    else:
        fix = f"tailscale up --advertise-tags={tag} (the tag needs an owner in tagOwners)"
    return SetupCheck("tag", FAIL, f"this node has {tags}, not the cluster tag {tag}", fix)


def _secret(config: Config) -> SetupCheck:
    secret, fix = (
        config.cluster.secret,
        ("set cluster.secret to the same random value on every node (openssl rand -hex 16)"),
    )
    if secret:
        if len(secret) < 16:
            return SetupCheck(
                "secret", WARN, f"cluster.secret is set but short ({len(secret)} chars)", fix
            )
        return SetupCheck("secret", OK, f"cluster.secret is set ({len(secret)} chars)")
    if config.cluster.insecure_no_secret:
        return SetupCheck(
            "secret",
            WARN,
            "no cluster.secret (insecure_no_secret = true): anyone who can run code on a member "
            "machine could forge Raft traffic",
            fix,
        )
    return SetupCheck("secret", FAIL, "cluster.secret is empty: the node refuses to start", fix)


# -- peers -----------------------------------------------------------------------------------


def _peers(
    config: Config, tailnet: Tailnet, me: Peer, timeout: float, net: Networking
) -> list[SetupCheck]:
    tag = config.cluster.tag
    try:
        tagged = [p for p in tailnet.peers() if p.has_tag(tag) and not p.is_self]
    except TsconsensusError as exc:
        return [SetupCheck("peers", FAIL, f"cannot list the tailnet's nodes: {exc}")]
    if not tagged:
        return [
            SetupCheck("peers", OK, f"no other node carries {tag}: a cluster of this node alone")
        ]
    connect: Callable[[str, int, float], socket.socket]
    client_options: dict[str, Any]
    if net.userspace and net.http_transport is not None:
        connect = tailnet.dial  # type: ignore[attr-defined]
        client_options = {"transport": net.http_transport(1)}
    else:

        def connect(host: str, port: int, wait: float) -> socket.socket:
            return socket.create_connection(
                (host, port), timeout=wait, source_address=(me.address, 0)
            )

        client_options = {"source_address": me.address}
    with ThreadPoolExecutor(max_workers=min(16, len(tagged))) as pool:
        return list(
            pool.map(lambda p: _peer(config, me, p, timeout, connect, client_options), tagged)
        )


def _peer(
    config: Config,
    me: Peer,
    peer: Peer,
    timeout: float,
    connect: Callable[[str, int, float], socket.socket],
    client_options: dict[str, Any],
) -> SetupCheck:
    name = f"peer {peer.hostname or peer.id}"
    if not peer.online:
        return SetupCheck(
            name,
            FAIL,
            f"{peer.address} is offline in the tailnet",
            "bring it up (tailscale up) and start its node",
        )
    ports = config.ports
    raft = str(NodeAddress(peer.address, ports.raft))
    try:
        with connect(peer.address, ports.raft, timeout):
            pass
    except OSError as exc:
        refused = isinstance(exc, ConnectionRefusedError)
        why = "connection refused: its node is not running" if refused else str(exc)
        fix = (
            "start its node (tsc node start --config FILE on that machine)"
            if refused
            else "check that the tailnet policy lets tagged nodes reach each other's ports"
        )
        return SetupCheck(name, FAIL, f"raft port {raft}: {why}", fix)
    if not config.monitor.serve:
        return SetupCheck(name, OK, f"raft port {raft} answers")
    monitor = str(NodeAddress(peer.address, ports.monitor))
    try:
        with NodeClient(monitor, timeout=timeout, **client_options) as client:
            client.request("GET", "/healthz")
    except NotAuthorizedError:
        return SetupCheck(
            name,
            FAIL,
            f"{monitor} refuses this node",
            f"does it see this node ({me.address}) with {config.cluster.tag}?",
        )
    except TsconsensusError as exc:
        return SetupCheck(name, FAIL, f"monitor {monitor}: {exc}", "is its node running?")
    return SetupCheck(name, OK, f"{peer.address}: raft port and monitor answer this node")
