"""State machines for tests and demos."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..types import JSON, Command


class RecordingStateMachine:
    """Records every command it applies; ``fail_on`` names commands whose apply raises.

    Deterministic, so it can run on every node; its snapshot is the JSON of the record.
    """

    def __init__(self, fail_on: Sequence[str] = ("fail",)) -> None:
        self.applied: list[tuple[str, JSON]] = []
        self._fail_on = set(fail_on)

    def apply(self, command: Command) -> JSON:
        if command.name in self._fail_on:
            raise RuntimeError(f"refusing command {command.name!r} as asked")
        self.applied.append((command.name, command.args))
        return len(self.applied)

    def snapshot(self) -> bytes:
        return json.dumps(self.applied).encode()

    def restore(self, data: bytes) -> None:
        self.applied = [(n, a) for n, a in json.loads(data)]
