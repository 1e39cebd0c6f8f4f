"""``python -m tsconsensus.testing.linearizability HISTORY.jsonl``: check a saved history.

Exit codes: 0 linearizable, 1 not linearizable, 2 timeout (not a pass) or bad input (unreadable
file, malformed line, an operation the checker does not support).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..history import HistoryFormatError, Operation, read_history
from .checker import Verdict, check_history
from .model import UnsupportedOperationError
from .report import format_result, result_to_dict

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_FAILURE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tsconsensus.testing.linearizability",
        description=(
            "Check a key-value history (JSON lines, as written by "
            "tsconsensus.testing.history.write_history) for linearizability."
        ),
        epilog=(
            "exit codes: 0 linearizable; 1 not linearizable (the shortest failing window is "
            "printed); 2 the search timed out (not a pass) or the input is bad"
        ),
    )
    parser.add_argument("history", help="history file, or - for standard input")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time budget for the verdict (default 60); running out is exit 2",
    )
    parser.add_argument(
        "--window-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time budget for shrinking failing windows (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        operations: list[Operation] = (
            read_history(sys.stdin) if args.history == "-" else read_history(args.history)
        )
        result = check_history(
            operations, timeout_s=args.timeout, window_timeout_s=args.window_timeout
        )
    except (OSError, HistoryFormatError, UnsupportedOperationError) as exc:
        print(f"error: {args.history}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(result_to_dict(result), indent=2, ensure_ascii=False))
    else:
        print(format_result(result))
    if result.verdict is Verdict.OK:
        return EXIT_OK
    return EXIT_VIOLATION if result.verdict is Verdict.VIOLATION else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
