"""LoopWaker: a callback run on the loop after wakes from any thread, coalesced."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tsconsensus.raft.loop_waker import LoopWaker

DEADLINE_S = 10.0


@pytest.mark.parametrize("use_eventfd", [True, False])
def test_wakes_from_other_threads_run_the_callback_on_the_loop(use_eventfd: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        queued: list[int] = []
        taken: list[int] = []
        all_taken = loop.create_future()

        def take() -> None:
            assert threading.get_ident() == loop_thread
            while queued:
                taken.append(queued.pop(0))
            if len(taken) == 200 and not all_taken.done():
                all_taken.set_result(None)

        waker = LoopWaker(loop, take, use_eventfd=use_eventfd)
        waker.start()

        def producer(base: int) -> None:
            for i in range(100):
                queued.append(base + i)
                waker.wake()

        threads = [threading.Thread(target=producer, args=(b,)) for b in (0, 1000)]
        for t in threads:
            t.start()
        await asyncio.wait_for(all_taken, DEADLINE_S)  # nothing queued is left behind
        for t in threads:
            t.join(DEADLINE_S)
        assert sorted(taken) == [*range(100), *range(1000, 1100)]
        waker.close()

    asyncio.run(main())


def test_wakes_on_the_loop_before_start_and_after_close() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        runs: list[str] = []
        waker = LoopWaker(loop, lambda: runs.append("run"))
        # before start(): from another thread, through call_soon_threadsafe
        other = threading.Thread(target=waker.wake)
        other.start()
        other.join(DEADLINE_S)
        await asyncio.sleep(0.05)
        assert runs == ["run"]
        waker.start()
        waker.wake()
        waker.wake()  # folded into the pending one
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert runs == ["run", "run"]
        waker.close()
        waker.wake()
        closed_from_thread = threading.Thread(target=waker.wake)
        closed_from_thread.start()
        closed_from_thread.join(DEADLINE_S)
        await asyncio.sleep(0.05)
        assert runs == ["run", "run"]
        waker.close()  # twice is harmless

    asyncio.run(main())
