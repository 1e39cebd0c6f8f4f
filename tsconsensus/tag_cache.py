"""Which addresses carry the cluster tag, known without asking tailscaled on the node's loop.

The Raft transport must decide at accept time, and again for every frame, whether a peer may
talk to the cluster. Asking tailscaled there would stall the loop that sends heartbeats (a
tailscaled answering in 2 s used to cost the leader its term). So a thread refreshes the set of
tagged addresses in the background; the loop answers from it. A refresh that fails keeps the
last answer (so a restarting tailscaled drops no established connection); a refresh that
finds a peer untagged calls ``on_change``, and the transport closes that peer's connections.

A source the set does not know (a peer that just appeared, or userspace-networking mode where
peers arrive from 127.0.0.1) is asked about once with a whois, in a worker thread, never on the
loop; a positive answer is remembered until the next refresh. In userspace mode every peer
shares the source 127.0.0.1, so loopback answers are remembered per source port with the
peer's id: they stay while those peers stay tagged, and when one of them loses its tag every
loopback connection is closed (``on_change``) and must be authorized again (the others dial
again at once; the untagged one is refused at accept).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

from .authorization import Authorizer
from .tailnet import Tailnet, normalize_ip

log = logging.getLogger("tsconsensus.auth")


class TagCache:
    """Tagged addresses of one cluster. Start it with :meth:`start`; thread-safe reads."""

    def __init__(
        self,
        tailnet: Tailnet,
        authorizer: Authorizer,
        *,
        refresh_s: float = 2.0,
        on_change: Callable[[], None] = lambda: None,
        whois_timeout_s: float = 2.0,
    ) -> None:
        self._tailnet = tailnet
        self._authorizer = authorizer
        self._refresh_s = refresh_s
        self._on_change = on_change
        self._whois_timeout_s = whois_timeout_s
        self._allowed: frozenset[str] = frozenset()
        self._whois_ok: dict[str, float] = {}
        self._loopback: dict[tuple[str, int], str] = {}  # (127.x, port) -> peer id
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tsc-whois")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tsc-tags", daemon=True)
        self.refresh()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> bool:
        """Ask the tailnet now (blocking; not on the loop). False if it could not answer."""
        tag = self._authorizer.cluster_tag
        try:
            me = self._tailnet.self_peer()
            peers = [me, *self._tailnet.peers()]
        except Exception as exc:  # keep the last answer: a restarting tailscaled drops nobody
            log.warning("could not refresh the tagged peers (keeping the last list): %s", exc)
            return False
        allowed = frozenset(
            normalize_ip(a) for p in peers if p.has_tag(tag) or p.is_self for a in p.addresses
        )
        lost = self._allowed - allowed
        self._allowed = allowed
        tagged = {p.id for p in peers if p.has_tag(tag) or p.is_self}
        loopback = dict(self._loopback)
        if all(peer_id in tagged for peer_id in loopback.values()):
            kept = {ip for ip, _ in loopback}
            self._whois_ok = {ip: t for ip, t in self._whois_ok.items() if ip in kept}
        else:
            self._loopback = {}
            self._whois_ok = {}
            lost |= {ip for ip, _ in loopback}
        if lost:
            log.info("no longer tagged, closing their connections: %s", ", ".join(sorted(lost)))
            self._on_change()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def still_allowed(self, ip: str) -> bool:
        """From memory only: may ``ip`` keep talking?"""
        return ip in self._allowed or ip in self._whois_ok

    def _whois(self, ip: str, port: int) -> bool:
        peer = self._authorizer.allowed_peer(ip, port, patient=False)
        if peer is not None and _is_loopback(ip):
            if len(self._loopback) > 10_000:
                self._loopback = {}
            self._loopback[(ip, port)] = peer.id
        return peer is not None

    async def authorize(self, ip: str, port: int) -> bool:
        """At accept: known tagged addresses at once; others by one whois off the loop."""
        if ip in self._allowed:
            return True
        loop = asyncio.get_running_loop()
        try:
            # patient=False: never wait for a userspace mapping that may be about to appear; a
            # refused peer dials again, and a local process looping on connect costs nothing
            ok = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._whois, ip, port),
                self._whois_timeout_s,
            )
        except (TimeoutError, asyncio.TimeoutError, RuntimeError):
            return False
        if ok:
            self._whois_ok[ip] = time.monotonic()
        return bool(ok)


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"
