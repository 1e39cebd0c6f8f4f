"""A node's address, ``host:port``: parsed and formatted in this one place.

Members' Raft addresses, the command and monitor addresses, and ``--address`` options are all
:class:`NodeAddress` values on the way in and ``str(address)`` on the way out, so every place
agrees on brackets for IPv6, on what a port is, and on the canonical spelling of an IP.
(``testing/emulator.py`` parses tailscaled's ``whois?addr=`` by hand on purpose: that parameter
also takes port 0 and a bare IP.)
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from .errors import InvalidAddressError

_PORT = re.compile(r"[0-9]{1,5}")
"""ASCII digits only: ``int()`` would also take ``4_5``, ``+45``, `` 45`` and other scripts."""
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_HOSTNAME = 253
_SHOWN = 80
EXAMPLE = "e.g. 100.64.0.1:6270, [fd7a:115c:a1e0::1]:6270 or node1.example.ts.net:6270"


def bracketed(host: str) -> str:
    """``host`` as written before ``:port`` or in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _canonical_host(host: str) -> str:
    """The host's canonical spelling (compressed IPv6, lower-case name); raises ValueError."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower()
    if len(name) > _MAX_HOSTNAME or not all(_LABEL.fullmatch(x) for x in name.split(".")):
        raise ValueError("the host is neither an IP address nor a valid hostname")
    if name.rsplit(".", 1)[-1].isdigit():
        # All-numeric last label: a mistyped IPv4 address (999.1.1.1), never a real name.
        raise ValueError("the host is neither an IP address nor a valid hostname")
    return name


@dataclass(frozen=True, order=True)
class NodeAddress:
    """``host:port`` of a node. Immutable, hashable, validated when built.

    ``host`` is an IP address (stored in its canonical form, IPv6 without brackets) or a
    hostname (lower case); ``port`` is a TCP port, 1 to 65535. ``str()`` gives ``host:port``,
    with brackets around an IPv6 host, and :meth:`parse` reads that back.
    Raises :class:`InvalidAddressError` (a ``ValueError``) for anything else.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise InvalidAddressError(f"invalid host {self.host!r}: must be a string")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidAddressError(f"invalid port {self.port!r}: must be an integer")
        if not 1 <= self.port <= 65535:
            raise InvalidAddressError(f"invalid port {self.port}: must be between 1 and 65535")
        try:
            object.__setattr__(self, "host", _canonical_host(self.host))
        except ValueError as exc:
            raise InvalidAddressError(f"invalid host {_shown(self.host)}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> NodeAddress:
        """Read ``host:port`` (``[v6]:port`` for IPv6); raises :class:`InvalidAddressError`
        naming ``text``. Nothing is trimmed or guessed: ``"h:"``, ``"h:abc"``, ``"h:4_5"``,
        ``"h:99999"`` and a bare IPv6 address with a port are all errors."""
        if not isinstance(text, str):
            raise InvalidAddressError(f"invalid node address {text!r}: must be a string")

        def bad(why: str) -> InvalidAddressError:
            return InvalidAddressError(f"invalid node address {_shown(text)}: {why} ({EXAMPLE})")

        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise bad("a bracketed IPv6 host must be followed by ]:port")
            try:
                if ipaddress.ip_address(host).version != 6:
                    raise ValueError
            except ValueError:
                raise bad("only an IPv6 address goes between brackets") from None
        else:
            host, sep, port = text.rpartition(":")
            if not sep:
                raise bad("the :port is missing")
            if ":" in host:
                raise bad("an IPv6 host must be written in brackets, [address]:port")
        if not _PORT.fullmatch(port):
            raise bad("the port must be a number from 1 to 65535")
        try:
            return cls(host, int(port))
        except InvalidAddressError as exc:
            raise bad(str(exc).removeprefix("invalid ")) from None

    def __str__(self) -> str:
        return f"{self.url_host}:{self.port}"

    @property
    def url_host(self) -> str:
        """The host as it appears in a URL or before ``:port`` (IPv6 in brackets)."""
        return bracketed(self.host)

    @property
    def family(self) -> socket.AddressFamily:
        """``AF_INET6`` for an IPv6 host, else ``AF_INET``."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def with_port(self, port: int) -> NodeAddress:
        """The same host at another port (a member id's host at its command port, say)."""
        return NodeAddress(self.host, port)
