"""Command line of the comparison: ``python -m bench.compare --help``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import chart, procs, table
from .results import Results
from .runner import Run, Settings
from .systems.base import System
from .systems.etcd import EtcdSystem
from .systems.pysyncobj import PysyncobjSystem
from .systems.tsc import TsconsensusSystem

SYSTEMS: dict[str, type[System]] = {
    "tsconsensus": TsconsensusSystem,
    "etcd": EtcdSystem,
    "pysyncobj": PysyncobjSystem,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="tsconsensus, etcd and pysyncobj side by side, on loopback, in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (0.3 s per figure, 1 round, clients 1 and 4, 1 kill, 2,000 keys) to check "
        "that everything works; explicit options still win",
    )
    parser.add_argument("--clients", type=int, nargs="+", help="client counts (1 16 64)")
    parser.add_argument("--seconds", type=float, help="length of each load figure (5)")
    parser.add_argument(
        "--rounds", type=int, help="rounds of the load series; figures are medians (3)"
    )
    parser.add_argument("--kills", type=int, help="leader kills for failover (10)")
    parser.add_argument("--keys", type=int, help="keys loaded for the memory figure (100000)")
    parser.add_argument("--value-bytes", type=int, default=256, help="their value size (256)")
    parser.add_argument(
        "--systems",
        default="tsconsensus,etcd,pysyncobj",
        help="comma-separated, from: " + ", ".join(SYSTEMS),
    )
    parser.add_argument("--no-five", action="store_true", help="skip the 5-member clusters")
    parser.add_argument(
        "--chart", type=Path, default=Path("bench-compare.png"), help="PNG to write"
    )
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    parser.add_argument(
        "--dir",
        type=Path,
        help="where the clusters' state goes (a new directory inside it; default: the "
        "system's temporary directory); every system's state is on that one disk",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state and logs")
    args = parser.parse_args(argv)
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    clients = sorted(set(args.clients or ([1, 4] if quick else [1, 16, 64])))
    return Settings(
        clients=clients,
        read_clients=sorted({clients[0], clients[-1]}),
        seconds=args.seconds or (0.3 if quick else 5.0),
        warmup_seconds=0.1 if quick else 1.0,
        rounds=max(1, args.rounds or (1 if quick else 3)),
        kills=args.kills or (1 if quick else 10),
        keys=args.keys or (2_000 if quick else 100_000),
        value_bytes=args.value_bytes,
        five_nodes=not args.no_five,
    )


def machine() -> str:
    """The machine and the interpreter every Python process of the run uses (members, load
    generator): where the interpreter was installed tells a distribution's optimized build
    (``/usr``) from a local one (pyenv's, without PGO or LTO, runs the same code slower)."""
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()} from {sys.base_prefix}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    procs.stop_on_sigterm()
    began = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {line}", file=sys.stderr, flush=True)

    results = Results(settings=dict(vars(settings)))
    results.settings["machine"] = machine()
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="tsc-compare-", dir=args.dir))
    progress(f"state and logs in {workdir}")
    try:
        systems: list[System] = []
        for name in args.systems.split(","):
            system = SYSTEMS[name](workdir, progress)
            reason = system.missing()
            if reason is not None:
                progress(f"{name}: {reason}")
                results.notes.append(f"{name}: {reason}")
                continue
            systems.append(system)
            for path in system.paths():
                results.add_column(path.column)
            results.add_column(system.column)
            results.notes.append(system.notes())
        run = Run(systems, settings, results, progress)
        run.run()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()[0]
    results.settings["load_average_1min"] = [load_before, load_after]
    command = " ".join(["python -m bench.compare", *(argv if argv is not None else sys.argv[1:])])
    rounds = f", median of {settings.rounds} rounds" if settings.rounds > 1 else ""
    print(
        f"`{command}` on {started}: {machine()}; {settings.seconds:g} s per figure{rounds}; "
        f"load average {load_before:.1f} at the start, {load_after:.1f} at the end.\n"
    )
    print(table.render(results))
    title = (
        "Writes on 3 members on loopback (tsconsensus and etcd fsync on; pysyncobj "
        f"non-durable), {machine()}, {started[:10]}"
    )
    png = chart.render(results, args.chart, title)
    progress(f"chart written to {png}")
    if args.json:
        args.json.write_text(json.dumps(results.to_json(), indent=2) + "\n")
        progress(f"figures written to {args.json}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(
            f"interrupted ({exc or 'Ctrl-C'}); every process it started is stopped", file=sys.stderr
        )
        sys.exit(130)
