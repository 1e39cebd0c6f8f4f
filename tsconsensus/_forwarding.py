"""Frames a follower and its leader exchange about commands, over the Raft transport (its
DRIVER frames: already authorized, size-checked and MAC-checked before they get here).

- FORWARD: a follower hands the leader a batch of encoded commands, each with its request id;
- REFUSED: the leader could not take a forwarded batch (not the leader, overloaded...);
- RESULTS: the leader tells the follower the outcomes of its commands as soon as it has
  applied them, so the follower answers its caller without waiting to apply them itself.

Binary, with explicit lengths; every decoder checks every length and raises ValueError.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from ._outcomes import FailReason, Refusal
from .safejson import dumps_compact
from .types import CommandResult

FORWARD = b"F"
REFUSED = b"R"
RESULTS = b"S"
_HEAD = struct.Struct(">cQI")  # kind, forward id, count (FORWARD, RESULTS) or reason code
_LEN = struct.Struct(">I")
REASONS = [
    FailReason.NOT_LEADER,
    FailReason.NO_LEADER,
    FailReason.QUEUE_FULL,
    FailReason.DENIED,
    FailReason.LEADER_CHANGED,
]


def _pieces(parts: list[bytes], *blobs: bytes) -> None:
    for blob in blobs:
        parts.append(_LEN.pack(len(blob)))
        parts.append(blob)


def encode_forward(forward_id: int, commands: Sequence[tuple[str, bytes]]) -> bytes:
    parts = [_HEAD.pack(FORWARD, forward_id, len(commands))]
    for rid, command in commands:
        _pieces(parts, rid.encode(), command)
    return b"".join(parts)


def encode_refused(forward_id: int, reason: FailReason) -> bytes:
    return _HEAD.pack(REFUSED, forward_id, REASONS.index(reason))


def encode_results(outcomes: Sequence[tuple[str, str, CommandResult | Refusal]]) -> bytes:
    """Outcomes with their request id and command hash (see ``LogApplier.apply_entry``)."""
    parts = [_HEAD.pack(RESULTS, 0, len(outcomes))]
    for rid, digest, outcome in outcomes:
        body: dict[str, object]
        if isinstance(outcome, Refusal):
            body = {"refused": outcome.kind, "message": outcome.message, "h": digest}
        else:
            body = {
                "result": outcome.result,
                "error": outcome.error,
                "index": outcome.index,
                "h": digest,
            }
        _pieces(parts, rid.encode(), dumps_compact(body).encode())
    return b"".join(parts)


class Frame:
    """A decoded frame: ``kind``, ``forward_id``, and by kind ``commands`` (rid, bytes),
    ``reason``, or ``outcomes`` (rid, command hash, outcome)."""

    def __init__(self, kind: bytes, forward_id: int) -> None:
        self.kind = kind
        self.forward_id = forward_id
        self.commands: list[tuple[str, bytes]] = []
        self.reason = FailReason.NOT_LEADER
        self.outcomes: list[tuple[str, str, CommandResult | Refusal]] = []


def decode(payload: bytes) -> Frame:
    """One driver frame; ValueError on anything malformed."""
    if len(payload) < _HEAD.size:
        raise ValueError("short driver frame")
    kind, forward_id, count = _HEAD.unpack_from(payload)
    frame = Frame(kind, forward_id)
    if kind == REFUSED:
        frame.reason = REASONS[count] if count < len(REASONS) else FailReason.NOT_LEADER
        return frame
    if kind not in (FORWARD, RESULTS):
        raise ValueError(f"unknown driver frame kind {kind!r}")
    offset = _HEAD.size

    def piece() -> bytes:
        nonlocal offset
        if offset + 4 > len(payload):
            raise ValueError("truncated driver frame")
        (n,) = _LEN.unpack_from(payload, offset)
        offset += 4
        if offset + n > len(payload):
            raise ValueError("truncated driver frame")
        blob = payload[offset : offset + n]
        offset += n
        return blob

    for _ in range(count):
        rid = piece().decode()
        blob = piece()
        if kind == FORWARD:
            frame.commands.append((rid, blob))
        else:
            frame.outcomes.append((rid, *_outcome(blob)))
    if offset != len(payload):
        raise ValueError("trailing bytes in a driver frame")
    return frame


def _outcome(blob: bytes) -> tuple[str, CommandResult | Refusal]:
    data = json.loads(blob)
    if not isinstance(data, dict):
        raise ValueError("an outcome must be an object")
    digest = str(data.get("h", ""))
    if "refused" in data:
        return digest, Refusal(str(data["refused"]), str(data.get("message", "")))
    result = CommandResult(data.get("result"), data.get("error"), int(data.get("index", 0)))
    return digest, result
