"""``python -m tsconsensus.testing.faults``: a fault run from a shell (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .clients import ClientSettings
from .nemesis import DEFAULT_NEMESES, NEMESES, NemesisSettings
from .options import PLANTED_BUGS, RunOptions
from .report import EXIT_COULD_NOT_RUN, format_report
from .runner import run

_EPILOG = """\
nemesis kinds (--nemesis, comma-separated, or "all"):
{kinds}

planted bugs (--plant; node processes get TSC_PLANTED_BUG=NAME, which the node engine
honours; a run with one must FAIL):
{bugs}

Partitions need root, iproute2 and nftables: the run then happens inside a network
namespace made for it (nodes on 127.0.1.x there, nftables rules in that namespace only).
Without them it runs on a loopback base address of its own and leaves partitions out.

exit codes: 0 pass (linearizable, nothing acknowledged lost, replicas equal, no process
left); 1 a violation or another problem; 2 could not run, or the checker ran out of time
(never a pass). Ctrl-C cuts the workload short and still heals, checks and reports; a
second Ctrl-C stops every node at once and exits 130.

example: python -m tsconsensus.testing.faults --nodes 5 --duration 300 --nemesis all --seed 7
"""


def _parser() -> argparse.ArgumentParser:
    kinds = "\n".join(f"  {name:12} {text}" for name, text in NEMESES.items())
    bugs = "\n".join(f"  {name:19} {text}" for name, text in PLANTED_BUGS.items())
    parser = argparse.ArgumentParser(
        prog="python -m tsconsensus.testing.faults",
        description=(
            "Start a cluster of real node processes, drive concurrent clients at it while a "
            "nemesis kills, pauses and partitions nodes, then check the clients' history for "
            "linearizability and the replicas for equality."
        ),
        epilog=_EPILOG.format(kinds=kinds, bugs=bugs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--nodes", type=int, default=3, help="cluster size, at least 3 (default 3)")
    add(
        "--duration",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long clients and nemesis run (default 30)",
    )
    add("--seed", type=int, default=None, help="the schedule's seed (default: drawn, printed)")
    add("--clients", type=int, default=6, help="concurrent clients (default 6)")
    add("--keys", type=int, default=5, help="keys in use at a time (default 5)")
    add(
        "--ops-per-key",
        type=int,
        default=400,
        metavar="N",
        help="operations on a key before moving to fresh keys (default 400)",
    )
    add(
        "--nemesis",
        default=",".join(DEFAULT_NEMESES),
        metavar="KINDS",
        help=f"fault kinds, or 'all' or 'none' (default {','.join(DEFAULT_NEMESES)})",
    )
    add(
        "--quiet",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds between faults (default 1 3)",
    )
    add(
        "--hold",
        type=float,
        nargs=2,
        default=(1.0, 4.0),
        metavar=("MIN", "MAX"),
        help="seconds a fault lasts (default 1 4)",
    )
    add(
        "--power-loss",
        action="store_true",
        help="run nodes with TSC_POWER_LOSS=1: a kill loses what a power cut would",
    )
    add(
        "--plant",
        choices=sorted(PLANTED_BUGS),
        metavar="BUG",
        help="run nodes with a planted bug (see below)",
    )
    add(
        "--history",
        type=Path,
        metavar="FILE",
        help="also write the history (JSON lines) to this file",
    )
    add(
        "--dir",
        type=Path,
        help="keep the cluster's files here (default: a temporary directory, deleted after a pass)",
    )
    add("--keep", action="store_true", help="keep the temporary directory after a pass")
    add("--no-netns", action="store_true", help="never use a network namespace (no partitions)")
    add(
        "--state-machine",
        default="",
        metavar="MODULE:FACTORY",
        help="a machine with the built-in key-value commands, instead of the built-in one",
    )
    add(
        "--check-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time for the linearizability check (default 120); running out is exit 2",
    )
    add("--verbose", "-v", action="store_true", help="log every fault and more")
    return parser


def options_from(args: argparse.Namespace) -> RunOptions:
    """The run options a parsed command line asks for; ValueError for bad ones."""
    if args.nemesis == "all":
        kinds: tuple[str, ...] = tuple(NEMESES)
    elif args.nemesis in ("none", ""):
        kinds = ()
    else:
        kinds = tuple(k.strip() for k in args.nemesis.split(",") if k.strip())
    for low, high, name in (*[(*args.quiet, "--quiet")], *[(*args.hold, "--hold")]):
        if not 0 <= low <= high:
            raise ValueError(f"{name} needs 0 <= MIN <= MAX")
    return RunOptions(
        nodes=args.nodes,
        duration_s=args.duration,
        seed=args.seed,
        clients=args.clients,
        nemeses=kinds,
        power_loss=args.power_loss,
        plant=args.plant,
        directory=args.dir,
        keep=args.keep,
        history=args.history,
        namespace=not args.no_netns,
        client=replace(ClientSettings(), keys=args.keys, ops_per_key=args.ops_per_key),
        nemesis=replace(NemesisSettings(), quiet_s=tuple(args.quiet), hold_s=tuple(args.hold)),
        check_timeout_s=args.check_timeout,
        state_machine=args.state_machine,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for chatty in ("httpx", "httpcore"):  # one line per request drowns the faults
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        options = options_from(args)
        options.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    if options.seed is None:
        options = replace(options, seed=random.SystemRandom().randrange(2**31))
    # first, before anything can hang: the seed reruns this schedule
    print(f"fault run: seed {options.seed}", flush=True)
    try:
        report = run(options)
    except KeyboardInterrupt:  # the second Ctrl-C: the nodes were killed on the way out
        print("interrupted: every node of the run was stopped", file=sys.stderr)
        return 130
    print(format_report(report))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
