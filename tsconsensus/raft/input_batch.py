"""Inputs that arrive together make one Ready, processed as soon as they are all in.

The driver processes the core's output once per loop turn (``loop.call_soon``), so that
everything that arrived in one turn lands in one Ready. For inputs that come as a burst from
one place (the frames of one read from a connection, the commands of one drain of callers'
queue) waiting for the next turn buys no batching but costs a loop iteration (a ``select``
call and the loop's bookkeeping) on the path of every command. Inside an
:class:`InputBatch` the driver's kick is held; when the outermost batch ends, the held work
runs at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("tsconsensus.raft")


class InputBatch:
    """A reentrant context manager for one thread (the loop's). ``hold()`` inside it asks for
    ``process`` to run when the outermost ``with`` ends (once, however many asked); outside
    any batch ``hold()`` returns False and the caller schedules the work as usual.

    ``process`` must not raise; if it does, the error is logged here rather than charged to
    whatever delivered the inputs (a connection that did nothing wrong).
    """

    __slots__ = ("_depth", "_held", "_process")

    def __init__(self, process: Callable[[], None]) -> None:
        self._process = process
        self._depth = 0
        self._held = False

    def hold(self) -> bool:
        """Inside a batch: note that work waits and return True."""
        if self._depth:
            self._held = True
            return True
        return False

    def __enter__(self) -> None:
        self._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._held:
            self._held = False
            try:
                self._process()
            except Exception:
                log.exception("processing the core's output after a batch of inputs failed")
