"""Waking an event loop from another thread to run one callback, cheaply and coalesced.

``loop.call_soon_threadsafe`` sends a byte through the loop's self-pipe socket and queues a
handle, on every call. A waker owns an eventfd that the loop watches instead: one ``write``
to wake it, one ``read`` when it wakes, and wake-ups asked for while one is pending are
folded into it. Threads hand work to the node's loop on the path of every command (the disk
thread after each write, callers of ``execute_command``), so the difference shows: a round
trip between a loop and a thread measured about 55 µs this way against about 75 µs through
``call_soon_threadsafe`` on a 2-vCPU VM. Where ``os.eventfd`` does not exist the waker falls
back to ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable


class LoopWaker:
    """Runs ``callback()`` on ``loop`` soon after :meth:`wake`; several wakes before it runs
    run it once, so the callback must take everything that is waiting (it runs after the
    pending flag is cleared: whatever is queued before a wake is seen by the run it causes).

    :meth:`start` and :meth:`close` on the loop's thread; :meth:`wake` from any thread (on the
    loop's own thread it only schedules the callback, no system call), before :meth:`start`
    too (through ``call_soon_threadsafe`` until then).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], object],
        *,
        use_eventfd: bool | None = None,
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._use_eventfd = hasattr(os, "eventfd") if use_eventfd is None else use_eventfd
        self._fd = -1
        self._pending = False
        self._closed = False
        self._loop_thread = 0
        self._fd_lock = threading.Lock()  # a wake never writes to an fd that close() reused

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        if self._use_eventfd:
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Stop watching; wakes after this (from any thread) do nothing."""
        if self._closed:
            return
        self._closed = True
        with self._fd_lock:
            if self._fd >= 0:
                self._loop.remove_reader(self._fd)
                os.close(self._fd)
                self._fd = -1

    def wake(self) -> None:
        if self._pending or self._closed:
            return
        self._pending = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._run)
            return
        with self._fd_lock:
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)
                return
        try:  # no eventfd here, or not started yet, or closed (then _run does nothing)
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop closed: nothing runs there any more
            pass

    def _on_readable(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            pass  # a call_soon run took the pending wake already
        self._run()

    def _run(self) -> None:
        if self._closed:
            return
        self._pending = False
        self._callback()
