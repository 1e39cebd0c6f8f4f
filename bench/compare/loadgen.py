"""The load generator: a process of its own that drives N concurrent clients at a cluster.

Each client has one connection and sends one request at a time (closed loop); clients are
spread over the targets in order (the orchestrator lists the leader first, so one client talks
to the leader). All connections are opened before the clock starts. HTTP clients use raw
keep-alive sockets (:mod:`.httpwire`), the same code for every system; gRPC clients (etcd) use
``grpc.aio`` with raw bytes in and out (no generated stubs), one channel per target.

Run by :func:`run_load` as ``python -m bench.compare.loadgen``: a JSON spec on stdin, the
:class:`~.stats.Figures` as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import payloads
from .httpwire import Connection, HttpError, Target
from .procs import child_env, cpu_seconds, cpu_used
from .stats import Figures, summarize

MAX_ERRORS_IN_A_ROW = 200


@dataclass(frozen=True)
class LoadSpec:
    driver: str  # "http" or "grpc"
    style: str  # see payloads.STYLES
    op: str  # "write" or "read"
    targets: list[Target]
    clients: int
    seconds: float
    timeout: float = 10.0
    members: list[int] = field(default_factory=list)
    """PIDs of the system's member processes, whose CPU time over the interval is reported."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [asdict(t) for t in self.targets]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        return cls(**{**data, "targets": [Target(**t) for t in data["targets"]]})


def _request(spec: LoadSpec, client: int, n: int) -> tuple[str, bytes]:
    if spec.op == "write":
        return payloads.write_request(spec.style, client, n)
    return payloads.read_request(spec.style, client)


class _Tally:
    def __init__(self, members: list[int]) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self._members = members
        self._members_cpu_at_start: dict[int, float] = {}
        self.members_cpu_s = 0.0

    def start(self) -> float:
        """The measured interval starts (connections are open): its start time."""
        self._members_cpu_at_start = cpu_seconds(self._members)
        return time.perf_counter()

    def stop(self, started: float) -> float:
        """The interval ends: its length."""
        elapsed = time.perf_counter() - started
        self.members_cpu_s = cpu_used(self._members_cpu_at_start, cpu_seconds(self._members))
        return elapsed

    def failed(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what[:300]


async def _http(spec: LoadSpec, tally: _Tally) -> float:
    connections = [Connection(spec.targets[c % len(spec.targets)]) for c in range(spec.clients)]
    await asyncio.gather(*(c.open() for c in connections))
    stop_at = time.perf_counter() + spec.seconds

    async def client(c: int, connection: Connection) -> None:
        n = 0
        in_a_row = 0
        while time.perf_counter() < stop_at and in_a_row < MAX_ERRORS_IN_A_ROW:
            path, body = _request(spec, c, n)
            started = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(connection.post(path, body), spec.timeout)
            except (OSError, HttpError, asyncio.TimeoutError) as exc:
                tally.failed(f"{type(exc).__name__}: {exc}")
                in_a_row += 1
                await connection.close()  # reopened by the next post
                continue
            if payloads.ok(spec.style, status, answer):
                tally.latencies.append(time.perf_counter() - started)
                in_a_row = 0
            else:
                tally.failed(f"HTTP {status}: {answer[:200]!r}")
                in_a_row += 1
            n += 1

    started = tally.start()
    try:
        await asyncio.gather(*(client(c, conn) for c, conn in enumerate(connections)))
        return tally.stop(started)
    finally:
        await asyncio.gather(*(c.close() for c in connections))


async def _grpc(spec: LoadSpec, tally: _Tally) -> float:
    import grpc  # only this driver needs it (the bench extra)

    channels = [
        grpc.aio.insecure_channel(
            f"{t.host}:{t.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for t in spec.targets
    ]
    try:
        await asyncio.gather(
            *(asyncio.wait_for(ch.channel_ready(), spec.timeout) for ch in channels)
        )
        stop_at = time.perf_counter() + spec.seconds

        async def client(c: int) -> None:
            channel = channels[c % len(channels)]
            n = 0
            in_a_row = 0
            while time.perf_counter() < stop_at and in_a_row < MAX_ERRORS_IN_A_ROW:
                method, body = _request(spec, c, n)
                call = channel.unary_unary(method)  # no serializers: bytes in, bytes out
                started = time.perf_counter()
                try:
                    await call(body, timeout=spec.timeout)
                except grpc.aio.AioRpcError as exc:
                    tally.failed(f"gRPC {exc.code().name}: {exc.details()}")
                    in_a_row += 1
                else:
                    tally.latencies.append(time.perf_counter() - started)
                    in_a_row = 0
                n += 1

        started = tally.start()
        await asyncio.gather(*(client(c) for c in range(spec.clients)))
        return tally.stop(started)
    finally:
        for channel in channels:
            await channel.close()


async def generate(spec: LoadSpec) -> tuple[Figures, str]:
    """Run the load in this process: the figures, and the first error seen (or "")."""
    tally = _Tally(spec.members)
    driver = _grpc if spec.driver == "grpc" else _http
    cpu = time.process_time()
    elapsed = await driver(spec, tally)
    figures = summarize(tally.latencies, elapsed, tally.errors)
    figures = dataclasses.replace(
        figures, client_cpu_s=time.process_time() - cpu, members_cpu_s=tally.members_cpu_s
    )
    return figures, tally.first_error


def run_load(spec: LoadSpec) -> tuple[Figures, str]:
    """Run the load from a separate process; raise RuntimeError if it failed outright."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.loadgen"],
        input=json.dumps(spec.to_json()).encode(),
        capture_output=True,
        timeout=spec.seconds + 4 * spec.timeout + 30,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode(errors='replace')[-800:]}")
    answer = json.loads(proc.stdout)
    return Figures.from_json(answer["figures"]), str(answer["first_error"])


def main() -> None:
    spec = LoadSpec.from_json(json.load(sys.stdin))
    figures, first_error = asyncio.run(generate(spec))
    json.dump({"figures": figures.to_json(), "first_error": first_error}, sys.stdout)


if __name__ == "__main__":
    main()
