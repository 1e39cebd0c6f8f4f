"""What the sending and receiving halves of the transport share: counters, the key and ids,
the revocation check, and rate-limited logging. Runs on the transport's loop; not thread-safe."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("tsconsensus.transport")

NEVER = float("inf")
_LOG_INTERVAL_S = 60.0

STAT_KEYS = (
    "frames_sent",
    "bytes_sent",
    "frames_received",
    "bytes_received",
    "dropped_queue_full",
    "dropped_unreachable",
    "dropped_unroutable",
    "dropped_too_large",
    "dropped_bad_mac",
    "dropped_malformed",
    "dropped_wrong_cluster",
    "dropped_no_cluster_id",
    "dropped_wrong_receiver",
    "denied",
    "revoked",
    "timeouts",
    "connections_accepted",
    "connections_dialled",
    "dial_failures",
    "peers_down",
    "write_failures",
    "callback_errors",
    "errors",
)


class LogLimiter:
    """Lets one log line per key through per interval, and says how many it held back."""

    def __init__(self, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._interval = interval_s
        self._seen: dict[object, tuple[float, int]] = {}

    def check(self, key: object) -> int | None:
        """None: stay quiet. Otherwise log now; the value is how many were suppressed."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if len(self._seen) > 1024:  # hostile sources must not grow this without bound
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._interval}
        self._seen[key] = (now, 0)
        return 0 if seen is None else seen[1]


def more(suppressed: int) -> str:
    return f" ({suppressed} more like it suppressed)" if suppressed else ""


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(eq=False)
class Link:
    """What the sending and receiving halves share. ``cluster_id`` may change (a joining node
    learns it after starting)."""

    key: bytes
    member_id: int
    cluster_id: int
    still_allowed: Callable[[str], bool]
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))
    quiet: LogLimiter = field(default_factory=LogLimiter)

    def allowed(self, ip: str) -> bool:
        try:
            return self.still_allowed(ip) is True
        except Exception:  # deny by default, and say why
            log.exception("still_allowed(%r) raised; treating as not allowed", ip)
            return False

    def call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("transport callback %s raised", getattr(callback, "__name__", "?"))
