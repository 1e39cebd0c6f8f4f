"""The one exception tree of tsconsensus.

Every error the library raises derives from :class:`TsconsensusError`. Errors of third-party
systems (tailscaled, httpx, the OS) are translated into this tree at the adapter that talks to
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

    ``leader`` is the last leader this node knew of (its member id), or ``None``;
    ``request_id`` the id of the command that was not confirmed (retrying with it is safe).
    """

    def __init__(
        self, message: str, leader: str | None = None, request_id: str | None = None
    ) -> None:
        self.leader = leader
        self.request_id = request_id
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


class RequestIdConflictError(InvalidCommandError):
    """The request id cannot be used for this command: ``kind`` ``"reused"`` (the id was used
    for a different command) or ``"expired"`` (it was first submitted longer ago than ids are
    remembered; this attempt was not applied, an earlier one may have been)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


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
    """A node's HTTP port could not be reached, or did not answer in time (client side).

    ``maybe_delivered`` is True when the request may have reached the node before the
    connection failed or timed out (the node may act on it), False when it was never sent.
    """

    def __init__(self, message: str, maybe_delivered: bool = False) -> None:
        self.maybe_delivered = maybe_delivered
        super().__init__(message)


class StateMachineLoadError(TsconsensusError):
    """A state machine named by ``module:factory`` could not be imported or built."""


class DecodeError(TsconsensusError):
    """Bytes from the network or the disk do not decode as what they claim to be."""


class ProposalRefusedError(CommandError):
    """The engine did not accept a proposal; nothing was appended.

    ``reason`` is one of ``"not-leader"``, ``"overloaded"``, ``"transferring"``,
    ``"too-large"``, ``"membership-pending"``, ``"invalid-membership"``; ``leader`` is the member
    id of the leader this node knows of (0 if none).
    """

    def __init__(self, reason: str, message: str, leader: int = 0) -> None:
        self.reason = reason
        self.leader = leader
        super().__init__(message)


class StorageError(TsconsensusError):
    """The state directory cannot be used as asked."""


class CorruptStorageError(StorageError):
    """A record in the middle of the log fails its checksum: this is not a torn write but
    damage. ``path`` and ``offset`` name where; the remedy is to wipe the state directory and
    let the node rejoin as a new member."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        super().__init__(
            f"corrupt record in {path} at offset {offset} ({problem}); this node's log cannot "
            "be trusted: stop it, wipe its state directory, start it again (it rejoins as a "
            "new member) and remove its old id with `tsc members remove`"
        )


class DiskFullError(StorageError):
    """No space left to write: nothing more is acknowledged until space returns.

    ``path`` names the file or directory that could not grow. The storage is left exactly as
    before the failed call, so the call may be retried once space is freed."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class StorageFailedError(StorageError):
    """A write or fsync failed in a way that cannot be retried safely (after a failed fsync the
    kernel may have dropped the dirty pages): the process must end. ``path`` names the file."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class StateDirLockedError(StorageError):
    """Another process holds the state directory. ``path`` is the directory, ``pid`` the
    holder's process id as it recorded it (``None`` if unknown)."""

    def __init__(self, message: str, path: str = "", pid: int | None = None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(message)
