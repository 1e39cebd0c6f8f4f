"""The driver's disk thread: jobs in order off the loop, outcomes back on the loop in order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tsconsensus.raft.disk_worker import DiskWorker

DEADLINE_S = 10.0


@pytest.mark.parametrize("use_eventfd", [True, False])
def test_jobs_run_in_order_off_the_loop_and_outcomes_come_back_on_it(use_eventfd: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = DiskWorker(loop, "test-disk", use_eventfd=use_eventfd)
        worker.start()
        loop_thread = threading.get_ident()
        ran: list[int] = []
        back: list[tuple[int, object, str]] = []
        all_back = loop.create_future()

        def job(i: int) -> int:
            assert threading.get_ident() != loop_thread
            ran.append(i)
            if i == 3:
                raise OSError(f"job {i} failed")
            return i * 10

        def done(i: int, result: object, exc: BaseException | None) -> None:
            assert threading.get_ident() == loop_thread
            back.append((i, result, "" if exc is None else str(exc)))
            if len(back) == 6 and not all_back.done():
                all_back.set_result(None)

        for i in range(6):
            worker.submit(lambda i=i: job(i), lambda r, e, i=i: done(i, r, e))
        await asyncio.wait_for(all_back, DEADLINE_S)
        worker.stop()
        assert ran == list(range(6))
        assert back == [
            (0, 0, ""),
            (1, 10, ""),
            (2, 20, ""),
            (3, None, "job 3 failed"),
            (4, 40, ""),
            (5, 50, ""),
        ]

    asyncio.run(main())


def test_stop_finishes_queued_jobs_and_drops_outcomes_not_yet_handed_back() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = DiskWorker(loop, "test-disk")
        worker.start()
        release = threading.Event()
        ran: list[int] = []
        handed: list[int] = []

        def slow() -> None:
            assert release.wait(DEADLINE_S)
            ran.append(1)

        worker.submit(slow, lambda r, e: handed.append(1))
        worker.submit(lambda: ran.append(2), lambda r, e: handed.append(2))
        release.set()
        worker.stop()  # blocks the loop until both ran: their outcomes cannot come back now
        await asyncio.sleep(0)
        assert ran == [1, 2]
        assert handed == []
        worker.stop()  # twice is harmless

    asyncio.run(main())


def test_a_worker_never_started_stops_cleanly() -> None:
    async def main() -> None:
        DiskWorker(asyncio.get_running_loop(), "test-disk").stop()

    asyncio.run(main())


def test_a_failing_outcome_handler_does_not_hold_back_the_next_outcomes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = DiskWorker(loop, "test-disk")
        worker.start()
        handed: list[int] = []
        second = loop.create_future()

        def first_done(result: object, exc: BaseException | None) -> None:
            handed.append(1)
            raise RuntimeError("a bug in the first handler")

        def second_done(result: object, exc: BaseException | None) -> None:
            handed.append(2)
            second.set_result(None)

        release, queued = threading.Event(), threading.Event()
        worker.submit(lambda: release.wait(DEADLINE_S), first_done)
        worker.submit(lambda: None, second_done)
        worker.submit(queued.set)  # runs once both outcomes above wait for the loop
        release.set()
        assert queued.wait(DEADLINE_S)  # the loop is held here: one wake-up hands back both
        await asyncio.wait_for(second, DEADLINE_S)
        assert handed == [1, 2]
        worker.stop()

    asyncio.run(main())
