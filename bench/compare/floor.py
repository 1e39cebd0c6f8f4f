"""One client, three ways, in one run: etcd, tsconsensus and the toy of :mod:`.toy_member`.

The toy is the least a Python process can do per durable replicated write (see its
docstring), so its figure is a floor for any Python engine on the machine at hand: how much
of a gap to etcd is Python's, and how much is the engine's. Each system gets 3 members on
loopback with state on the same disk; rounds alternate the order, and the ratios are taken
per round (this machine's speed drifts between rounds).

    python -m bench.compare.floor [--rounds 6] [--seconds 3] [--systems toy,tsconsensus,etcd]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .httpwire import Target
from .loadgen import LoadSpec, run_load
from .procs import spawn, stop, stop_on_sigterm, wait_until
from .stats import Figures
from .systems.base import System, loopback_addresses
from .systems.etcd import EtcdSystem
from .systems.tsc import TsconsensusSystem

TOY_PORT = 7400


class Toy:
    """Three toy members on 127.a.b.1-3 (leader first); stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.addresses = loopback_addresses(3)  # the leader first
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "toy.log"
        module = [sys.executable, "-m", "bench.compare.toy_member"]
        for host in self.addresses[1:]:
            self.procs.append(
                spawn([*module, "follower", host, str(TOY_PORT), str(self.workdir)], log)
            )
            wait_until(lambda h=host: _accepts(h, TOY_PORT), 15, f"toy follower on {host}")
        followers = [f"{h}:{TOY_PORT}" for h in self.addresses[1:]]
        leader = self.addresses[0]
        self.procs.append(
            spawn([*module, "leader", leader, str(TOY_PORT), str(self.workdir), *followers], log)
        )
        wait_until(lambda: _accepts(leader, TOY_PORT), 15, "toy leader")

    def spec(self, seconds: float) -> LoadSpec:
        host = self.addresses[0]
        return LoadSpec("http", "tsc", "write", [Target(host, TOY_PORT, host)], 1, seconds)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, kill=True)


def _accepts(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1.0):
        return True


def _system_spec(system: System, seconds: float) -> LoadSpec:
    path = system.paths()[0]
    return LoadSpec(
        path.driver,
        path.style,
        "write",
        system.targets(path)[:1],
        1,
        seconds,
        members=system.pids(),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare.floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=6, help="rounds (6)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each figure (3)")
    parser.add_argument(
        "--systems",
        default="toy,tsconsensus,etcd",
        help="comma-separated, from: toy, tsconsensus, etcd (etcd is skipped with a hint "
        "when it is not installed)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where state goes (a temp dir)")
    args = parser.parse_args(argv)
    unknown = set(args.systems.split(",")) - {"toy", "tsconsensus", "etcd"}
    if unknown:
        parser.error(f"--systems: unknown {', '.join(sorted(unknown))}")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    names = args.systems.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="tsc-floor-", dir=args.dir))
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    systems: dict[str, System] = {}
    toy = Toy(workdir / "toy") if "toy" in names else None
    try:
        if "etcd" in names:
            etcd = EtcdSystem(workdir, say)
            if etcd.missing():
                say(f"etcd skipped: {etcd.missing()}")
            else:
                systems["etcd"] = etcd
        if "tsconsensus" in names:
            systems["tsconsensus"] = TsconsensusSystem(workdir, say)
        for name, system in systems.items():
            say(f"starting {name}")
            system.start(3)
            system.wait_healthy()
        specs = {name: _system_spec(s, args.seconds) for name, s in systems.items()}
        if toy is not None:
            say("starting toy")
            toy.start()
            specs["toy"] = toy.spec(args.seconds)
        for spec in specs.values():  # warm up: connections, caches, first elections settled
            run_load(dataclasses.replace(spec, seconds=min(1.0, args.seconds)))
        figures: dict[str, list[Figures]] = {name: [] for name in specs}
        for r in range(args.rounds):
            order = list(specs) if r % 2 == 0 else list(reversed(specs))
            for name in order:
                figures[name].append(run_load(specs[name])[0])
            say(
                f"round {r + 1}/{args.rounds}: "
                + "  ".join(
                    f"{n} {figures[n][-1].rate:,.0f}/s p50 {figures[n][-1].p50_ms:.2f} ms"
                    for n in specs
                )
            )
        print(_table(figures))
    finally:
        if toy is not None:
            toy.stop()
        for system in systems.values():
            system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _table(figures: dict[str, list[Figures]]) -> str:
    rounds = len(next(iter(figures.values())))
    lines = [
        f"One client, {rounds} rounds (medians; ratios per round against etcd, then their median)",
        "",
        "| system | commands/s | p50 ms | p99 ms | p50 / etcd's |",
        "|---|---:|---:|---:|---:|",
    ]
    base = figures.get("etcd")
    for name, figs in figures.items():
        ratio = "n/a"
        if base is not None:
            per_round = [f.p50_ms / b.p50_ms for f, b in zip(figs, base, strict=True)]
            ratio = f"{statistics.median(per_round):.2f}x"
        lines.append(
            f"| {name} | {statistics.median(f.rate for f in figs):,.0f} "
            f"| {statistics.median(f.p50_ms for f in figs):.2f} "
            f"| {statistics.median(f.p99_ms for f in figs):.2f} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the finally blocks stopped everything
        print("interrupted; every process of the run is stopped", file=sys.stderr)
        sys.exit(130)
