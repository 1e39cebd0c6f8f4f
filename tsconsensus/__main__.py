"""``python -m tsconsensus --config FILE``: run one node in the foreground, with nothing but the
library (no CLI package). ``tsc node start`` does the same; :class:`~tsconsensus.testing.
LocalCluster` starts its nodes this way.

Exit codes: 0 stopped by SIGTERM/SIGINT (or ``tsc node stop``); 1 the node failed (one
``error: ...`` line on stderr, no traceback); 2 bad options; 3 the config is missing or invalid
(or its state machine cannot be loaded); 6 this node does not carry the cluster tag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .config import Config
from .errors import ConfigError, NotTaggedError, StateMachineLoadError, TsconsensusError
from .runner import LOG_LEVELS, serve

EXIT_FAILED, EXIT_CONFIG, EXIT_NOT_TAGGED = 1, 3, 6


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tsconsensus",
        description="Run a tsconsensus node in the foreground until SIGTERM or Ctrl-C, "
        "logging to stderr. Example: python -m tsconsensus --config /etc/tsconsensus.toml",
        epilog="Exit codes: 0 stopped by a signal; 1 the node failed; 2 bad options; "
        "3 config missing or invalid; 6 this node lacks the cluster tag. "
        "The operator CLI (tsc) does more: tsc --help.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the node's TOML config")
    p.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="logging threshold (default: info)",
    )
    p.add_argument("--version", action="version", version=f"tsconsensus {__version__}")
    return p


def exit_code(exc: TsconsensusError) -> int:
    if isinstance(exc, (ConfigError, StateMachineLoadError)):
        return EXIT_CONFIG
    if isinstance(exc, NotTaggedError):
        return EXIT_NOT_TAGGED
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        serve(Config.load(args.config), args.log_level)
    except TsconsensusError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exit_code(exc)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
