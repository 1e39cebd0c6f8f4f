"""A full disk under a real node (issue 8, item 4): one node's state directory is a small tmpfs
that the test fills. That node acknowledges nothing it could not make durable, hands over
leadership, fails ``/readyz`` with the cause, shows it in ``/metrics``, logs it once; the
others go on; once the space is back it catches up by itself. A single node on a full disk
acknowledges nothing, then commits once space returns.

Needs root (mount); skipped with the reason otherwise. WAL segments are made small
(``TSC_WAL_SEGMENT_BYTES``) so the node needs a new one, and meets the full disk, after a few
dozen commands rather than after 64 MiB."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tsconsensus.errors import TsconsensusError
from tsconsensus.raft.driver import DISK_FULL_RETRY_S
from tsconsensus.testing import LocalCluster

from .conftest import FAST_RAFT
from .helpers import converged_hashes, eventually

Make = Callable[..., LocalCluster]
SMALL_SEGMENTS = {"TSC_WAL_SEGMENT_BYTES": "8192"}
TMPFS_SIZE = "256k"


class Tmpfs:
    """A tmpfs mounted at ``path`` for one test; :meth:`fill` takes all its space."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> int:
        """Write a file until the tmpfs is full; the bytes written."""
        written = 0
        chunk = b"\xff" * 4096
        with open(self.filler, "ab") as f:
            while True:
                try:
                    n = os.write(f.fileno(), chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    return written
                written += n
                if n < len(chunk):  # short write: the last page; the next raises ENOSPC
                    chunk = chunk[:1]

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def tmpfs_at() -> Iterator[Callable[..., Tmpfs]]:
    """Mount a small tmpfs at a path; skip if this process may not mount. Request it before
    ``make_cluster``: fixtures are torn down in reverse, so the nodes are stopped (by PID)
    before the unmount."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = TMPFS_SIZE) -> Tmpfs:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return Tmpfs(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def _get(cluster: LocalCluster, i: int, path: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=cluster.addresses[i])
    with httpx.Client(transport=transport, timeout=5.0) as client:
        return client.get(f"http://{cluster.monitor_address(i)}{path}")


def _ready(cluster: LocalCluster, i: int) -> bool:
    return _get(cluster, i, "/readyz").status_code == 200


def _disk_full_gauge(cluster: LocalCluster, i: int) -> int:
    for line in _get(cluster, i, "/metrics").text.splitlines():
        if line.startswith("tsc_storage_disk_full "):
            return int(line.split()[1])
    raise AssertionError("no tsc_storage_disk_full gauge in /metrics")


def _not_ready_because_disk_full(cluster: LocalCluster, i: int) -> dict[str, Any] | None:
    response = _get(cluster, i, "/readyz")
    body: dict[str, Any] = response.json()
    if response.status_code == 503 and "disk full" in str(body.get("error")):
        return body
    return None


def _match_of(cluster: LocalCluster, leader: int, i: int) -> int:
    """Node ``i``'s match index as the leader sees it: what ``i`` acknowledged as durable."""
    for m in cluster.status(leader)["members"]:
        if m["id"] == cluster.node_id(i):
            return int(m["match_index"])
    raise AssertionError(f"node{i + 1} is not a member")


def _start(cluster: LocalCluster) -> None:
    cluster.write()
    for i in range(cluster.size):
        cluster.start_node(i, extra_env=SMALL_SEGMENTS)
    cluster.wait_ready(30)


def test_a_full_disk_stops_one_node_acknowledging_and_it_catches_up_after(
    tmpfs_at: Callable[..., Tmpfs], make_cluster: Make
) -> None:
    cluster = make_cluster(3, start=False)
    disk = tmpfs_at(Path(cluster.state_dir(0)))
    _start(cluster)
    # the node on the small disk leads: a full disk must make it hand over
    if cluster.wait_for_leader() != 0:
        with cluster.client(1) as c:
            c.transfer_leadership(cluster.node_id(0))
    eventually(lambda: cluster.leader_index() == 0, 15, what="node1 to lead")
    assert _disk_full_gauge(cluster, 0) == 0
    disk.fill()

    written = 0

    def write_until_node1_is_full() -> dict[str, Any] | None:
        nonlocal written
        with contextlib.suppress(TsconsensusError):  # refused while leadership moves
            cluster.execute(1 + written % 2, "set", {f"a{written}": written}, timeout=5)
            written += 1
        return _not_ready_because_disk_full(cluster, 0)

    body = eventually(write_until_node1_is_full, 60, what="node1's disk to be full")
    assert body["error"].startswith("not ready: disk full: "), body
    assert str(disk.path) in body["error"], body
    assert _disk_full_gauge(cluster, 0) == 1

    # it handed over: another node leads, and commands through either other node commit
    leader = eventually(lambda: cluster.leader_index([1, 2]), 20, what="a new leader")
    # node1's durable log ends before the new leader's first entry, which this write's
    # commit covers: no entry above this commit index may be acknowledged by node1 now
    cluster.execute(1, "set", {"first": 1}, timeout=10)
    durable_bound = cluster.status(leader)["commit_index"]
    full_since, done = time.monotonic(), 0

    def write_through_the_others() -> bool:
        # a few seconds' worth: the full node retries its write every second meanwhile
        nonlocal done
        cluster.execute(1 + done % 2, "set", {f"b{done}": done}, timeout=10)
        done += 1
        return done >= 20 and time.monotonic() - full_since > 3 * DISK_FULL_RETRY_S

    eventually(write_through_the_others, 60, what="writes through the other two")
    commit = cluster.status(leader)["commit_index"]
    assert commit >= durable_bound + done
    assert _match_of(cluster, leader, 0) <= durable_bound, "node1 acknowledged a new entry"
    assert cluster.status(0)["state"] != "leader"
    assert _not_ready_because_disk_full(cluster, 0)
    log = cluster.log_path(0).read_text(errors="replace")
    assert log.count("disk full: acknowledging nothing until space returns") == 1, log

    disk.free()
    eventually(lambda: _ready(cluster, 0), 20, what="node1 ready again")
    eventually(lambda: _match_of(cluster, leader, 0) >= commit, 20, what="node1 to catch up")
    assert _disk_full_gauge(cluster, 0) == 0
    assert "disk space is back: writes resume" in cluster.log_path(0).read_text(errors="replace")
    hashes = converged_hashes(cluster, [0, 1, 2])
    assert len(set(hashes.values())) == 1, hashes
    with cluster.client(0) as c:
        assert c.execute("get", {"key": f"b{done - 1}"}).result == done - 1


def test_a_follower_without_fsync_on_a_full_disk_applies_everything_once_space_returns(
    tmpfs_at: Callable[..., Tmpfs], make_cluster: Make
) -> None:
    # Without fsync a follower writes on its loop and hands committed entries to its machine
    # after that write; when the write fails for want of space they must still be handed
    # out (they were durable before it), once, and in order with all that follows.
    cluster = make_cluster(3, start=False)
    cluster.node_overrides[0] = {"storage": {"fsync": False}}
    disk = tmpfs_at(Path(cluster.state_dir(0)))
    _start(cluster)
    leader = cluster.wait_for_leader()
    if leader == 0:
        with cluster.client(0) as c:
            c.transfer_leadership(cluster.node_id(1))
    leader = eventually(lambda: cluster.leader_index([1, 2]), 15, what="node2 or node3 to lead")
    disk.fill()
    written = 0

    def write(key: str) -> None:
        cluster.execute(leader, "set", {key: 1}, timeout=10)

    # concurrent writers: appends then carry commits, so the write that fails has some
    with ThreadPoolExecutor(16) as pool:

        def write_until_node1_is_full() -> dict[str, Any] | None:
            nonlocal written
            list(pool.map(write, [f"a{written + i}" for i in range(16)]))
            written += 16
            return _not_ready_because_disk_full(cluster, 0)

        eventually(write_until_node1_is_full, 60, what="node1's disk to be full")
        list(pool.map(write, [f"b{i}" for i in range(64)]))
    assert _not_ready_because_disk_full(cluster, 0)
    disk.free()
    eventually(lambda: _ready(cluster, 0), 20, what="node1 ready again")
    hashes = converged_hashes(cluster, [0, 1, 2])
    assert len(set(hashes.values())) == 1, hashes
    with cluster.client(0) as c:
        assert c.execute("get", {"key": f"a{written - 1}"}).result == 1


def test_a_single_node_on_a_full_disk_acknowledges_nothing_until_space_returns(
    tmpfs_at: Callable[..., Tmpfs], make_cluster: Make
) -> None:
    cluster = make_cluster(1, start=False)
    disk = tmpfs_at(Path(cluster.state_dir(0)))
    _start(cluster)
    disk.fill()
    request_id = ""
    acknowledged = 0

    def write_until_refused() -> bool:
        nonlocal request_id, acknowledged
        request_id = uuid.uuid4().hex
        try:
            cluster.execute(0, "set", {f"k{acknowledged}": 1}, request_id=request_id, timeout=3)
        except TsconsensusError:
            return True  # no acknowledgement: timed out or refused
        acknowledged += 1
        return False

    eventually(write_until_refused, 60, what="a write the full disk cannot take")
    refused = f"k{acknowledged}"
    assert _not_ready_because_disk_full(cluster, 0)
    with pytest.raises(TsconsensusError):
        cluster.execute(0, "set", {"later": 1}, timeout=3)

    disk.free()
    eventually(lambda: _ready(cluster, 0), 20, what="ready again")
    # the unacknowledged command, retried under its id, now commits (once); new ones too
    with cluster.client(0) as c:
        c.execute("set", {refused: 1}, request_id=request_id, timeout=10)
        c.execute("set", {"after": 2}, timeout=10)
        assert c.execute("get", {"key": refused}).result == 1
        assert c.execute("get", {"key": "after"}).result == 2
    assert _disk_full_gauge(cluster, 0) == 0


def test_a_snapshot_the_full_disk_refused_is_saved_once_space_returns(
    tmpfs_at: Callable[..., Tmpfs], make_cluster: Make
) -> None:
    # a full 64 MiB segment fits: the WAL writes into its preallocated space and goes on
    # acknowledging (durably); only the snapshot files, new ones, meet the full disk
    raft = {**FAST_RAFT, "compaction_min_entries": 20}
    cluster = make_cluster(1, start=False, raft_overrides=raft)
    disk = tmpfs_at(Path(cluster.state_dir(0)), size="80m")
    cluster.start(wait=True, timeout=30)
    disk.fill()
    log_path = cluster.log_path(0)
    done = 0

    def write_until_retried() -> bool:
        nonlocal done
        cluster.execute(0, "set", {f"k{done}": done}, timeout=10)
        done += 1
        log = log_path.read_text(errors="replace")
        return done >= 60 and "cannot save a snapshot, the disk is full" in log

    eventually(write_until_retried, 60, what="a snapshot refused by the full disk")
    refused_at = time.monotonic()
    eventually(
        lambda: write_until_retried() and time.monotonic() - refused_at > 3 * DISK_FULL_RETRY_S,
        30,
        what="a few retries of the snapshot",
    )
    assert _ready(cluster, 0)  # the log still takes writes: the node still serves
    log = log_path.read_text(errors="replace")
    assert log.count("cannot save a snapshot, the disk is full") == 1, log

    disk.free()
    eventually(
        lambda: "disk space is back: the snapshot at" in log_path.read_text(errors="replace"),
        20,
        what="the snapshot saved once space is back",
    )
    assert list((disk.path / "snapshots").glob("*"))
    with cluster.client(0) as c:
        assert c.execute("get", {"key": f"k{done - 1}"}).result == done - 1
