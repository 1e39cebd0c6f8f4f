"""What a fault run is asked to do: :class:`RunOptions`, and the planted bugs it can switch on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clients import ClientSettings
from .nemesis import DEFAULT_NEMESES, NEMESES, NemesisSettings

EXPOSED_BY: dict[str, tuple[set[str], bool]] = {
    "local-reads": ({"partition", "pause"}, False),
    "ack-before-sync": ({"kill-all"}, True),
    "forget-request-ids": ({"kill", "kill-leader", "pause", "partition"}, False),
}
"""For each planted bug: nemesis kinds of which one is needed to expose it, and whether it
needs power-loss mode too (an acknowledgement before fsync loses nothing to a plain SIGKILL
unless the storage drops what it had not synced)."""

PLANTED_BUGS: dict[str, str] = {
    "local-reads": "get answered from the node's own replica, without ReadIndex",
    "ack-before-sync": "a write acknowledged before its entry is durable (use --power-loss)",
    "forget-request-ids": "a request id forgotten as soon as its command is applied",
}
"""Bugs the node engine can be told to have (``TSC_PLANTED_BUG=<name>``), for proving that a
run catches them. The switches belong to the engine; a node that does not know them ignores
the variable."""

FAST_RAFT: dict[str, Any] = {
    "heartbeat_interval_s": 0.05,
    "election_timeout_min_s": 0.3,
    "election_timeout_max_s": 0.6,
    "compaction_min_entries": 2000,
}
"""Quick elections, so a short run sees many; frequent snapshots, so restarted nodes catch up
by snapshot too."""


@dataclass(frozen=True)
class RunOptions:
    """What to run. ``seed`` None draws one (it is printed, to rerun the same schedule).
    ``directory`` None makes a temporary one, deleted after a pass unless ``keep``."""

    nodes: int = 3
    duration_s: float = 30.0
    seed: int | None = None
    clients: int = 6
    nemeses: tuple[str, ...] = DEFAULT_NEMESES
    power_loss: bool = False
    plant: str | None = None
    directory: Path | None = None
    keep: bool = False
    history: Path | None = None
    namespace: bool = True
    client: ClientSettings = field(default_factory=ClientSettings)
    nemesis: NemesisSettings = field(default_factory=NemesisSettings)
    raft: Mapping[str, Any] = field(default_factory=lambda: dict(FAST_RAFT))
    check_timeout_s: float = 120.0
    recover_timeout_s: float = 60.0
    state_machine: str = ""
    """``module:factory`` of a machine with the built-in key-value commands (default: the
    built-in one); a runner's own tests use a faulty one to show that runs can fail."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.nodes < 3:
            raise ValueError("--nodes must be at least 3")
        if self.duration_s <= 0 or self.clients < 1:
            raise ValueError("--duration must be positive and --clients at least 1")
        unknown = sorted(set(self.nemeses) - set(NEMESES))
        if unknown:
            raise ValueError(f"unknown nemesis {unknown[0]!r} (known: {', '.join(NEMESES)})")
        if self.directory is not None and (self.directory / "cluster").exists():
            raise ValueError(f"{self.directory} already holds a run's cluster: pick another")
        if self.plant is not None and self.plant not in PLANTED_BUGS:
            raise ValueError(f"unknown bug {self.plant!r} (known: {', '.join(PLANTED_BUGS)})")

    def command(self, seed: int) -> str:
        """The command line that runs this again with ``seed``."""
        parts = [
            "python -m tsconsensus.testing.faults",
            f"--nodes {self.nodes}",
            f"--duration {self.duration_s:g}",
            f"--clients {self.clients}",
            f"--nemesis {','.join(self.nemeses) or 'none'}",
            f"--seed {seed}",
        ]
        if self.power_loss:
            parts.append("--power-loss")
        if self.plant:
            parts.append(f"--plant {self.plant}")
        if not self.namespace:
            parts.append("--no-netns")
        if self.state_machine:
            parts.append(f"--state-machine {self.state_machine}")
        default_client, default_nemesis = ClientSettings(), NemesisSettings()
        if self.client.keys != default_client.keys:
            parts.append(f"--keys {self.client.keys}")
        if self.client.ops_per_key != default_client.ops_per_key:
            parts.append(f"--ops-per-key {self.client.ops_per_key}")
        if self.nemesis.quiet_s != default_nemesis.quiet_s:
            parts.append("--quiet {:g} {:g}".format(*self.nemesis.quiet_s))
        if self.nemesis.hold_s != default_nemesis.hold_s:
            parts.append("--hold {:g} {:g}".format(*self.nemesis.hold_s))
        return " ".join(parts)

    def plant_notes(self, nemeses: tuple[str, ...]) -> list[str]:
        """What to tell about a planted bug: that the engine must know it, and whether the
        faults of this run (``nemeses``, as run) can expose it."""
        if self.plant is None:
            return []
        notes = [
            f"planted bug: nodes run with TSC_PLANTED_BUG={self.plant}; an engine without "
            "that switch ignores it, and a PASS then says nothing about the bug"
        ]
        kinds, power_loss = EXPOSED_BY[self.plant]
        if not kinds & set(nemeses) or (power_loss and not self.power_loss):
            needs = " or ".join(sorted(kinds)) + (" with --power-loss" if power_loss else "")
            notes.append(f"{self.plant} shows only under {needs}: this run may not catch it")
        return notes

    def env(self) -> dict[str, str]:
        """What every node process gets in its environment."""
        env = {}
        if self.power_loss:
            env["TSC_POWER_LOSS"] = "1"
        if self.plant:
            env["TSC_PLANTED_BUG"] = self.plant
        return env
