"""The driver's disk thread: jobs run in order off the loop, outcomes come back in one wake-up.

A write with fdatasync must not run on the node's loop (a slow disk would stall heartbeats),
so every persist crosses to this thread and back. The crossing is on the path of every
command, so it is kept small: jobs go through a ``SimpleQueue`` (no futures, no executor
bookkeeping), and outcomes come back through a :class:`LoopWaker`, every outcome ready at
that moment in the same wake-up. On a 2-vCPU VM a round trip measured about 55 µs this way
against about 95 µs through ``ThreadPoolExecutor.submit`` and ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .loop_waker import LoopWaker

log = logging.getLogger("tsconsensus.raft")

Job = Callable[[], Any]
Done = Callable[[Any, BaseException | None], object]


def _ignore(result: Any, exc: BaseException | None) -> None:
    if exc is not None:
        log.error("a disk job failed: %r", exc)


class DiskWorker:
    """One thread running jobs in submission order. Create, :meth:`start` and :meth:`submit`
    on ``loop``'s thread; ``done(result, exc)`` of each job runs there too, in the same order,
    unless the worker was stopped first (then outcomes not yet handed back are dropped: the
    driver is stopping and nobody waits for them). A ``done`` that raises is logged and the
    next outcomes are handed back all the same.

    The thread is a daemon: a process that exits without :meth:`stop` may cut a write short,
    which the WAL treats like a power loss (a torn last frame is dropped at recovery; nothing
    in it was acknowledged)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, name: str, *, use_eventfd: bool | None = None
    ) -> None:
        """``use_eventfd``: see :class:`LoopWaker` (default: where the platform has one)."""
        self._jobs: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()
        self._outcomes: collections.deque[tuple[Done, Any, BaseException | None]] = (
            collections.deque()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._waker = LoopWaker(loop, self._drain, use_eventfd=use_eventfd)
        self._stopped = False

    def start(self) -> None:
        self._waker.start()
        self._thread.start()

    def submit(self, job: Job, done: Done = _ignore) -> None:
        """Run ``job()`` on the disk thread after everything submitted before it."""
        self._jobs.put((job, done))

    def stop(self) -> None:
        """Finish the queued jobs and end the thread (blocks until it has)."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join()
        self._waker.close()  # only now: the thread wakes it no more

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, done = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = job()
            except BaseException as exc:  # the caller decides what a failure means
                error = exc
            self._outcomes.append((done, result, error))
            self._waker.wake()

    def _drain(self) -> None:
        """Loop: hand back every outcome ready now, in order."""
        outcomes = self._outcomes
        while outcomes and not self._stopped:
            done, result, error = outcomes.popleft()
            try:
                done(result, error)
            except Exception:  # the outcomes behind it must still be handed back
                log.exception("handling the outcome of a disk job failed")
