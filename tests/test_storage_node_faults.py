"""A node process whose storage fails: a failed fsync ends it at once with one line and a
non-zero exit (no retry, no traceback), and so does a WAL damaged in the middle when it starts
(the line names the file, the offset and how to recover). Real node processes, loopback only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tsconsensus.errors import TsconsensusError
from tsconsensus.raft.wal_records import scan_segment
from tsconsensus.testing import LocalCluster

from .helpers import eventually
from .node_process import NodeProcess


@pytest.fixture
def started() -> Iterator[list[NodeProcess]]:
    """Node processes a test starts itself; each is stopped by its PID afterwards."""
    procs: list[NodeProcess] = []
    yield procs
    for p in procs:
        p.stop()


def _error_line(text: str) -> str:
    """The line `tsc node start` ended with; and check nothing in the output is a traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the node printed nothing"
    return lines[-1]


def test_a_failed_fsync_stops_the_node_with_one_line(
    make_cluster: Callable[..., LocalCluster], started: list[NodeProcess]
) -> None:
    cluster = make_cluster(1, start=False)
    cluster.write()
    # the 8th fdatasync comes after the founding and the first election: with a leader
    node = NodeProcess(cluster, 0, env={"TSC_INJECT_FSYNC_ERROR": "8"})
    started.append(node)
    acknowledged = []

    def write_until_it_stops() -> bool:
        if node.proc.poll() is not None:
            return True
        try:
            cluster.execute(0, "set", {f"k{len(acknowledged)}": 1})
            acknowledged.append(len(acknowledged))
        except TsconsensusError:
            pass  # still starting, or the failed write itself
        return False

    eventually(write_until_it_stops, 30, what="the node to stop on its failed fsync")
    code = node.wait_exit(10)
    text = node.text()
    line = _error_line(text)
    wal = str(Path(cluster.state_dir(0)) / "wal")
    assert code != 0, text
    assert line.startswith(f"error: fsync of {wal}/"), line
    assert "the kernel may have dropped the unwritten data, so it is not retried" in line
    assert "before starting the node on it again" in line
    # it stopped at the first failure: no second attempt, and its log says it only once
    assert text.count("fsync of ") == 2, text  # the log's critical line and the exit line


def _corrupt_a_middle_frame(state_dir: Path) -> tuple[Path, int]:
    segments = sorted((state_dir / "wal").glob("*.wal"))
    assert segments, f"no WAL segment in {state_dir}"
    path = segments[0]
    frames = scan_segment(path.read_bytes()).frames
    assert len(frames) >= 4, f"only {len(frames)} frames in {path}"
    frame = frames[len(frames) // 2]
    with open(path, "r+b") as f:
        f.seek(frame.offset + 20)
        byte = f.read(1)[0]
        f.seek(frame.offset + 20)
        f.write(bytes([byte ^ 0x01]))
    return path, frame.offset


def test_a_corrupt_wal_stops_the_node_at_start_naming_file_offset_and_remedy(
    make_cluster: Callable[..., LocalCluster], started: list[NodeProcess]
) -> None:
    cluster = make_cluster(1)
    for k in range(10):
        cluster.execute(0, "set", {f"k{k}": k})
    cluster.stop_node(0)
    path, offset = _corrupt_a_middle_frame(Path(cluster.state_dir(0)))

    node = NodeProcess(cluster, 0)
    started.append(node)
    code = node.wait_exit(20)
    line = _error_line(node.text())
    assert code != 0
    assert line.startswith(f"error: corrupt record in {path} at offset {offset} "), line
    assert "wipe its state directory" in line and "tsc members remove" in line
