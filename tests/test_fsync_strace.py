"""An fsync check that does not trust the code (issue 8): three node processes run under strace,
which records every ``pwrite64`` and ``fdatasync`` with the file behind the descriptor and the
time. For N sequential commands, each acknowledged to the client, the trace must show on the
leader AND on at least one follower (a majority of three) a write of that command's bytes to a
WAL segment, then an fdatasync of that same segment that had finished before the client got
its acknowledgement. strace's clock (``-ttt``) is the wall clock the client reads. The same
check fails on nodes with the planted bug ``ack-before-sync``: it can fail."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tsconsensus.testing import LocalCluster

from .helpers import eventually
from .node_process import NodeProcess

Make = Callable[..., LocalCluster]
COMMANDS = 20
STRACE = ["strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-y", "-s", "4096"]
TRACED = "trace=pwrite64,fdatasync"

# pid time name(fd<path>, rest) = result <duration>, possibly split by other threads into
# "... <unfinished ...>" and "pid time <... name resumed>rest) = result <duration>"
_WHOLE = re.compile(r"^(\d+) +([\d.]+) (\w+)\(\d+<([^>]*)>(.*)\) += (-?\d+)[^<]*<([\d.]+)>$")
_START = re.compile(r"^(\d+) +([\d.]+) (\w+)\(\d+<([^>]*)>(.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+) +[\d.]+ <\.\.\. (\w+) resumed>(.*)\) += (-?\d+)[^<]*<([\d.]+)>$")


@dataclass(frozen=True)
class Call:
    name: str
    path: str
    args: str
    start: float
    end: float
    ok: bool


def parse_trace(text: str) -> list[Call]:
    """The traced calls on descriptors, in the order they started."""
    calls: list[Call] = []
    open_calls: dict[str, tuple[str, str, str, float]] = {}
    for line in text.splitlines():
        if m := _WHOLE.match(line):
            _, ts, name, path, args, result, took = m.groups()
            calls.append(Call(name, path, args, float(ts), float(ts) + float(took), result != "-1"))
        elif m := _START.match(line):
            pid, ts, name, path, args = m.groups()
            open_calls[pid] = (name, path, args, float(ts))
        elif m := _RESUMED.match(line):
            pid, name, rest, result, took = m.groups()
            if pid in open_calls:
                name, path, args, ts = open_calls.pop(pid)
                calls.append(Call(name, path, args + rest, ts, ts + float(took), result != "-1"))
    return sorted(calls, key=lambda c: c.start)


def _is_wal(path: str) -> bool:
    return "/wal/" in path and path.endswith(".wal")


def synced_before(calls: list[Call], marker: str, ack: float) -> bool:
    """Whether ``calls`` hold a write of ``marker`` to a WAL segment followed by an
    fdatasync of that segment that finished before ``ack``."""
    for write in calls:
        if write.name != "pwrite64" or not write.ok or not _is_wal(write.path):
            continue
        if marker not in write.args:
            continue
        for sync in calls:
            same_file = sync.name == "fdatasync" and sync.path == write.path and sync.ok
            if same_file and sync.start >= write.end and sync.end <= ack:
                return True
    return False


@pytest.fixture
def traced() -> Iterator[list[NodeProcess]]:
    procs: list[NodeProcess] = []
    yield procs
    for p in procs:
        p.stop()


def _ready(cluster: LocalCluster, i: int) -> bool:
    with cluster.monitor(i, timeout=2.0) as m:
        return m.ready()


def _acks_without_majority_sync(
    cluster: LocalCluster, traced: list[NodeProcess], env: dict[str, str]
) -> tuple[int, list[tuple[str, bool, list[int]]]]:
    """Run ``COMMANDS`` sequential commands through the leader of three traced nodes; the
    leader's index and the acknowledgements that no majority had synced."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    cluster.write()
    traces = [cluster.directory / f"trace{i}" for i in range(3)]
    for i in range(3):
        prefix = [*STRACE, "-e", TRACED, "-o", str(traces[i])]
        traced.append(NodeProcess(cluster, i, prefix=prefix, env=env))
    for p in traced:
        if p.proc.poll() is not None and "ptrace" in p.text():
            pytest.skip(f"strace cannot trace here: {p.text().strip()[:200]}")
    everyone = [0, 1, 2]
    eventually(lambda: all(_ready(cluster, i) for i in everyone), 60, what="three ready nodes")
    leader = cluster.wait_for_leader(30, among=everyone)

    acks: list[tuple[str, float]] = []
    with cluster.client(leader) as client:
        for k in range(COMMANDS):
            marker = f"strace-{k:04d}-{time.time_ns()}"
            client.execute("set", {marker: k}, timeout=10)
            acks.append((marker, time.time()))
    assert cluster.leader_index(everyone) == leader, "the leader changed: rerun"
    for p in traced:
        p.stop()

    calls = [parse_trace(t.read_text(errors="replace")) for t in traces]
    assert any(c.name == "fdatasync" for c in calls[leader]), "nothing traced: strace output?"
    followers = [i for i in everyone if i != leader]
    missing = []
    for marker, ack in acks:
        on_leader = synced_before(calls[leader], marker, ack)
        on_followers = [i for i in followers if synced_before(calls[i], marker, ack)]
        if not on_leader or not on_followers:
            missing.append((marker, on_leader, on_followers))
    return leader, missing


def test_every_acknowledgement_follows_an_fdatasync_of_the_wal_on_a_majority(
    make_cluster: Make, traced: list[NodeProcess]
) -> None:
    _, missing = _acks_without_majority_sync(make_cluster(3, start=False), traced, {})
    assert missing == [], f"acknowledged before an fdatasync on a majority: {missing}"


def test_the_check_catches_nodes_that_acknowledge_before_syncing(
    make_cluster: Make, traced: list[NodeProcess]
) -> None:
    env = {"TSC_PLANTED_BUG": "ack-before-sync"}
    _, missing = _acks_without_majority_sync(make_cluster(3, start=False), traced, env)
    # each write waits for a pause in writes before it is synced: most acks come before
    assert len(missing) >= COMMANDS // 2, missing


def test_the_check_sees_an_acknowledgement_without_fdatasync() -> None:
    """The check itself: a write with no fdatasync after it, or one that ended after the
    acknowledgement, or on another file, does not count."""
    wal = "/s/wal/0000000000000001-0000000000000001.wal"
    text = "\n".join(
        [
            f'7 10.000000 pwrite64(4<{wal}>, "..m1..", 6, 0) = 6 <0.000010>',
            f"7 10.000100 fdatasync(4<{wal}>) = 0 <0.000200>",
            f'7 11.000000 pwrite64(4<{wal}>, "..m2..", 6, 6) = 6 <0.000010>',
            f"7 11.000100 fdatasync(4<{wal}>) = 0 <0.500000>",
            f'7 12.000000 pwrite64(4<{wal}>, "..m3..", 6, 12) = 6 <0.000010>',
            "7 12.000100 fdatasync(5</s/snapshots/x.tmp>) = 0 <0.000100>",
            f'7 13.000000 pwrite64(4<{wal}>, "..m4.." <unfinished ...>',
            "8 13.000001 fdatasync(9</s/other>) = 0 <0.000100>",
            "7 13.000050 <... pwrite64 resumed>, 6, 18) = 6 <0.000050>",
            f"7 13.000100 fdatasync(4<{wal}>) = -1 EIO (Input/output error) <0.000100>",
        ]
    )
    calls = parse_trace(text)
    assert len(calls) == 9
    assert synced_before(calls, "m1", 10.5)
    assert not synced_before(calls, "m1", 10.0002)  # the ack came before the sync ended
    assert not synced_before(calls, "m2", 11.2)
    assert not synced_before(calls, "m3", 13.0)  # only another file was synced
    assert not synced_before(calls, "m4", 14.0)  # its fdatasync failed
