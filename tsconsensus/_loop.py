"""An asyncio event loop on a thread of its own: where a node's HTTP ports are served."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("tsconsensus")

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running on a thread of its own until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.is_current:
            coro.close()
            raise RuntimeError("blocking tsconsensus calls cannot run on the node's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class LoopMailbox:
    """Hands calls from other threads to one event loop, waking it once per burst.

    ``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call; a node that
    applies a batch of 50 commands would wake its loop 50 times. :meth:`post` queues the call
    and wakes the loop only when no drain is already pending. Any thread may post; the calls
    run on the loop, in the order posted.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[tuple[Callable[[Any], object], Any]] = deque()
        self._pending = False

    def post(self, fn: Callable[[Any], object], arg: Any) -> None:
        """Run ``fn(arg)`` on the loop soon. Raises RuntimeError if the loop is closed."""
        self._calls.append((fn, arg))
        # Under the GIL: if a drain is pending it has not yet emptied the queue past our
        # call (it clears the flag before draining), so it will run ours.
        if self._pending:
            return
        self._pending = True
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            here = False
        # from the loop itself, no self-pipe write is needed to wake it
        schedule = self._loop.call_soon if here else self._loop.call_soon_threadsafe
        try:
            schedule(self._drain)
        except RuntimeError:
            self._pending = False
            raise

    def _drain(self) -> None:
        self._pending = False
        calls = self._calls
        while calls:
            fn, arg = calls.popleft()
            try:
                fn(arg)
            except Exception:  # one failing call must not strand the others
                log.exception("a call handed to the loop failed")
