"""The tailnet as the cluster sees it: who am I, who are my peers, who is on the other end.

:class:`Tailnet` is the protocol every backend satisfies; :class:`StaticTailnet` answers from a
fixed list (development, tests, and hosts without Tailscale). The LocalAPI backend, the one
module that talks to tailscaled, lives in :mod:`tsconsensus.localapi`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import StaticPeer, TailnetConfig
from .errors import TailnetError


@dataclass(frozen=True)
class Peer:
    """A tailnet node.

    ``addresses`` lists IPv4 addresses before IPv6 ones; ``tags`` is empty for an untagged node
    (tailscaled omits the ``Tags`` key for those).
    """

    id: str
    hostname: str
    addresses: tuple[str, ...]
    tags: tuple[str, ...] = ()
    online: bool = True
    is_self: bool = False

    @property
    def address(self) -> str:
        """The address the cluster uses for this node (its first IPv4, else its first address)."""
        if not self.addresses:
            raise TailnetError(f"tailnet node {self.hostname or self.id} has no address")
        return self.addresses[0]

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags


class Tailnet(Protocol):
    """What the cluster needs from a tailnet backend.

    Methods may block briefly (a backend may ask a local daemon) and are called from any thread.
    They raise :class:`TailnetError` when the backend cannot answer. A backend whose answers
    never block may say so with a class attribute ``may_block = False``.

    Optional, for userspace networking (:mod:`tsconsensus.dialer` looks for them):
    ``userspace() -> bool`` (tailscaled runs without a TUN device), ``dial(host, port,
    timeout) -> socket`` (blocking) and ``async dial_async(host, port, *, limit)`` returning
    asyncio streams: connections to tailnet peers opened through tailscaled, raising
    :class:`OSError`. The LocalAPI backend has all three.
    """

    def self_peer(self) -> Peer:
        """This node."""
        ...

    def peers(self) -> list[Peer]:
        """Every other node of the tailnet, tagged or not."""
        ...

    def whois(self, ip: str, port: int, *, patient: bool = True) -> Peer | None:
        """The node a connection from ``ip:port`` comes from, or ``None`` if none matches.

        ``patient=False`` answers at once from what the backend knows (the Raft thread must
        never wait); ``True`` may wait briefly for a mapping that is about to appear.
        """
        ...


def sort_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """IPv4 first, then IPv6, each in the order given; CIDR suffixes (``/32``) removed."""
    plain = [a.split("/", 1)[0] for a in addresses]
    v4 = [a for a in plain if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in plain if ipaddress.ip_address(a).version == 6]
    return tuple(v4 + v6)


def normalize_ip(ip: str) -> str:
    """Canonical text of an IP (``::ffff:1.2.3.4`` becomes ``1.2.3.4``)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class StaticTailnet:
    """A tailnet described by a list of peers; ``self_address`` picks which one is this node.

    Safe to use from any thread (it never changes after construction, except through
    :meth:`replace_peers`, which swaps the whole list atomically).
    """

    may_block = False

    def __init__(self, self_address: str, peers: Sequence[StaticPeer]) -> None:
        self._self_address = normalize_ip(self_address)
        self._peers: tuple[Peer, ...] = ()
        self.replace_peers(peers)

    @classmethod
    def from_config(cls, config: TailnetConfig) -> StaticTailnet:
        return cls(config.address, config.peers)

    def replace_peers(self, peers: Sequence[StaticPeer]) -> None:
        """Swap the peer list (tests use it to tag, untag or take nodes offline)."""
        built = []
        for i, p in enumerate(peers):
            address = normalize_ip(p.address)
            built.append(
                Peer(
                    id=f"static-{address}",
                    hostname=p.hostname or f"node{i + 1}",
                    addresses=(address,),
                    tags=tuple(p.tags),
                    online=p.online,
                    is_self=address == self._self_address,
                )
            )
        if not any(p.is_self for p in built):
            raise TailnetError(f"static tailnet: own address {self._self_address} is not a peer")
        self._by_address = {a: p for p in built for a in p.addresses}
        self._peers = tuple(built)

    def self_peer(self) -> Peer:
        return next(p for p in self._peers if p.is_self)

    def peers(self) -> list[Peer]:
        return [p for p in self._peers if not p.is_self]

    def whois(self, ip: str, port: int, *, patient: bool = True) -> Peer | None:
        peer = self._by_address.get(ip)  # the common case: already canonical text
        if peer is None:
            try:
                peer = self._by_address.get(normalize_ip(ip))
            except ValueError:
                return None
        return peer
