"""The apply thread: log order always, and (inline mode) entries applied on the caller's
thread only when nothing waits before them, and reads of an applied index likewise."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tests.helpers import eventually
from tsconsensus.raft import Entry, EntryKind
from tsconsensus.raft.apply_worker import ApplyWorker


def _entries(*indexes: int) -> list[Entry]:
    return [Entry(i, 1, EntryKind.NORMAL, b"x", 0) for i in indexes]


class _Recorder:
    def __init__(self) -> None:
        self.applied: list[tuple[int, str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, entries: Sequence[Entry]) -> None:
        self.gate.wait(10)
        for e in entries:
            self.applied.append((e.index, threading.current_thread().name))

    def snapshot(self) -> tuple[int, bytes]:
        return self.applied[-1][0] if self.applied else 0, b""


def _worker(recorder: _Recorder, *, inline: bool) -> ApplyWorker:
    worker = ApplyWorker(
        name="apply-under-test",
        applied=0,
        apply=recorder.apply,
        take_snapshot=recorder.snapshot,
        restore=lambda snapshot: None,
        on_snapshot=lambda index, data: None,
        inline=inline,
    )
    worker.start()
    return worker


def test_an_idle_worker_lets_the_caller_apply_at_once() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=True)
    try:
        worker.apply(_entries(1, 2))
        # applied before apply() returned, on this thread, which counts as the apply thread
        assert recorder.applied == [(1, "MainThread"), (2, "MainThread")]
        assert worker.applied == 2
    finally:
        worker.stop(5)


def test_a_busy_worker_keeps_the_log_order() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=True)
    try:
        recorder.gate.clear()  # the worker will hang in apply until the gate opens
        worker.take_snapshot()  # queued: the next applies may not overtake it
        worker.call(lambda: recorder.apply(_entries(1)))
        worker.apply(_entries(2))  # queued behind them, not applied inline
        worker.apply(_entries(3))
        assert recorder.applied == []
        recorder.gate.set()
        eventually(lambda: worker.applied == 3, timeout=10)
        assert [i for i, _ in recorder.applied] == [1, 2, 3]
        assert {who for _, who in recorder.applied} == {"apply-under-test"}
        worker.apply(_entries(4))  # idle again: inline
        assert recorder.applied[-1] == (4, "MainThread")
    finally:
        worker.stop(5)


def test_without_inline_everything_runs_on_the_worker() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=False)
    try:
        worker.apply(_entries(1))
        eventually(lambda: worker.applied == 1, timeout=10)
        assert recorder.applied == [(1, "apply-under-test")]
    finally:
        worker.stop(5)


def test_a_read_waits_for_its_index_whichever_thread_applies() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=True)
    done: list[bool] = []
    try:
        worker.read(2, done.append)
        eventually(lambda: worker._pending == 0, timeout=10)  # the read is registered
        worker.apply(_entries(1))
        assert done == []
        worker.apply(_entries(2))
        eventually(lambda: done == [True], timeout=10)
    finally:
        worker.stop(5)


def test_a_read_of_an_applied_index_is_answered_on_the_caller_when_idle() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=True)
    answered: list[tuple[bool, str, bool]] = []

    def done(ok: bool) -> None:
        answered.append((ok, threading.current_thread().name, worker.on_thread()))

    try:
        worker.apply(_entries(1, 2))
        worker.read(2, done)
        # answered before read() returned, on this thread, which counts as the apply thread
        assert answered == [(True, "MainThread", True)]
        assert not worker.on_thread()
    finally:
        worker.stop(5)


def test_a_read_never_overtakes_queued_work() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=True)
    answered: list[str] = []
    try:
        worker.apply(_entries(1))
        recorder.gate.clear()
        worker.call(lambda: recorder.apply(_entries(2)))  # the worker hangs here
        worker.read(1, lambda ok: answered.append(threading.current_thread().name))
        assert answered == []  # index 1 is applied, but work queued before the read runs first
        recorder.gate.set()
        eventually(lambda: answered == ["apply-under-test"], timeout=10)
    finally:
        worker.stop(5)


def test_without_inline_a_read_is_answered_on_the_worker() -> None:
    recorder = _Recorder()
    worker = _worker(recorder, inline=False)
    answered: list[str] = []
    try:
        worker.apply(_entries(1))
        eventually(lambda: worker.applied == 1, timeout=10)
        worker.read(1, lambda ok: answered.append(threading.current_thread().name))
        eventually(lambda: answered == ["apply-under-test"], timeout=10)
    finally:
        worker.stop(5)
