"""Why a submitted command has no outcome yet, and how its outcome is delivered."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .types import CommandResult


class FailReason(enum.Enum):
    """Why a submitted entry has no outcome. All but DENIED are worth a retry."""

    NO_LEADER = "no leader"
    NOT_LEADER = "the node asked is no longer the leader"
    LEADER_CHANGED = "the leader changed before the entry was committed"
    QUEUE_FULL = "the leader is overloaded"
    DENIED = "the request was denied"


@dataclass(frozen=True)
class Refusal:
    """A command that was not applied, and why: ``"reused"`` (its id belongs to another
    command) or ``"expired"`` (its id was first submitted longer ago than ids are
    remembered). Every node reaches the same refusal at the same entry."""

    kind: str
    message: str


SubmitCallback = Callable[[CommandResult | None, FailReason | Refusal | None], None]
"""Called once: ``(outcome, None)`` when applied on the submitting node, or ``(None, why)``."""
