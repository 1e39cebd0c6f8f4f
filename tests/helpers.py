"""Helpers shared by the cluster tests (real processes, real sockets, loopback only)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tsconsensus import Config
from tsconsensus.testing import LocalCluster

RECORDING = "tsconsensus.testing:RecordingStateMachine"

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` passes
    (AssertionError naming ``what`` and the last value seen). Exceptions from ``probe`` count
    as "not yet"; the last one is chained to the failure."""
    deadline = time.monotonic() + timeout
    last: object = None
    failure: Exception | None = None
    while True:
        try:
            last = probe()
            failure = None
        except Exception as exc:  # not yet: the probe could not even look
            failure = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not within {timeout:g}s: {what or probe!r} (last: {last!r})"
            ) from failure
        time.sleep(interval)


def http(cluster: LocalCluster, i: int, source: str | None = None) -> httpx.Client:
    """A raw HTTP client for node ``i``'s command port, from ``source`` (default: node i)."""
    transport = httpx.HTTPTransport(local_address=source or cluster.addresses[i])
    return httpx.Client(
        base_url=f"http://{cluster.command_address(i)}", transport=transport, timeout=15.0
    )


def warnings_logged(cluster: LocalCluster, last: int = 40) -> str:
    """The last ``last`` WARNING/ERROR lines and transport events of every node's log, each
    with its node: what a timing assertion prints when it fails, so that one failure says
    whether the leader went quiet, a connection dropped or a node's own loop stalled."""
    lines = []
    for i in range(cluster.size):
        try:
            text = cluster.log_path(i).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if " WARNING " in line or " ERROR " in line or "tsconsensus.transport" in line:
                lines.append(f"node {i}: {line}")
    lines.sort(key=lambda line: line.split(": ", 1)[1][:23])  # by the timestamp
    return "\n".join(lines[-last:])


_SILENCE = re.compile(
    r"heard nothing from the leader \w+ for ([0-9.]+)s .*own loop stood still for up to ([0-9.]+)s"
)


def leader_silences(cluster: LocalCluster, node: int) -> list[tuple[float, float]]:
    """Every silence of its leader that ``node`` warned about, as (gap, own stall) seconds:
    how long it heard nothing, and how long its own loop stood still meanwhile (the part of
    the gap that the leader and the network did not cause)."""
    text = cluster.log_path(node).read_text(errors="replace")
    return [(float(gap), float(stood)) for gap, stood in _SILENCE.findall(text)]


def converged_hashes(
    cluster: LocalCluster, nodes: Sequence[int], timeout: float = 20.0
) -> dict[int, tuple[int, str]]:
    """Wait until ``nodes`` have applied the same index, then hash each one's snapshot.

    Returns {node: (index, sha256 of its state machine's snapshot)}.
    """
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: cluster.status(i) for i in nodes}
        applied = {s["applied_index"] for s in statuses.values()}
        commits = {s["commit_index"] for s in statuses.values()}
        if len(applied) == 1 and applied == commits:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes did not converge: {statuses}")
        time.sleep(0.05)
    hashes = {}
    for i in nodes:
        with cluster.monitor(i) as m:
            index, data = m.snapshot()
        hashes[i] = (index, hashlib.sha256(data).hexdigest())
    return hashes


def assert_all_equal(hashes: dict[int, tuple[int, str]]) -> None:
    values = set(hashes.values())
    assert len(values) == 1, f"state differs between nodes: {hashes}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now ("" = on every address)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def tsc_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tsc ARGS`` as a separate process (this interpreter), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tsconsensus_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def tsc_until_ok(
    *args: str,
    timeout: float,
    interval: float = 0.1,
    what: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tsc ARGS`` (:func:`tsc_run`) until it exits 0, within ``timeout`` seconds, and
    return that run: for a node still starting (no admin socket, no leader yet). Fails with
    :func:`eventually`'s AssertionError naming ``what``, chained to the last run's exit code
    and stderr."""

    def attempt() -> subprocess.CompletedProcess[str]:
        done = tsc_run(*args, env=env)
        if done.returncode != 0:
            # raised rather than returned, so eventually() chains the last stderr to its failure
            raise RuntimeError(f"tsc exited {done.returncode}: {done.stderr.strip()}")
        return done

    return eventually(attempt, timeout=timeout, interval=interval, what=what or f"tsc {args}")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``path`` with ``options`` (e.g. ``size=2m``, ``ro,size=1m``) for the
    block, unmounted after; the test is skipped where mounting is not allowed (needs root)."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=30, check=False)


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_timing_profile() -> Config:
    """The README's timing profile for tailnets that span continents, as a Config."""
    section = README.read_text().split("### Timing for tailnets that span continents", 1)[1]
    return Config.from_toml(section.split("```toml\n", 1)[1].split("```", 1)[0])
