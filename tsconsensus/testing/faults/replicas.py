"""Do the replicas agree? Each member's snapshot, once all have applied the same index."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from ...errors import TsconsensusError
from .control import ClusterControl


def converge(
    control: ClusterControl, nodes: list[int], timeout: float, keep: Path | None = None
) -> tuple[dict[str, tuple[int, str]], str | None]:
    """Wait until ``nodes`` have applied the same index (and all they know committed), then
    hash each one's snapshot (``GET /v1/snapshot``). Returns ``{name: (index, sha256)}`` and a
    problem: states that differ at one index (each snapshot is then saved under ``keep``, and
    the problem says which part differs), or no agreement within ``timeout``."""
    deadline = time.monotonic() + timeout
    hashes: dict[str, tuple[int, str]] = {}
    while True:
        statuses = [control.status(i, timeout=2.0) for i in nodes]
        indexes = {(s["applied_index"], s["commit_index"]) for s in statuses if s is not None}
        if None not in statuses and len(indexes) == 1 and len(set(next(iter(indexes)))) == 1:
            hashes = {}
            blobs: dict[str, bytes] = {}
            with contextlib.suppress(TsconsensusError):
                for i in nodes:
                    with control.cluster.monitor(i, timeout=10.0) as monitor:
                        index, data = monitor.snapshot()
                    name = control.name(i)
                    hashes[name] = (index, hashlib.sha256(data).hexdigest())
                    blobs[name] = data
                if len({state for _, state in hashes.values()}) == 1:
                    return hashes, None
                if len({index for index, _ in hashes.values()}) == 1:
                    return hashes, _differ(hashes, blobs, keep)
        if time.monotonic() >= deadline:
            return hashes, f"replicas did not converge within {timeout:g}s: {statuses}"
        time.sleep(0.2)


def _differ(hashes: dict[str, tuple[int, str]], blobs: dict[str, bytes], keep: Path | None) -> str:
    index = next(iter(hashes.values()))[0]
    groups: dict[str, list[str]] = {}
    for name, (_, digest) in sorted(hashes.items()):
        groups.setdefault(digest[:12], []).append(name)
    text = f"replicas differ at index {index}: " + "; ".join(
        f"{' '.join(names)} {digest}" for digest, names in groups.items()
    )
    text += "; " + _which_part(blobs)
    if keep is not None:
        with contextlib.suppress(OSError):
            keep.mkdir(parents=True, exist_ok=True)
            for name, data in blobs.items():
                (keep / f"{name}.snapshot").write_bytes(data)
            text += f"; snapshots saved in {keep}"
    return text


def _which_part(blobs: dict[str, bytes]) -> str:
    """Which keys differ, when the snapshots are the built-in machine's (a JSON object);
    best effort: another machine's bytes are only said to differ."""
    try:
        states = {name: json.loads(data) for name, data in blobs.items()}
    except ValueError:
        return "the state machines' snapshots differ"
    if not all(isinstance(state, dict) for state in states.values()):
        return "the state machines' snapshots differ"
    keys = sorted({key for state in states.values() for key in state})
    differ = [k for k in keys if len({json.dumps(s.get(k)) for s in states.values()}) > 1]
    shown = ", ".join(
        f"{key}: " + " ".join(f"{name}={json.dumps(s.get(key))}" for name, s in states.items())
        for key in differ[:3]
    )
    return f"{len(differ)} of {len(keys)} keys differ ({shown}{', ...' if len(differ) > 3 else ''})"
