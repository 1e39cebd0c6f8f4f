"""The one exception tree of tsconsensus.

Every error the library raises derives from :class:`TsconsensusError`. Errors of third-party
systems (pysyncobj, tailscaled, httpx) are translated into this tree at the adapter that talks to
them, so callers never catch a foreign exception type.

A state machine's own failure is *not* an exception: it travels as ``CommandResult.error``.
"""

from __future__ import annotations


class TsconsensusError(Exception):
    """Base of every error raised by tsconsensus."""


class ConfigError(TsconsensusError):
    """A configuration value is missing, of the wrong type or out of range.

    ``key`` is the dotted TOML key (``raft.election_timeout_min_s``) and ``value`` the offending
    value, so that the message can always name both.
    """

    def __init__(self, key: str, value: object, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"config key {key!r} = {value!r}: {problem}")


class TailnetError(TsconsensusError):
    """The tailnet backend cannot answer (not running, missing, refused)."""


class NotTaggedError(TailnetError):
    """This node does not carry the cluster tag, so it may not take part in the cluster."""


class NotAuthorizedError(TsconsensusError):
    """A peer is not allowed to talk to this cluster."""


class ClusterError(TsconsensusError):
    """The cluster cannot do what was asked."""


class NoLeaderError(ClusterError):
    """No leader was reachable within the deadline.

    ``leader`` is the last leader this node knew of (``host:port``), or ``None``.
    """

    def __init__(self, message: str, leader: str | None = None) -> None:
        self.leader = leader
        super().__init__(message)


class JoinError(ClusterError):
    """A membership change (join, remove) was refused or did not complete."""


class CommandError(TsconsensusError):
    """A command could not be executed (it was not, or may not have been, committed)."""


class InvalidCommandError(CommandError):
    """The command is malformed: bad name, arguments that are not JSON, too large."""


class CommandTimeoutError(CommandError, NoLeaderError):
    """The command's outcome is unknown when its deadline passed.

    It may still be applied later; retrying with the same ``request_id`` is safe.
    """


class ForwardingError(CommandError):
    """The command could not be delivered to the leader."""


class InvalidInputError(TsconsensusError, ValueError):
    """Text from outside (a request body, a node address, a CLI argument) does not parse.

    A ``ValueError`` too, so parsing code can treat it like the standard library's errors. The
    message names the input (cut short when it is long).
    """


class InvalidJSONError(InvalidInputError):
    """JSON text that is malformed, not UTF-8, or nested deeper than the limit."""


class InvalidAddressError(InvalidInputError):
    """A ``host:port`` that is not a valid host (IP address or hostname) and TCP port."""


class NodeUnreachableError(TsconsensusError):
    """A node's HTTP port could not be reached (client side)."""


class StateMachineLoadError(TsconsensusError):
    """A state machine named by ``module:factory`` could not be imported or built."""
