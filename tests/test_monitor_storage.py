"""``/readyz`` and ``/metrics`` name a storage problem (the driver's view says it): a full disk
and a failed storage make the node not ready, with the cause, and set their gauges."""

from __future__ import annotations

from types import SimpleNamespace

from tsconsensus.monitor_server import readiness, storage_gauges, storage_problem
from tsconsensus.types import NodeStatus, RaftState

READY = NodeStatus("a", "127.0.0.1", RaftState.LEADER, "a", 2, 5, 5, True)


def _node(problem: str) -> SimpleNamespace:
    return SimpleNamespace(storage_problem=problem)


def test_a_storage_problem_makes_the_node_not_ready_with_its_cause() -> None:
    assert storage_problem(_node("")) is None
    assert readiness(READY, storage_problem(_node(""))) is None
    full = storage_problem(_node("disk full: writing /s/wal/x.wal: no space left"))
    assert readiness(READY, full) == "disk full: writing /s/wal/x.wal: no space left"
    failed = storage_problem(_node("storage failed: fsync of /s/wal/x.wal failed"))
    assert readiness(READY, failed) == "storage failed: fsync of /s/wal/x.wal failed"


def test_the_storage_gauges() -> None:
    def gauges(problem: str | None) -> dict[str, int]:
        lines = storage_gauges(problem).splitlines()
        return {ln.split()[0]: int(ln.split()[1]) for ln in lines if not ln.startswith("#")}

    assert gauges(None) == {"tsc_storage_disk_full": 0, "tsc_storage_failed": 0}
    assert gauges("disk full: x") == {"tsc_storage_disk_full": 1, "tsc_storage_failed": 0}
    assert gauges("storage failed: x") == {"tsc_storage_disk_full": 0, "tsc_storage_failed": 1}
