"""The library API in-process, as a Python developer would use it."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tsconsensus as tsc
from tsconsensus.testing import RecordingStateMachine

from .conftest import FAST_RAFT, unique_loopback_base
from .helpers import eventually

ROOT = Path(__file__).resolve().parent.parent


def _config(**sections: object) -> tsc.Config:
    """A node config of these tests: nothing kept on disk, one secret for the whole cluster."""
    return tsc.Config(
        cluster=tsc.ClusterConfig(tag="tag:t", secret="library-tests"),
        storage=tsc.StorageConfig(state_dir=":memory:"),
        **sections,  # type: ignore[arg-type]
    )


def _lone_node(machine: tsc.StateMachine | None = None) -> tsc.Consensus:
    """A started one-member cluster on a fresh loopback address (the caller stops it)."""
    base = unique_loopback_base().rsplit(".", 1)[0]
    peers = [tsc.StaticPeer(f"{base}.1", tags=("tag:t",))]
    return tsc.start(
        tsc.StaticTailnet(f"{base}.1", peers), machine or tsc.KeyValueMachine(), "tag:t", _config()
    )


def test_the_readme_example_runs_and_is_the_example_file() -> None:
    example = (ROOT / "examples" / "counter.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert example.strip() in readme, "README's library example drifted from examples/counter.py"
    base = unique_loopback_base().rsplit(".", 1)[0]
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import runpy; runpy.run_path('examples/counter.py', run_name='x')['main']({base!r})",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    values = [int(v) for v in re.findall(r"-> (\d+) at index", run.stdout)]
    assert values == [10, 20, 30]
    assert "error comes back as data: unknown command 'multiply'" in run.stdout


def _cluster(base: str, machines: list[tsc.StateMachine], **cfg: object) -> list[tsc.Consensus]:
    peers = [tsc.StaticPeer(f"{base}.{i + 1}", tags=("tag:t",)) for i in range(len(machines))]
    config = _config(raft=tsc.RaftConfig(**FAST_RAFT), **cfg)  # type: ignore[arg-type]
    nodes = []
    try:
        for peer, machine in zip(peers, machines, strict=True):
            nodes.append(
                tsc.start(tsc.StaticTailnet(peer.address, peers), machine, "tag:t", config)
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def test_execute_from_any_node_async_too() -> None:
    import asyncio

    machines = [RecordingStateMachine() for _ in range(3)]
    nodes = _cluster(unique_loopback_base().rsplit(".", 1)[0], machines)  # type: ignore[arg-type]
    try:
        nodes[0].wait_for_leader(15)
        assert nodes[2].execute_command(tsc.Command("a", 1)).result == 1

        async def run() -> list[tsc.CommandResult]:
            return await asyncio.gather(
                *(n.execute_command_async(tsc.Command("b", i)) for i, n in enumerate(nodes))
            )

        results = asyncio.run(run())
        assert sorted(r.result for r in results) == [2, 3, 4]  # type: ignore[type-var]
        status = nodes[1].status()
        assert status.leader is not None and status.term >= 1
        assert len(status.members) == 3
        # followers learn the last commit index a moment later (a commit notice waits a few
        # ms for an append to carry it); every machine gets every command, in one order
        eventually(
            lambda: all(len(m.applied) == 4 for m in machines),
            10,
            what="every node to apply all four commands",
        )
    finally:
        for node in nodes:
            node.stop()
    assert machines[0].applied == machines[1].applied == machines[2].applied


def test_a_node_without_the_tag_cannot_start() -> None:
    base = unique_loopback_base().rsplit(".", 1)[0]
    peers = [tsc.StaticPeer(f"{base}.1", tags=("tag:other",))]
    with pytest.raises(tsc.NotTaggedError, match="does not carry the cluster tag tag:t"):
        tsc.start(tsc.StaticTailnet(f"{base}.1", peers), tsc.KeyValueMachine(), "tag:t", _config())


def test_a_port_in_use_is_a_clear_error() -> None:
    import socket

    base = unique_loopback_base().rsplit(".", 1)[0]
    peers = [tsc.StaticPeer(f"{base}.1", tags=("tag:t",))]
    with socket.socket() as blocker:
        blocker.bind((f"{base}.1", 6271))
        blocker.listen()
        with pytest.raises(tsc.TsconsensusError, match=r"cannot listen on .*6271"):
            tsc.start(
                tsc.StaticTailnet(f"{base}.1", peers), tsc.KeyValueMachine(), "tag:t", _config()
            )
    # nothing was left bound: the same node starts now
    node = tsc.start(
        tsc.StaticTailnet(f"{base}.1", peers), tsc.KeyValueMachine(), "tag:t", _config()
    )
    node.stop()


def test_bad_arguments_raise_before_anything_is_committed() -> None:
    node = _lone_node()
    try:
        node.wait_for_leader(10)
        with pytest.raises(tsc.InvalidCommandError):
            node.execute_command(tsc.Command("set", {"x": float("inf")}))
        with pytest.raises(tsc.InvalidCommandError):
            node.execute_command(tsc.Command("set", {"x": "y" * 2_000_000}))
        assert node.execute_command(tsc.Command("keys", {})).result == []
    finally:
        node.stop()


@pytest.mark.parametrize("quick", [False, True], ids=["apply-thread", "quick-apply"])
def test_an_apply_that_executes_a_command_fails_fast_instead_of_deadlocking(quick: bool) -> None:
    class Reentrant(RecordingStateMachine):
        node: tsc.Consensus | None = None
        quick_apply = quick

        def apply(self, command: tsc.Command) -> tsc.JSON:
            if command.name == "nested" and self.node is not None:
                self.node.execute_command(tsc.Command("x", None), timeout=5)
            return super().apply(command)

    machine = Reentrant()
    node = _lone_node(machine)
    machine.node = node
    try:
        node.wait_for_leader(10)
        started = time.monotonic()
        outcome = node.execute_command(tsc.Command("nested", None))
        assert time.monotonic() - started < 2
        assert outcome.error is not None and "inside apply()" in outcome.error
        assert node.execute_command(tsc.Command("after", None)).error is None
    finally:
        node.stop()


def test_a_failing_snapshot_pauses_compaction_but_not_the_cluster() -> None:
    class NoSnapshots(RecordingStateMachine):
        def snapshot(self) -> bytes:
            raise RuntimeError("cannot snapshot")

    base = unique_loopback_base().rsplit(".", 1)[0]
    peers = [tsc.StaticPeer(f"{base}.{i}", tags=("tag:t",)) for i in (1, 2, 3)]
    raft = tsc.RaftConfig(**{**FAST_RAFT, "compaction_min_entries": 10})  # type: ignore[arg-type]
    nodes = [
        tsc.start(tsc.StaticTailnet(p.address, peers), NoSnapshots(), "tag:t", _config(raft=raft))
        for p in peers
    ]
    try:
        nodes[0].wait_for_leader(10)
        started = time.monotonic()
        for n in range(60):  # well past the compaction threshold, on every node
            assert nodes[n % 3].execute_command(tsc.Command("x", n), timeout=5).error is None
        assert time.monotonic() - started < 10
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.parametrize("quick", [False, True], ids=["apply-thread", "quick-apply"])
def test_apply_stays_on_the_apply_thread_unless_the_machine_declares_it_quick(quick: bool) -> None:
    class Where(RecordingStateMachine):
        quick_apply = quick

        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def apply(self, command: tsc.Command) -> tsc.JSON:
            self.threads.add(threading.current_thread().name)
            return super().apply(command)

    machine = Where()
    node = _lone_node(machine)
    try:
        node.wait_for_leader(10)
        for i in range(50):
            assert node.execute_command(tsc.Command("x", i)).error is None
        assert [args for _, args in machine.applied] == list(range(50))  # in order, once each
    finally:
        node.stop()
    if quick:  # an idle apply thread: the loop applied (some of) them itself
        assert any(name.startswith("tsc-loop") for name in machine.threads), machine.threads
    else:
        assert {name.split("-")[1] for name in machine.threads} == {"apply"}, machine.threads


def test_a_command_after_stop_fails_as_no_leader_and_leaves_nothing_queued() -> None:
    node = _lone_node()
    try:
        node.wait_for_leader(10)
        assert node.execute_command(tsc.Command("set", {"x": 1})).error is None
    finally:
        node.stop()
    with pytest.raises(tsc.NoLeaderError):  # not a timeout with the outcome unknown
        node.execute_command(tsc.Command("set", {"x": 2}), timeout=1.0)
    engine = node._engine  # the stopped engine queued nothing for a loop that is gone
    assert engine is not None and not engine._waiters and not engine._queue
