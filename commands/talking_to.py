"""Which node a command is talking to, and at which address, so that every one-line error can
name both (``error: node1 (127.0.0.1:6271): set failed: ...``).

:mod:`.target` records the node as soon as it knows it (from ``--config`` or ``--address``);
:func:`.render.fail` puts it in front of the message unless the message already names it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Peer:
    node: str | None = None
    """The node's name: its tailnet hostname (from ``--config``), or the config file while it
    is being read; ``None`` when the user named the node by address only."""
    address: str | None = None
    """What the command talked to: ``host:port``, or ``tailscaled at SOCKET``."""


_current = Peer()


def reset() -> None:
    """Forget the node (each command starts knowing none)."""
    _current.node = _current.address = None


def talking_to(node: str | None, address: str | None) -> None:
    _current.node, _current.address = node, address


def current() -> Peer:
    return Peer(_current.node, _current.address)


def with_node(message: str) -> str:
    """``message`` prefixed with the node and address it concerns, leaving out what the message
    already says (the library's client errors name the URL they talked to)."""
    node, address = _current.node, _current.address
    missing_address = address is not None and address not in message
    if node is not None and not message.startswith(node):
        return f"{node} ({address}): {message}" if missing_address else f"{node}: {message}"
    if not missing_address:
        return message
    if node is None:
        return f"node at {address}: {message}"
    return f"{message} (at {address})"
