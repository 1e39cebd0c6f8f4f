"""The clients of a fault run: random single-key commands through the command ports, recorded.

Each client is a thread with its own keep-alive HTTP connections (one per node it talks to,
each opened from that node's own address, which the port authorizes and which no partition
ever cuts: a client is "on" its node, as in Jepsen). Every operation gets a request id of its
own and is retried under that id until its outcome is known or its deadline passes, so an
operation that eventually answers has a known result even across a leader change.

How an answer is recorded (the contract of :mod:`tsconsensus.testing.history`):

- 200 with ``error: null``: a known result, recorded;
- 200 with an error result: the command failed in the state machine and changed nothing: left
  out of the history (counted as ``error``);
- a 4xx before any attempt could have been delivered: it did not happen, left out (``rejected``);
- no connection could be made at all: never delivered, left out (``not-sent``);
- anything else (503, a timeout, a connection lost after the request went out) with no later
  answer: ``unknown``, recorded without a result, as possibly applied at any time after start.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ...types import JSON
from ..cluster import LocalCluster
from ..history import Operation

log = logging.getLogger("tsconsensus.testing.faults")

OPS = ("get", "set", "cas", "delete")
_WEIGHTS = (35, 25, 30, 10)


class Outcome(str, enum.Enum):
    """How one operation ended; only ``ok`` and ``unknown`` go into the history."""

    OK = "ok"
    UNKNOWN = "unknown"
    ERROR = "error"
    REJECTED = "rejected"
    NOT_SENT = "not-sent"


@dataclass(frozen=True)
class ClientSettings:
    """Timing and workload of the clients.

    ``command_timeout_s`` is the node's own deadline (``timeout_s`` in the request), so a node
    answers 503 before the HTTP read timeout (``http_timeout_s``) gives up on it; a paused node
    is found out by that read timeout. ``op_deadline_s`` bounds the retries of one operation;
    a share ``1 - retry_share`` of operations is not retried once an attempt may have been
    delivered, so the history has unknown outcomes too (and the checker judges them).
    Keys are ``g<generation>-k<n>``: ``keys`` live at a time, and a new generation starts when
    one of them has seen ``ops_per_key`` operations (the checker's cost grows with a key's
    history, so no key sees more than that).
    """

    command_timeout_s: float = 2.0
    http_timeout_s: float = 4.0
    connect_timeout_s: float = 1.0
    op_deadline_s: float = 8.0
    retry_share: float = 0.8
    keys: int = 5
    ops_per_key: int = 400


class Workload:
    """The keys and the values that every client of a run shares (thread-safe).

    Every write writes a value of its own (an increasing integer), which is what keeps the
    checker fast and makes a stale or lost value recognisable.
    """

    def __init__(self, keys: int, ops_per_key: int) -> None:
        if keys < 1 or ops_per_key < 1:
            raise ValueError("a workload needs at least one key and one operation per key")
        self._lock = threading.Lock()
        self._keys = keys
        self._limit = ops_per_key
        self._generation = 0
        self._counts = [0] * keys
        self._used: dict[str, None] = {}  # ordered set
        self._values = itertools.count(1)

    def key(self, rng: random.Random) -> str:
        n = rng.randrange(self._keys)
        with self._lock:
            if self._counts[n] >= self._limit:
                self._generation += 1
                self._counts = [0] * self._keys
            self._counts[n] += 1
            key = f"g{self._generation}-k{n}"
            self._used[key] = None
            return key

    def value(self) -> int:
        with self._lock:
            return next(self._values)

    def keys_used(self) -> list[str]:
        """Every key an operation was issued on, in order of first use."""
        with self._lock:
            return list(self._used)


def _floor(t: float) -> float:
    return math.floor(t * 1e6) / 1e6


def _ceil(t: float) -> float:
    return math.ceil(t * 1e6) / 1e6


class Caller:
    """Executes operations for one client and records them; not shared between threads.

    ``clock()`` is the run's shared monotonic clock (seconds since the run began). ``stop``
    cuts retries short: an operation still without an answer then is recorded as unknown.
    """

    def __init__(
        self,
        name: str,
        cluster: LocalCluster,
        settings: ClientSettings,
        rng: random.Random,
        clock: Callable[[], float],
        stop: threading.Event,
        run_id: str,
        home: int = 0,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.settings = settings
        self.rng = rng
        self.clock = clock
        self.stop = stop
        self.run_id = run_id
        self.node = home % cluster.size
        self.operations: list[Operation] = []
        self.counts: Counter[tuple[str, Outcome]] = Counter()
        self.errors: list[str] = []
        self._connections: dict[int, httpx.Client] = {}
        self._serial = itertools.count(1)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def _connection(self, i: int) -> httpx.Client:
        connection = self._connections.get(i)
        if connection is None:
            transport = httpx.HTTPTransport(local_address=self.cluster.addresses[i], retries=0)
            connection = httpx.Client(
                base_url=f"http://{self.cluster.command_address(i)}",
                transport=transport,
                timeout=httpx.Timeout(
                    self.settings.http_timeout_s, connect=self.settings.connect_timeout_s
                ),
            )
            self._connections[i] = connection
        return connection

    def _drop(self, i: int) -> None:
        connection = self._connections.pop(i, None)
        if connection is not None:
            connection.close()

    def _move(self) -> None:
        # a failure may be this node's (down, paused, cut off): the next attempt tries any node
        self.node = self.rng.randrange(self.cluster.size)

    def execute(
        self,
        op: str,
        args: JSON,
        *,
        deadline_s: float | None = None,
        record: bool = True,
        retry: bool | None = None,
    ) -> tuple[Outcome, JSON]:
        """Run one operation until its outcome is known, ``deadline_s`` passes (default
        ``op_deadline_s``) or ``stop`` is set; record it; return the outcome and result.
        ``retry`` (default: drawn with ``retry_share``) false gives up after the first attempt
        that may have been delivered."""
        request_id = f"{self.run_id}-{self.name}-{next(self._serial)}"
        body = json.dumps(
            {
                "name": op,
                "args": args,
                "request_id": request_id,
                "timeout_s": self.settings.command_timeout_s,
            }
        ).encode()
        limit = self.settings.op_deadline_s if deadline_s is None else deadline_s
        start = self.clock()
        deadline = start + limit
        maybe_delivered = False
        if retry is None:
            retry = self.rng.random() < self.settings.retry_share
        outcome: Outcome | None = None
        result: JSON = None
        while True:
            node = self.node
            try:
                response = self._connection(node).post(
                    "/v1/execute", content=body, headers={"Content-Type": "application/json"}
                )
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self._drop(node)
                self._move()
            except (httpx.HTTPError, OSError):
                maybe_delivered = True
                self._drop(node)
                self._move()
            else:
                outcome, result = self._answer(op, response, maybe_delivered)
                if outcome is not None:
                    break
                maybe_delivered = True
                self._move()
            if self.stop.is_set() or self.clock() >= deadline or (maybe_delivered and not retry):
                break
            # a short pause between attempts: an election takes a few hundred milliseconds
            self.stop.wait(self.rng.uniform(0.02, 0.1))
        end = self.clock()
        if outcome is None:
            outcome = Outcome.UNKNOWN if maybe_delivered else Outcome.NOT_SENT
        self.counts[(op, outcome)] += 1
        if record and outcome in (Outcome.OK, Outcome.UNKNOWN):
            known = outcome is Outcome.OK
            self.operations.append(
                Operation(
                    client=self.name,
                    op=op,
                    args=args,
                    start=_floor(start),
                    end=_ceil(end),
                    result=result if known else None,
                    unknown=not known,
                    request_id=request_id,
                )
            )
        return outcome, result

    def _answer(
        self, op: str, response: httpx.Response, maybe_delivered: bool
    ) -> tuple[Outcome | None, JSON]:
        """Classify one response; ``None`` means "outcome still unknown: try again"."""
        status = response.status_code
        if status == 200:
            try:
                data = json.loads(response.content)
            except ValueError:
                log.warning("%s: a 200 that is not JSON: %r", op, response.content[:200])
                return None, None
            if not isinstance(data, dict) or "result" not in data:
                log.warning("%s: a 200 without a result: %r", op, data)
                return None, None
            if data.get("error") is not None:
                self._note(f"{op}: error result {data['error']!r}")
                return Outcome.ERROR, None
            result: JSON = data["result"]
            return Outcome.OK, result
        if 400 <= status < 500:
            if maybe_delivered:
                # an earlier attempt may have been applied: this answer cannot undo that
                self._note(f"{op}: HTTP {status} after an attempt that may have been applied")
                return Outcome.UNKNOWN, None
            self._note(f"{op}: HTTP {status} {response.text[:200]}")
            return Outcome.REJECTED, None
        return None, None  # 503 (no leader confirmed it in time) or another 5xx: unknown yet

    def _note(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)


class Client(threading.Thread):
    """One client thread: random ``get``/``set``/``cas``/``delete`` until ``stop`` is set.

    ``cas`` expects the value this client last saw for the key (or absence), which makes many
    of them succeed; ``set`` writes one key only (the checker splits histories per key).
    """

    def __init__(self, caller: Caller, workload: Workload) -> None:
        super().__init__(name=f"faults-{caller.name}", daemon=True)
        self.caller = caller
        self.workload = workload
        self._seen: dict[str, JSON] = {}

    def run(self) -> None:
        try:
            while not self.caller.stop.is_set():
                self.step()
        except Exception:  # a bug here must not pass for a quiet client: the run reports it
            log.exception("client %s failed", self.caller.name)
            self.caller.errors.append(f"client {self.caller.name} crashed (see the log)")
            raise
        finally:
            self.caller.close()

    def step(self) -> None:
        rng = self.caller.rng
        op = rng.choices(OPS, weights=_WEIGHTS)[0]
        key = self.workload.key(rng)
        args: dict[str, JSON]
        if op == "get" or op == "delete":
            args = {"key": key}
        elif op == "set":
            args = {key: self.workload.value()}
        else:
            args = {"key": key, "expected": self._seen.get(key), "value": self.workload.value()}
        outcome, result = self.caller.execute(op, args)
        if outcome is not Outcome.OK:
            return
        if op == "get":
            self._seen[key] = result
        elif op == "set":
            self._seen[key] = args[key]
        elif op == "delete":
            self._seen[key] = None
        elif isinstance(result, dict):
            self._seen[key] = result.get("value")


def final_reads(caller: Caller, keys: list[str], deadline: float) -> list[str]:
    """Read every key once more as recorded ``get`` operations (after the faults healed), so the
    checker sees the final state; return the keys no read could be answered for by
    ``deadline`` (a reading of ``caller.clock``)."""
    missing = []
    for key in keys:
        while True:
            remaining = deadline - caller.clock()
            if remaining <= 0:
                missing.append(key)
                break
            outcome, _ = caller.execute(
                "get", {"key": key}, deadline_s=min(remaining, 10.0), retry=True
            )
            if outcome is Outcome.OK:
                break
    return missing


def run_clock() -> Callable[[], float]:
    """A clock for one run: seconds on the monotonic clock since this call."""
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
