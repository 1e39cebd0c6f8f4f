"""ReadyWriter: which Readies must be written, the hard state written with them, and the write
on the disk thread (pure units: a memory storage, a real disk worker on a real loop)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tsconsensus.errors import StorageError
from tsconsensus.raft.disk_worker import DiskWorker
from tsconsensus.raft.memory_storage import MemoryStorage
from tsconsensus.raft.messages import Entry, HardState, Ready
from tsconsensus.raft.ready_writer import ReadyWriter

ON_DISK = HardState(term=3, vote=7, commit=10)


def _writer(storage: Any = None) -> ReadyWriter:
    disk: Any = None  # these tests never submit
    return ReadyWriter(storage or MemoryStorage(), disk, ON_DISK)


def test_only_entries_a_snapshot_or_a_new_term_or_vote_must_be_written() -> None:
    w = _writer()
    assert not w.must_write(Ready())
    assert not w.must_write(Ready(hard_state=HardState(3, 7, 12)))  # a commit index only
    assert w.must_write(Ready(hard_state=HardState(4, 7, 10)))  # a new term
    assert w.must_write(Ready(hard_state=HardState(3, 8, 10)))  # a new vote
    assert w.must_write(Ready(entries=(Entry(11, 3),)))


def test_a_write_makes_its_vote_the_durable_one() -> None:
    w = _writer()
    w.write(Ready(hard_state=HardState(5, 2, 10)), HardState(5, 2, 10))
    assert w.storage.hard_state.term == 5
    assert not w.must_write(Ready(hard_state=HardState(5, 2, 11)))
    assert w.must_write(Ready(hard_state=HardState(3, 7, 10)))  # what was durable before


def test_the_hard_state_written_with_entries_is_capped_at_their_last_index() -> None:
    w = _writer()
    core: Any = SimpleNamespace(term=3, vote=7, commit=40)
    rd = Ready(entries=(Entry(11, 3), Entry(12, 3)))
    # the commit index moved past what this write holds (a write held up by a full disk)
    assert w.hard_state(rd, core) == HardState(3, 7, 12)
    own = HardState(4, 1, 9)
    assert w.hard_state(Ready(hard_state=own, entries=(Entry(11, 4),)), core) is own
    assert w.hard_state(Ready(), core) is None


def test_submit_writes_on_the_disk_thread_and_reports_on_the_loop() -> None:
    class Failing(MemoryStorage):
        def save(self, *args: Any, **kwargs: Any) -> None:
            raise StorageError("fdatasync failed: EIO")

    async def run() -> list[object]:
        loop = asyncio.get_running_loop()
        disk = DiskWorker(loop, "test-disk")
        disk.start()
        outcomes: list[object] = []
        done = asyncio.Event()
        try:
            good = ReadyWriter(MemoryStorage(), disk, ON_DISK)
            bad = ReadyWriter(Failing(), disk, ON_DISK)
            rd = Ready(entries=(Entry(1, 3),))  # the first entry of an empty log
            good.submit(
                rd, good.hard_state(rd, SimpleNamespace(term=3, vote=7, commit=1)), outcomes.append
            )
            bad.submit(rd, None, lambda exc: (outcomes.append(exc), done.set()))
            await asyncio.wait_for(done.wait(), 10)
            assert good.storage.last_index == 1
            return outcomes
        finally:
            disk.stop()

    first, second = asyncio.run(run())
    assert first is None
    assert isinstance(second, StorageError)
