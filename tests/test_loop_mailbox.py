"""LoopMailbox: calls from other threads reach the loop in order, with one wake-up per burst."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tsconsensus._loop import LoopMailbox, LoopThread

from .helpers import eventually


def test_every_call_from_many_threads_runs_once_in_order_per_thread() -> None:
    runner = LoopThread("mailbox-test")
    try:
        mailbox = LoopMailbox(runner.loop)
        seen: list[tuple[int, int]] = []  # appended on the loop thread only

        def post_many(t: int) -> None:
            for i in range(2000):
                mailbox.post(seen.append, (t, i))

        threads = [threading.Thread(target=post_many, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        eventually(lambda: len(seen) == 8000, what="all 8000 calls ran")
        for t in range(4):
            assert [i for (u, i) in seen if u == t] == list(range(2000))
    finally:
        runner.stop()


class _CountingLoop(asyncio.SelectorEventLoop):
    """Counts the thread-safe wake-ups asked of it."""

    wakeups = 0

    def call_soon_threadsafe(self, *args: Any, **kw: Any) -> asyncio.Handle:
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kw)


def test_a_burst_wakes_the_loop_once() -> None:
    loop = _CountingLoop()
    mailbox = LoopMailbox(loop)
    got: list[int] = []
    for i in range(100):
        mailbox.post(got.append, i)  # the loop is not running: one drain stays pending
    assert loop.wakeups == 1
    loop.run_until_complete(asyncio.sleep(0))
    assert got == list(range(100))
    mailbox.post(got.append, 100)  # drained: the next post wakes it again
    assert loop.wakeups == 2
    loop.close()


def test_a_failing_call_does_not_strand_the_rest() -> None:
    loop = asyncio.new_event_loop()
    mailbox = LoopMailbox(loop)
    got: list[int] = []

    def boom(_: object) -> None:
        raise ValueError("boom")

    mailbox.post(boom, None)
    mailbox.post(got.append, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert got == [1]
    loop.close()
    with pytest.raises(RuntimeError):
        LoopMailbox(loop).post(got.append, 2)  # a closed loop: the caller is told
