"""The exit codes of every ``tsc`` command (also listed in the README), and which error maps to
which code."""

from __future__ import annotations

import tsconsensus as tsc

OK = 0
FAILED = 1
"""The command ran but its outcome is a failure (a state-machine error, an unhealthy cluster)."""
USAGE = 2
"""Bad options or arguments (also what Typer itself uses)."""
CONFIG = 3
"""The config file is missing, unreadable or invalid."""
UNREACHABLE = 4
"""The node could not be reached."""
NO_LEADER = 5
"""The command's outcome is unknown: no leader confirmed it in time, or the node took the request
and then closed the connection or did not answer in time. Retrying with its request id is safe."""
NOT_AUTHORIZED = 6
"""The node refused this client, or this node lacks the cluster tag."""

TABLE = [
    (OK, "success"),
    (FAILED, "the command ran but failed (state-machine error, cluster without leader/quorum)"),
    (USAGE, "bad options or arguments (e.g. --args is not JSON)"),
    (CONFIG, "config file missing, unreadable or invalid"),
    (UNREACHABLE, "the node could not be reached"),
    (
        NO_LEADER,
        "outcome unknown: no leader confirmed the command in time, or the node went silent "
        "after taking it (retry with the id)",
    ),
    (NOT_AUTHORIZED, "not authorized (client refused, or node lacks the cluster tag)"),
]

EPILOG = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in TABLE) + "."


def for_error(exc: BaseException) -> int:
    """The exit code for an error raised by the library."""
    if isinstance(exc, (tsc.ConfigError, tsc.StateMachineLoadError)):
        return CONFIG
    if isinstance(exc, tsc.NodeUnreachableError):
        return UNREACHABLE
    if isinstance(exc, tsc.NoLeaderError):
        return NO_LEADER
    if isinstance(exc, (tsc.NotAuthorizedError, tsc.NotTaggedError)):
        return NOT_AUTHORIZED
    if isinstance(exc, (tsc.InvalidCommandError, tsc.InvalidInputError)):
        return USAGE
    return FAILED
