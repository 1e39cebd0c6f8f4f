"""Throughput of ``execute_command`` on a 3-node local cluster (prints figures; not a test).

Node 1 runs in this process (it is where ``execute_command`` is called); nodes 2 and 3 are
separate ``tsc node start`` processes. All on loopback addresses, static tailnet; state
directories with fsync by default (``--storage nosync`` or ``memory`` for less).
Each figure is measured twice: with node 1 the leader, and with node 1 a follower (which
forwards every command to the leader); leadership is moved between rounds to make it so.

    .venv/bin/python bench/throughput.py [--seconds 3] [--rounds 3] [--storage fsync]

Figures are medians over rounds; the machine is shared and noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tsconsensus as tsc
from tsconsensus.testing import LocalCluster


def sequential(node: tsc.Consensus, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        node.execute_command(tsc.Command("set", {f"k{done % 1000}": done}))
        done += 1
    return done / (time.perf_counter() - start)


def concurrent(call: object, callers: int, seconds: float) -> float:
    counts = [0] * callers
    stop = time.perf_counter() + seconds

    def worker(c: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            call(c, i)  # type: ignore[operator]
            i += 1
        counts[c] = i

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(worker, range(callers)))
    return sum(counts) / (time.perf_counter() - start)


def place_leadership(cluster: LocalCluster, node: tsc.Consensus, *, leader: bool) -> None:
    """Move leadership so that ``node`` (node 1, in this process) leads or follows."""
    deadline = time.monotonic() + 30
    while node.is_leader != leader:
        if time.monotonic() > deadline:
            raise tsc.TsconsensusError("leadership could not be placed for the measurement")
        try:
            if node.is_leader:
                node.transfer_leadership(timeout=5)
            else:  # through node 2's command port, which forwards it to the leader
                cluster.client(1).transfer_leadership(to=node.node_id)
        except tsc.TsconsensusError as exc:
            print(f"placing leadership: {exc}; trying again")  # an election in between
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers")
    parser.add_argument(
        "--storage",
        choices=("fsync", "nosync", "memory"),
        default="fsync",
        help="state directories with fsync (the default durability), without fsync, or none",
    )
    args = parser.parse_args()

    base = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}.1"
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(
            Path(tmp), nodes=3, base_address=base, persistent=args.storage != "memory"
        )
        for i in range(3):
            cluster.node_overrides[i] = {"storage": {"fsync": args.storage == "fsync"}}
        cluster.write()
        slow = {"election_timeout_min_s": 1.5, "election_timeout_max_s": 3.0}
        cluster.raft_overrides = slow
        cluster.write()
        fast = tsc.RaftConfig(
            heartbeat_interval_s=0.05, election_timeout_min_s=0.3, election_timeout_max_s=0.5
        )
        config = cluster.config(0)
        config = tsc.Config(
            cluster=config.cluster,
            ports=config.ports,
            raft=fast,
            tailnet=config.tailnet,
            storage=config.storage,
        )
        try:
            for i in (1, 2):
                cluster.start_node(i)
            node = tsc.start_from_config(config)
            try:
                node.wait_for_leader(timeout=30)
                deadline = time.monotonic() + 10
                while (
                    not node.status().has_quorum
                    or node.execute_command(tsc.Command("get", {"key": "warm-up"})).error
                ):
                    if time.monotonic() > deadline:
                        raise tsc.TsconsensusError("the cluster did not become ready")
                    time.sleep(0.05)
                print(
                    f"cluster {cluster.addresses}, node1 is {node.status().state.value}, "
                    f"storage: {args.storage}"
                )
                results: dict[str, list[float]] = {}

                def lib_call(c: int, i: int) -> None:
                    node.execute_command(tsc.Command("set", {f"c{c}": i}))

                for _ in range(args.rounds):
                    for role in ("leader", "follower"):
                        place_leadership(cluster, node, leader=role == "leader")
                        results.setdefault(
                            f"execute_command on the {role}, 1 caller (cmd/s)", []
                        ).append(sequential(node, args.seconds))
                        results.setdefault(
                            f"execute_command on the {role}, {args.callers} callers (cmd/s)", []
                        ).append(concurrent(lib_call, args.callers, args.seconds))
                for label in sorted(results):
                    values = results[label]
                    shown = ", ".join(f"{v:,.0f}" for v in values)
                    print(f"{label:60s} median {statistics.median(values):8,.0f}   ({shown})")
            finally:
                node.stop()
        finally:
            cluster.stop()


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
