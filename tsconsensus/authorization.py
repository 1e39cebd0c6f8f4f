"""Who may talk to the cluster: deny by default, decided by the peer's tailnet tags.

The rule, the same on the Raft, command and monitor ports:
- a connection is allowed only if the tailnet identifies its source as a node carrying the
  cluster tag;
- this node's own address counts as such a node (it must carry the tag to run at all), so a
  local ``tsc`` on the node is allowed; nothing else local is special;
- if the tailnet cannot answer (daemon down, unknown source), the connection is denied.
"""

from __future__ import annotations

import hashlib
import logging

from .errors import TailnetError
from .tailnet import Peer, Tailnet

log = logging.getLogger("tsconsensus.auth")


class Authorizer:
    """Answers "may ``ip:port`` talk to us?" for one cluster tag. Thread-safe, never raises."""

    def __init__(self, tailnet: Tailnet, cluster_tag: str) -> None:
        self._tailnet = tailnet
        self._tag = cluster_tag

    @property
    def cluster_tag(self) -> str:
        return self._tag

    def allows(self, ip: str, port: int, *, patient: bool = True) -> bool:
        """True only if the source is a tailnet node carrying the cluster tag.

        ``patient=False`` never waits for the tailnet (for the Raft thread: a denied peer
        simply dials again); ``True`` may block briefly, so async callers run it in a thread.
        """
        return self.allowed_peer(ip, port, patient=patient) is not None

    def allowed_peer(self, ip: str, port: int, *, patient: bool = True) -> Peer | None:
        """:meth:`allows`, naming the peer: the tagged node behind ``ip:port``, or None."""
        try:
            peer = self._tailnet.whois(ip, port, patient=patient)
        except TailnetError as exc:
            log.warning("denying %s:%d: tailnet cannot identify it (%s)", ip, port, exc)
            return None
        except Exception:  # a backend bug must not open the door
            log.exception("denying %s:%d: whois failed", ip, port)
            return None
        if peer is None:
            log.info("denying %s:%d: not a tailnet node", ip, port)
            return None
        if not peer.has_tag(self._tag):
            log.info("denying %s:%d (%s): lacks tag %s", ip, port, peer.hostname, self._tag)
            return None
        return peer


def cluster_password(cluster_tag: str, secret: str = "") -> str:
    """The Raft password every member of one cluster derives alike.

    It keys the MAC of every Raft frame (and keeps two clusters from ever mixing). Derived from
    the tag and the shared secret; the secret is what makes it unguessable to someone who
    knows the tag.
    """
    material = f"tsconsensus/v1\x00{cluster_tag}\x00{secret}".encode()
    return hashlib.sha256(material).hexdigest()
